// The dashboard's live view: one WebSocket to /ws/market/, snapshots merged into instrument cards,
// a small canvas line chart per instrument, the feed's status with a banner when it is not well,
// and (auction.js, strategies.js) the auction panels and the strategies panel fed by the same
// socket's `auction.state` and `strategy.update` messages. It only displays what the server sends;
// it never computes trading state. No build step: ES modules served as is.

import { AuctionPanel } from "./auction.js";
import { StrategiesPanel } from "./strategies.js";

const script = document.getElementById("dashboard-script");
const WS_PATH = script.dataset.wsPath;
const LOGIN_URL = script.dataset.loginUrl;
const CONNECT_URL = script.dataset.connectUrl;
const AUCTION_URLS = { history: script.dataset.historyUrl, composite: script.dataset.compositeUrl };
const STALE_MS = 10_000; // no message from the feed for this long: say so
const MAX_POINTS = 5_000; // per chart; beyond it the line is thinned, never cut
const MAX_BACKOFF_MS = 15_000;

const priceFormat = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const wholeFormat = new Intl.NumberFormat("en-IN", { maximumFractionDigits: 0 });
const rateFormat = new Intl.NumberFormat("en-IN", { maximumFractionDigits: 1 });
const clockFormat = new Intl.DateTimeFormat("en-IN", {
  timeZone: "Asia/Kolkata", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const shortClockFormat = new Intl.DateTimeFormat("en-IN", {
  timeZone: "Asia/Kolkata", hour: "2-digit", minute: "2-digit", hour12: false,
});

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
const fmtPrice = (v) => (isNumber(v) ? priceFormat.format(v) : "—");
const fmtWhole = (v) => (isNumber(v) ? wholeFormat.format(v) : "—");
const signed = (v, text) => (v > 0 ? "+" : v < 0 ? "−" : "") + text;

function fmtAge(ms) {
  if (!isNumber(ms)) return "—";
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${s.toFixed(1)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s ago`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// --- Chart -------------------------------------------------------------------------------------

// A round grid step (1, 2, 2.5 or 5 times a power of ten) giving about `count` lines over `range`.
function niceStep(range, count) {
  const raw = range / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5]) {
    if (raw <= m * magnitude) return m * magnitude;
  }
  return 10 * magnitude;
}

class LineChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.times = [];
    this.values = [];
    this.reference = null; // previous close, drawn dashed when in range
    this.minGapMs = 0; // set once the line has been thinned
    this.pending = false;
    new ResizeObserver(() => this.schedule()).observe(canvas);
  }

  add(timeMs, value) {
    const n = this.times.length;
    if (n && timeMs < this.times[n - 1]) return; // out of order: the chart only moves forward
    if (n && timeMs === this.times[n - 1]) {
      this.values[n - 1] = value; // same tick, corrected price
    } else if (n >= 2 && timeMs - this.times[n - 2] < this.minGapMs) {
      // Thinned chart: the newest point moves along until it is a full gap from its neighbour,
      // so the line keeps one resolution over the session and always ends at the current price.
      this.times[n - 1] = timeMs;
      this.values[n - 1] = value;
    } else {
      this.times.push(timeMs);
      this.values.push(value);
      if (this.times.length > MAX_POINTS) this.thin();
    }
    this.schedule();
  }

  // Over budget: keep every other point (and the last), so the chart still spans the whole
  // session at half the resolution instead of forgetting the morning.
  thin() {
    const last = this.times.length - 1;
    const keep = (_, i) => i % 2 === 0 || i === last;
    this.times = this.times.filter(keep);
    this.values = this.values.filter(keep);
    this.minGapMs = (this.times[this.times.length - 1] - this.times[0]) / (this.times.length - 1);
  }

  // The session so far (from the server's tick streams), then any points this page already had.
  seed(series) {
    const times = series.map((point) => point[0]);
    const values = series.map((point) => point[1]);
    const lastSeeded = times.length ? times[times.length - 1] : -Infinity;
    this.times.forEach((t, i) => {
      if (t > lastSeeded) {
        times.push(t);
        values.push(this.values[i]);
      }
    });
    this.times = times;
    this.values = values;
    while (this.times.length > MAX_POINTS) this.thin();
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const { canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.dataset.points = String(this.values.length);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const muted = cssVar("--muted");
    const line = cssVar("--line");
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = muted;
    if (this.values.length === 0) {
      ctx.textAlign = "center";
      ctx.fillText("Waiting for prices…", width / 2, height / 2);
      return;
    }

    const axisW = 74;
    const axisH = 18;
    const plotW = width - axisW;
    const plotH = height - axisH - 6;
    let lo = Math.min(...this.values);
    let hi = Math.max(...this.values);
    if (this.reference !== null && this.reference >= lo - (hi - lo) * 0.5 && this.reference <= hi + (hi - lo) * 0.5) {
      lo = Math.min(lo, this.reference);
      hi = Math.max(hi, this.reference);
    }
    if (hi - lo < 0.1) {
      hi += 0.5;
      lo -= 0.5;
    }
    const pad = (hi - lo) * 0.08;
    lo -= pad;
    hi += pad;
    const t0 = this.times[0];
    const t1 = Math.max(this.times[this.times.length - 1], t0 + 1);
    const x = (t) => ((t - t0) / (t1 - t0)) * plotW;
    const y = (v) => 6 + (1 - (v - lo) / (hi - lo)) * plotH;

    // Horizontal grid at round price levels, labelled on the right.
    ctx.strokeStyle = line;
    ctx.lineWidth = 1;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    const step = niceStep(hi - lo, 4);
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, yy);
      ctx.lineTo(plotW, yy);
      ctx.stroke();
      ctx.fillText(priceFormat.format(v), plotW + 6, yy);
    }
    // Time labels: first and last point, IST; seconds only while the span is short.
    const timeFormat = t1 - t0 < 10 * 60_000 ? clockFormat : shortClockFormat;
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left";
    ctx.fillText(timeFormat.format(new Date(t0)), 0, height);
    ctx.textAlign = "right";
    ctx.fillText(timeFormat.format(new Date(t1)), plotW, height);

    if (this.reference !== null && this.reference > lo && this.reference < hi) {
      ctx.save();
      ctx.setLineDash([4, 4]);
      ctx.strokeStyle = muted;
      ctx.beginPath();
      ctx.moveTo(0, y(this.reference));
      ctx.lineTo(plotW, y(this.reference));
      ctx.stroke();
      ctx.restore();
    }

    const stroke = cssVar("--chart-line");
    ctx.beginPath();
    this.values.forEach((v, i) => {
      const px = this.times.length === 1 ? plotW : x(this.times[i]);
      if (i === 0) ctx.moveTo(px, y(v));
      else ctx.lineTo(px, y(v));
    });
    ctx.strokeStyle = stroke;
    ctx.lineWidth = 1.6;
    ctx.lineJoin = "round";
    ctx.stroke();
    if (this.values.length > 1) {
      ctx.lineTo(plotW, 6 + plotH);
      ctx.lineTo(0, 6 + plotH);
      ctx.closePath();
      ctx.fillStyle = cssVar("--chart-fill");
      ctx.fill();
    }
    const lastX = this.times.length === 1 ? plotW : x(this.times[this.times.length - 1]);
    const lastY = y(this.values[this.values.length - 1]);
    ctx.beginPath();
    ctx.arc(lastX, lastY, 3, 0, Math.PI * 2);
    ctx.fillStyle = stroke;
    ctx.fill();
  }
}

// --- Instrument cards --------------------------------------------------------------------------

const container = document.getElementById("instruments");
const cardTemplate = document.getElementById("instrument-card");
const cards = new Map();

function makeCard(el) {
  const fields = {};
  el.querySelectorAll("[data-field]").forEach((node) => {
    fields[node.dataset.field] = node;
  });
  return { el, fields, data: {}, chart: new LineChart(el.querySelector("canvas[data-chart]")) };
}

document.querySelectorAll("#instruments [data-instrument]").forEach((el) => {
  cards.set(el.dataset.instrument, makeCard(el));
});

function cardFor(key, name) {
  let card = cards.get(key);
  if (!card) {
    // An instrument the feed added (a near-month future): a new card after the watchlist.
    const el = cardTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.instrument = key;
    el.querySelector(".instrument__key").textContent = key;
    el.querySelector('[data-field="name"]').textContent = name || key;
    el.querySelector("canvas").setAttribute("aria-label", `Price chart for ${name || key}`);
    container.append(el);
    card = makeCard(el);
    cards.set(key, card);
  }
  return card;
}

function renderCard(card, update) {
  const previousLtp = card.data.ltp;
  Object.assign(card.data, update);
  const d = card.data;
  const f = card.fields;
  if (d.name) f.name.textContent = d.name;
  f.ltp.textContent = fmtPrice(d.ltp);
  let change = d.change;
  let changePct = d.change_pct;
  if (!isNumber(change) && isNumber(d.ltp) && isNumber(d.prev_close) && d.prev_close) {
    change = d.ltp - d.prev_close;
    changePct = (change / d.prev_close) * 100;
  }
  if (isNumber(change)) {
    const pct = isNumber(changePct) ? ` (${signed(changePct, priceFormat.format(Math.abs(changePct)))}%)` : "";
    f.change.textContent = signed(change, priceFormat.format(Math.abs(change))) + pct;
    f.change.classList.toggle("up", change > 0);
    f.change.classList.toggle("down", change < 0);
  }
  f.prev_close.textContent = fmtPrice(d.prev_close);
  f.open.textContent = fmtPrice(d.open);
  f.high.textContent = fmtPrice(d.high);
  f.low.textContent = fmtPrice(d.low);
  for (const name of ["volume", "oi"]) {
    const show = isNumber(d[name]) && d[name] > 0;
    f[name].parentElement.hidden = !show;
    if (show) f[name].textContent = fmtWhole(d[name]);
  }
  if (isNumber(d.ts_ms)) f.ts.textContent = `${clockFormat.format(new Date(d.ts_ms))} IST`;
  if (isNumber(update.ltp) && isNumber(previousLtp) && update.ltp !== previousLtp) {
    const cls = update.ltp > previousLtp ? "flash-up" : "flash-down";
    f.ltp.classList.remove("flash-up", "flash-down");
    f.ltp.classList.add(cls);
    setTimeout(() => f.ltp.classList.remove(cls), 180);
  }
  if (isNumber(d.prev_close)) card.chart.reference = d.prev_close;
}

// --- Feed status and banner ------------------------------------------------------------------

const ui = {
  socket: document.getElementById("socket-state"),
  connected: document.getElementById("feed-connected"),
  source: document.getElementById("feed-source"),
  session: document.getElementById("feed-session"),
  rate: document.getElementById("feed-rate"),
  age: document.getElementById("feed-age"),
  banner: document.getElementById("banner"),
};

const state = {
  feed: null,
  socketOpen: false,
  openedAt: 0,
  lastMessageAt: 0,
  lastTickSeenAt: 0,
  retryAt: 0,
  sessionEnded: false,
};

function setPill(el, text, level) {
  el.textContent = text;
  el.classList.remove("pill--ok", "pill--warn", "pill--bad");
  if (level) el.classList.add(`pill--${level}`);
}

function renderFeed() {
  const feed = state.feed;
  if (!feed) return;
  // The feed's own link to its source (Upstox socket, simulator), not this page's socket.
  setPill(ui.connected, feed.connected ? "connected" : "not connected", feed.connected ? "ok" : "bad");
  ui.source.textContent = feed.source || "—";
  ui.session.textContent = (feed.session_state || "—").replace("_", "-");
  ui.rate.textContent = isNumber(feed.ticks_per_s) ? rateFormat.format(feed.ticks_per_s) : "—";
}

function bannerText() {
  const now = Date.now();
  if (state.sessionEnded) return ["bad", "Your session has ended. Log in again to see live prices.", true];
  if (!state.socketOpen) {
    const wait = Math.max(0, Math.ceil((state.retryAt - now) / 1000));
    return ["bad", `Disconnected from the server: prices are not updating. Reconnecting${wait ? ` in ${wait} s` : "…"}`];
  }
  const feed = state.feed;
  // A rejected or missing Upstox token: say so and link to where a staff user reconnects.
  if (feed && feed.alert && /token/i.test(feed.alert)) return ["bad", `Feed alert: ${feed.alert}`, false, true];
  if (feed && feed.alert) return ["bad", `Feed alert: ${feed.alert}`];
  // The feed sends a full snapshot at least every few seconds, market open or not: silence means
  // the feed (or the path from it) is stuck or gone.
  if (!state.lastMessageAt && now - state.openedAt > STALE_MS) {
    return ["warn", "No market data yet: is the feed running?"];
  }
  if (state.lastMessageAt && now - state.lastMessageAt > STALE_MS) {
    return ["warn", `Feed stale: no update from the feed for ${Math.round((now - state.lastMessageAt) / 1000)} s.`];
  }
  if (feed && feed.connected === false) return ["warn", `The feed is not connected to its source (${feed.source || "unknown"}).`];
  return null;
}

function renderBanner() {
  const banner = bannerText();
  if (!banner) {
    ui.banner.hidden = true;
    ui.banner.textContent = "";
    return;
  }
  const [level, text, withLogin, withConnect] = banner;
  ui.banner.hidden = false;
  ui.banner.dataset.level = level;
  if (ui.banner.dataset.text !== text) {
    ui.banner.dataset.text = text;
    ui.banner.textContent = text + " ";
    if (withLogin) {
      const a = document.createElement("a");
      a.href = `${LOGIN_URL}?next=${encodeURIComponent(location.pathname)}`;
      a.textContent = "Log in";
      ui.banner.append(a);
    }
    if (withConnect && CONNECT_URL) {
      const a = document.createElement("a");
      a.href = CONNECT_URL;
      a.textContent = "Connect Upstox";
      ui.banner.append(a);
    }
  }
}

function tick() {
  const feed = state.feed;
  ui.age.textContent = feed && state.lastTickSeenAt ? fmtAge(Date.now() - state.lastTickSeenAt) : "—";
  renderBanner();
}

// --- Socket ------------------------------------------------------------------------------------

let attempts = 0;

function applySnapshot(message) {
  state.lastMessageAt = Date.now();
  const instruments = message.instruments || {};
  for (const [key, update] of Object.entries(instruments)) {
    const card = cardFor(key, update.name);
    renderCard(card, update);
    const t = isNumber(update.ts_ms) ? update.ts_ms : message.ts_ms;
    if (isNumber(update.ltp) && isNumber(t)) card.chart.add(t, update.ltp);
  }
  if (message.feed) {
    notePossibleTick(message);
    state.feed = { ...(state.feed || {}), ...message.feed };
    renderFeed();
  }
  tick();
}

function applyHistory(message) {
  for (const [key, series] of Object.entries(message.series || {})) {
    cardFor(key).chart.seed(series);
  }
}

// The last tick's age is measured on this page's clock from when the feed's last_tick_ms moved,
// not as Date.now() - last_tick_ms: exchange time is simulated or replayed time under those
// sources, and the browser's clock may be off. A page that connects mid-silence starts from the
// feed's own reckoning (its send time minus the tick time), when that is plausible.
function notePossibleTick(message) {
  const lastTick = message.feed.last_tick_ms;
  if (!isNumber(lastTick) || (state.feed && state.feed.last_tick_ms === lastTick)) return;
  const now = Date.now();
  const feedAge = isNumber(message.ts_ms) ? message.ts_ms - lastTick : NaN;
  const firstSight = !state.feed || !isNumber(state.feed.last_tick_ms);
  state.lastTickSeenAt = firstSight && feedAge >= 0 && feedAge < 86_400_000 ? now - feedAge : now;
}

async function checkSession() {
  // A refused WebSocket handshake looks like any other failure to the browser; ask over HTTP.
  try {
    const response = await fetch(location.pathname, { redirect: "manual", credentials: "same-origin" });
    if (response.type === "opaqueredirect" || response.status === 401 || response.status === 403) {
      state.sessionEnded = true;
    }
  } catch {
    // The server is down; keep retrying.
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${WS_PATH}`);
  let opened = false;
  setPill(ui.socket, "connecting", "warn");
  ui.socket.dataset.state = "connecting";
  socket.addEventListener("open", () => {
    opened = true;
    attempts = 0;
    state.socketOpen = true;
    state.openedAt = Date.now();
    setPill(ui.socket, "live", "ok");
    ui.socket.dataset.state = "live";
    tick();
  });
  socket.addEventListener("message", (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "market.snapshot") applySnapshot(message);
    else if (message.type === "market.history") applyHistory(message);
    else if (message.type === "auction.state") applyAuction(message);
    else if (message.type === "strategy.update") strategies.apply(message);
  });
  socket.addEventListener("close", async (event) => {
    state.socketOpen = false;
    setPill(ui.socket, "disconnected", "bad");
    ui.socket.dataset.state = "disconnected";
    if (event.code === 4401 || !opened) await checkSession();
    if (state.sessionEnded) {
      tick();
      return;
    }
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempts) * (0.75 + Math.random() * 0.5);
    attempts += 1;
    state.retryAt = Date.now() + delay;
    tick();
    setTimeout(connect, delay);
  });
}

// --- Auction panels and strategies ------------------------------------------------------------

const auctionPanels = new Map();
document.querySelectorAll("#auctions [data-auction]").forEach((el) => {
  auctionPanels.set(el.dataset.auction, new AuctionPanel(el, AUCTION_URLS));
});
const strategies = new StrategiesPanel(auctionPanels);

function applyAuction(message) {
  const panel = auctionPanels.get(message.instrument_key);
  if (panel) panel.applyLive(message);
}

// Charts read their colours from CSS variables: redraw when the light/dark scheme changes.
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  for (const card of cards.values()) card.chart.schedule();
  for (const panel of auctionPanels.values()) panel.redraw();
});

setInterval(tick, 250);
connect();

export { LineChart, MAX_POINTS };
