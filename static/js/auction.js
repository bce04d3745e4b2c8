// The dashboard's auction panels: for each watched index, the TPO chart by period letters with its
// volume profile (one canvas, so rows line up), the auction labels, and 1-minute candles with the
// auction's levels as price lines (TradingView lightweight-charts, the vendored global
// `LightweightCharts`). It draws what the server sends (`auction.state`, history, composites) and
// never computes market state: the rows are laid out from the engine's periods, and what was drawn
// is written back as data attributes (rows, POC, value area) so tests can compare it with the engine.

const IST_OFFSET_S = 19_800; // the candle chart's axis reads IST: times are shifted by +05:30
const MAX_PROFILE_HEIGHT = 620;
const MIN_ROW_PX = 3;
const MAX_ROW_PX = 16;
const LETTER_PX = 10;

const priceFormat = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const wholeFormat = new Intl.NumberFormat("en-IN", { maximumFractionDigits: 0 });
const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
const fmt = (v) => (isNumber(v) ? priceFormat.format(v) : "—");

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

const LABEL_TEXT = {
  open_location: {
    above_range: "above range", above_value: "above value", in_value: "in value",
    below_value: "below value", below_range: "below range",
  },
};

function humanise(kind, value) {
  if (value === null || value === undefined || value === "") return "—";
  const known = LABEL_TEXT[kind] && LABEL_TEXT[kind][value];
  return known || String(value).replaceAll("_", " ");
}

// --- Profile layout ----------------------------------------------------------------------------

// Rows on the engine's absolute grid: row r holds prices [r*rowSize, (r+1)*rowSize).
function grid(message) {
  const tpu = Math.round(1 / message.tick_size);
  const tpr = Math.round(message.state.row_size * tpu);
  const rowOf = (price) => Math.floor(Math.round(price * tpu) / tpr);
  const labelOf = (row) => Math.round(row * tpr) / tpu;
  return { rowOf, labelOf };
}

// Letters per row from the periods ([letter, low, high]) and counts/volume by row, high to low.
export function layoutProfile(message) {
  const state = message.state;
  const { rowOf, labelOf } = grid(message);
  const letters = new Map();
  let lo = Infinity;
  let hi = -Infinity;
  for (const [letter, low, high] of state.periods || []) {
    const a = rowOf(low);
    const b = rowOf(high);
    for (let r = a; r <= b; r += 1) {
      if (!letters.has(r)) letters.set(r, []);
      letters.get(r).push(letter);
    }
    lo = Math.min(lo, a);
    hi = Math.max(hi, b);
  }
  const counts = new Map();
  for (const [label, n] of Object.entries(state.tpo_counts || {})) {
    const r = rowOf(Number(label));
    counts.set(r, n);
    lo = Math.min(lo, r);
    hi = Math.max(hi, r);
  }
  const volume = new Map();
  for (const [label, q] of Object.entries(state.volume_by_row || {})) volume.set(rowOf(Number(label)), q);
  const rows = [];
  if (lo <= hi) {
    for (let r = hi; r >= lo; r -= 1) {
      rows.push({ row: r, label: labelOf(r), letters: letters.get(r) || [], count: counts.get(r) ?? (letters.get(r) || []).length, volume: volume.get(r) || 0 });
    }
  }
  const rowIs = (price) => (isNumber(price) ? rowOf(price) : null);
  const singles = new Set();
  for (const [a, b] of state.single_prints || []) {
    for (let r = rowOf(a); r <= rowOf(b); r += 1) singles.add(r);
  }
  return {
    rows,
    poc: rowIs(state.poc),
    vah: rowIs(state.vah),
    val: rowIs(state.val),
    ibh: rowIs(state.ibh),
    ibl: rowIs(state.ibl),
    open: rowIs(state.open),
    last: rowIs(state.close),
    vpoc: rowIs(state.volume_poc),
    priorPoc: state.prior ? rowIs(state.prior.poc) : null,
    singles,
    maxLetters: Math.max(0, ...rows.map((r) => r.letters.length)),
    maxVolume: Math.max(0, ...rows.map((r) => r.volume)),
  };
}

// --- Profile drawing ---------------------------------------------------------------------------

export class ProfileChart {
  constructor(figure) {
    this.figure = figure;
    this.canvas = figure.querySelector("canvas");
    this.message = null;
    this.composite = null;
    this.pending = false;
    new ResizeObserver(() => this.schedule()).observe(figure);
  }

  show(message) {
    this.message = message;
    this.composite = null;
    this.schedule();
  }

  showComposite(composite) {
    this.composite = composite;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (this.composite) this.drawComposite();
      else if (this.message) this.draw();
    });
  }

  // Canvas sized to the rows (a row is 3-16 px); returns the 2D context in CSS pixels.
  prepare(rowCount, rowPx) {
    const { canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = this.figure.clientWidth || 420;
    const height = Math.max(120, rowCount * rowPx + 28);
    canvas.style.height = `${height}px`;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    return { ctx, width, height };
  }

  draw() {
    const started = performance.now();
    const layout = layoutProfile(this.message);
    const { rows } = layout;
    const fig = this.figure;
    const rowPx = Math.max(MIN_ROW_PX, Math.min(MAX_ROW_PX, Math.floor((MAX_PROFILE_HEIGHT - 28) / Math.max(rows.length, 1))));
    const { ctx, width } = this.prepare(rows.length, rowPx);
    const ink = cssVar("--ink");
    const muted = cssVar("--muted");
    const top = 8;
    const axisW = 66;
    const ibX = axisW + 6;
    const lettersX = axisW + 16;
    const letterW = rowPx >= 9 ? LETTER_PX : Math.max(3, Math.min(LETTER_PX, rowPx + 2));
    const lettersW = Math.max(layout.maxLetters, 1) * letterW;
    const volX = lettersX + lettersW + 24;
    const volW = Math.max(40, width - volX - 8);
    const y = (i) => top + i * rowPx;
    const indexOf = new Map(rows.map((r, i) => [r.row, i]));

    // Value area band and POC row behind the letters (and the volume bars).
    let vaRows = 0;
    rows.forEach((r, i) => {
      const inVa = layout.val !== null && layout.vah !== null && r.row >= layout.val && r.row <= layout.vah;
      if (inVa) {
        vaRows += 1;
        ctx.fillStyle = cssVar("--va-fill");
        ctx.fillRect(lettersX - 2, y(i), lettersW + 4, rowPx);
      }
      if (r.row === layout.poc) {
        ctx.fillStyle = cssVar("--poc-fill");
        ctx.fillRect(axisW, y(i), lettersX - axisW + lettersW + 4, rowPx);
      }
    });

    // Price axis: every row when they are tall enough, else round steps.
    ctx.font = `${Math.min(11, Math.max(9, rowPx - 2))}px system-ui, sans-serif`;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    const every = rowPx >= 12 ? 1 : Math.ceil(12 / rowPx);
    rows.forEach((r, i) => {
      const nearPoc = layout.poc !== null && r.row !== layout.poc && Math.abs(r.row - layout.poc) < every;
      if ((r.row % every !== 0 || nearPoc) && r.row !== layout.poc) return;
      ctx.fillStyle = r.row === layout.poc ? ink : muted;
      ctx.fillText(priceFormat.format(r.label), axisW - 6, y(i) + rowPx / 2);
    });

    // Letters (or coloured blocks when rows are too thin to read), single prints in their colour.
    const single = cssVar("--single");
    ctx.textAlign = "left";
    ctx.font = `600 ${Math.min(13, rowPx - 1)}px ui-monospace, SFMono-Regular, Menlo, monospace`;
    rows.forEach((r, i) => {
      const isSingle = layout.singles.has(r.row);
      r.letters.forEach((letter, j) => {
        const x = lettersX + j * letterW;
        if (rowPx >= 9) {
          ctx.fillStyle = isSingle ? single : r.row === layout.poc ? ink : periodColour(letter);
          ctx.fillText(letter, x, y(i) + rowPx / 2 + 0.5);
        } else {
          ctx.fillStyle = isSingle ? single : periodColour(letter);
          ctx.fillRect(x, y(i) + 0.5, letterW - 1, Math.max(1, rowPx - 1));
        }
      });
      if (isSingle) {
        ctx.fillStyle = single;
        ctx.fillRect(lettersX + lettersW + 6, y(i), 3, rowPx);
      }
    });

    // Initial balance bracket on the left of the letters.
    if (layout.ibh !== null && layout.ibl !== null && indexOf.has(layout.ibh) && indexOf.has(layout.ibl)) {
      const a = y(indexOf.get(layout.ibh));
      const b = y(indexOf.get(layout.ibl)) + rowPx;
      ctx.strokeStyle = cssVar("--ib");
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(ibX + 4, a);
      ctx.lineTo(ibX, a);
      ctx.lineTo(ibX, b);
      ctx.lineTo(ibX + 4, b);
      ctx.stroke();
    }
    // The open (a dash before the first letter) and the last price (a triangle after the letters).
    if (layout.open !== null && indexOf.has(layout.open)) {
      ctx.fillStyle = ink;
      ctx.fillRect(lettersX - 6, y(indexOf.get(layout.open)) + rowPx / 2 - 1, 4, 2);
    }
    if (layout.last !== null && indexOf.has(layout.last) && !this.message.state.day_type_final) {
      const yy = y(indexOf.get(layout.last)) + rowPx / 2;
      ctx.fillStyle = cssVar("--accent");
      ctx.beginPath();
      ctx.moveTo(lettersX + lettersW + 12, yy);
      ctx.lineTo(lettersX + lettersW + 18, yy - 4);
      ctx.lineTo(lettersX + lettersW + 18, yy + 4);
      ctx.fill();
    }
    // Yesterday's POC, dotted across the letters.
    if (layout.priorPoc !== null && indexOf.has(layout.priorPoc)) {
      const yy = y(indexOf.get(layout.priorPoc)) + rowPx / 2;
      ctx.save();
      ctx.setLineDash([2, 3]);
      ctx.strokeStyle = muted;
      ctx.beginPath();
      ctx.moveTo(lettersX, yy);
      ctx.lineTo(lettersX + lettersW, yy);
      ctx.stroke();
      ctx.restore();
    }

    // Volume profile beside it, on the same rows.
    if (layout.maxVolume > 0) {
      const bar = cssVar("--volume");
      rows.forEach((r, i) => {
        if (!r.volume) return;
        ctx.fillStyle = r.row === layout.vpoc ? cssVar("--poc-line") : bar;
        ctx.fillRect(volX, y(i) + (rowPx > 4 ? 1 : 0), (r.volume / layout.maxVolume) * volW, Math.max(1, rowPx - (rowPx > 4 ? 2 : 0)));
      });
      ctx.fillStyle = muted;
      ctx.font = "10px system-ui, sans-serif";
      ctx.textBaseline = "top";
      ctx.fillText(`volume (${this.message.volume_source || "—"}) · max ${wholeFormat.format(layout.maxVolume)}`, volX, y(rows.length) + 6);
    }
    ctx.fillStyle = muted;
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.fillText(`${this.message.state.row_size}-pt rows`, 4, y(rows.length) + 6);

    // What was drawn, for tests and assistive tools.
    const state = this.message.state;
    fig.dataset.session = state.date || "";
    fig.dataset.rows = String(rows.length);
    fig.dataset.poc = isNumber(state.poc) ? String(state.poc) : "";
    fig.dataset.pocRowDrawn = layout.poc !== null && indexOf.has(layout.poc) ? String(rows[indexOf.get(layout.poc)].label) : "";
    fig.dataset.vah = isNumber(state.vah) ? String(state.vah) : "";
    fig.dataset.val = isNumber(state.val) ? String(state.val) : "";
    fig.dataset.vaRows = String(vaRows);
    fig.dataset.periods = String((state.periods || []).length);
    fig.dataset.letters = String(rows.reduce((n, r) => n + r.letters.length, 0));
    fig.dataset.singleRows = String(layout.singles.size);
    fig.dataset.volumeRows = String(rows.filter((r) => r.volume > 0).length);
    fig.dataset.kind = "session";
    fig.dataset.drawMs = (performance.now() - started).toFixed(1);
  }

  drawComposite() {
    const c = this.composite;
    const labels = Object.keys(c.tpo_counts).map(Number).sort((a, b) => b - a);
    const rowPx = Math.max(MIN_ROW_PX, Math.min(MAX_ROW_PX, Math.floor((MAX_PROFILE_HEIGHT - 28) / Math.max(labels.length, 1))));
    const { ctx, width } = this.prepare(labels.length, rowPx);
    const axisW = 66;
    const x0 = axisW + 8;
    const w = width - x0 - 8;
    const max = Math.max(1, ...Object.values(c.tpo_counts));
    const muted = cssVar("--muted");
    let vaRows = 0;
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    labels.forEach((label, i) => {
      const y = 8 + i * rowPx;
      const inVa = isNumber(c.val) && isNumber(c.vah) && label >= c.val && label <= c.vah;
      if (inVa) vaRows += 1;
      ctx.fillStyle = label === c.poc ? cssVar("--poc-line") : inVa ? cssVar("--accent") : cssVar("--volume");
      ctx.fillRect(x0, y + (rowPx > 4 ? 1 : 0), (c.tpo_counts[String(label)] ?? c.tpo_counts[label] ?? 0) / max * w, Math.max(1, rowPx - (rowPx > 4 ? 2 : 0)));
      if (rowPx >= 12 || label === c.poc || i % Math.ceil(12 / rowPx) === 0) {
        ctx.fillStyle = muted;
        ctx.textAlign = "right";
        ctx.fillText(priceFormat.format(label), axisW, y + rowPx / 2);
      }
    });
    const fig = this.figure;
    fig.dataset.kind = "composite";
    fig.dataset.rows = String(labels.length);
    fig.dataset.poc = isNumber(c.poc) ? String(c.poc) : "";
    fig.dataset.vah = isNumber(c.vah) ? String(c.vah) : "";
    fig.dataset.val = isNumber(c.val) ? String(c.val) : "";
    fig.dataset.vaRows = String(vaRows);
    fig.dataset.session = (c.sessions || []).join(",");
  }
}

// Letters cycle through a few hues so periods are told apart at a glance (as on most desks).
const PERIOD_HUES = [210, 160, 30, 280, 0, 110, 190, 330, 50, 240, 140, 10, 260];
function periodColour(letter) {
  const code = letter.charCodeAt(0);
  const index = code >= 97 ? code - 97 + 26 : code - 65;
  const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
  return `hsl(${PERIOD_HUES[index % PERIOD_HUES.length]} 55% ${dark ? 68 : 38}%)`;
}

// --- Candles with the auction's levels --------------------------------------------------------

export class CandleChart {
  constructor(el) {
    this.el = el;
    this.chart = null;
    this.series = null;
    this.markersPlugin = null;
    this.lines = [];
    this.markers = new Map(); // id -> marker
    this.barTimes = new Set();
    this.scaleLevels = [];
    this.fitted = false;
  }

  ensure() {
    if (this.chart || !window.LightweightCharts) return Boolean(this.chart);
    const LC = window.LightweightCharts;
    this.chart = LC.createChart(this.el, {
      autoSize: true,
      layout: { background: { color: "transparent" }, textColor: cssVar("--muted"), fontSize: 11 },
      grid: { vertLines: { color: cssVar("--line") }, horzLines: { color: cssVar("--line") } },
      rightPriceScale: { borderColor: cssVar("--line") },
      timeScale: { borderColor: cssVar("--line"), timeVisible: true, secondsVisible: false, maxBarSpacing: 14 },
      crosshair: { mode: 0 },
    });
    this.series = this.chart.addSeries(LC.CandlestickSeries, {
      upColor: cssVar("--up"), downColor: cssVar("--down"), borderVisible: false,
      wickUpColor: cssVar("--up"), wickDownColor: cssVar("--down"),
      priceFormat: { type: "price", precision: 2, minMove: 0.05 },
      // The price scale also spans the auction's reference levels (value, IB, yesterday's),
      // so they are on screen; far extension targets and naked POCs are not forced in.
      autoscaleInfoProvider: (original) => {
        const res = original();
        if (!res || !res.priceRange || !this.scaleLevels.length) return res;
        const range = res.priceRange;
        return {
          ...res,
          priceRange: {
            minValue: Math.min(range.minValue, ...this.scaleLevels),
            maxValue: Math.max(range.maxValue, ...this.scaleLevels),
          },
        };
      },
    });
    this.markersPlugin = LC.createSeriesMarkers(this.series, []);
    for (const type of ["wheel", "pointerdown"]) {
      this.el.addEventListener(type, () => { this.userMoved = true; }, { passive: true });
    }
    return true;
  }

  setCandles(candles, refit = false) {
    if (!this.ensure()) return;
    if (refit) {
      this.fitted = false;
      this.userMoved = false;
    }
    const data = candles.map(([t, o, h, l, c]) => ({ time: t / 1000 + IST_OFFSET_S, open: o, high: h, low: l, close: c }));
    this.series.setData(data);
    if ((!this.fitted || !this.userMoved) && data.length) {
      // The whole session in view (after layout: autoSize measures the element first), until
      // the user scrolls or zooms the chart themselves.
      this.fitted = true;
      requestAnimationFrame(() => this.chart.timeScale().fitContent());
    }
    this.barTimes = new Set(data.map((d) => d.time));
    this.el.dataset.bars = String(data.length);
    this.applyMarkers();
  }

  // Colours come from CSS variables: re-read them when the light/dark scheme changes.
  restyle() {
    if (!this.chart) return;
    this.chart.applyOptions({
      layout: { textColor: cssVar("--muted") },
      grid: { vertLines: { color: cssVar("--line") }, horzLines: { color: cssVar("--line") } },
      rightPriceScale: { borderColor: cssVar("--line") },
      timeScale: { borderColor: cssVar("--line") },
    });
    this.series.applyOptions({
      upColor: cssVar("--up"), downColor: cssVar("--down"), wickUpColor: cssVar("--up"), wickDownColor: cssVar("--down"),
    });
  }

  // The newest candles only (between full sends): the last bar is updated, new bars appended.
  updateCandles(candles) {
    if (!this.ensure()) return;
    const last = this.series.data().at(-1);
    for (const [t, o, h, l, c] of candles) {
      const time = t / 1000 + IST_OFFSET_S;
      if (last && time < last.time) continue;
      this.series.update({ time, open: o, high: h, low: l, close: c });
      this.barTimes.add(time);
    }
    this.el.dataset.bars = String(this.series.data().length);
    this.applyMarkers();
  }

  setLevels(levels) {
    if (!this.ensure()) return;
    for (const line of this.lines) this.series.removePriceLine(line);
    this.scaleLevels = levels.filter((l) => l.scale).map((l) => l.price);
    this.lines = levels.map((level) => this.series.createPriceLine({
      price: level.price,
      color: level.color,
      lineWidth: level.width || 1,
      lineStyle: level.style ?? 0,
      axisLabelVisible: level.axisLabel !== false,
      title: level.title,
    }));
    this.el.dataset.lines = String(this.lines.length);
    this.el.dataset.levelTitles = levels.map((l) => l.title).join(",");
    this.el.dataset.levels = levels.map((l) => `${l.title}=${l.price}`).join(",");
  }

  addMarker(id, marker) {
    this.markers.set(id, marker);
    this.applyMarkers();
  }

  applyMarkers() {
    if (!this.markersPlugin) return;
    const list = [...this.markers.values()].sort((a, b) => a.time - b.time);
    this.markersPlugin.setMarkers(list);
    this.el.dataset.markers = String(list.length);
    this.el.dataset.markerTexts = list.map((m) => m.text).join("|");
  }
}

// Price lines for the auction's levels: developing value, IB and its extensions, yesterday's
// references and the naked POCs.
export function levelsOf(state) {
  const c = {
    poc: cssVar("--poc-line"), va: cssVar("--accent"), ib: cssVar("--ib"), ext: cssVar("--ib"),
    prior: cssVar("--muted"), naked: cssVar("--single"),
  };
  const out = [];
  const add = (price, title, color, style = 0, width = 1, scale = false, axisLabel = true) => {
    if (isNumber(price)) out.push({ price, title, color, style, width, scale, axisLabel });
  };
  add(state.poc, "POC", c.poc, 0, 2, true);
  add(state.vah, "VAH", c.va, 0, 1, true);
  add(state.val, "VAL", c.va, 0, 1, true);
  add(state.ibh, "IBH", c.ib, 2, 1, true);
  add(state.ibl, "IBL", c.ib, 2, 1, true);
  // {side: {multiple: price}}: IBH + k·IBR up, IBL − k·IBR down.
  for (const [side, levels] of Object.entries(state.extension_levels || {})) {
    for (const [k, price] of Object.entries(levels)) {
      add(Number(price), `IB ${side === "up" ? "+" : "−"}${k}×`, c.ext, 1, 1, false, false);
    }
  }
  const p = state.prior;
  if (p) {
    add(p.poc, "pPOC", c.prior, 2, 1, true);
    add(p.vah, "pVAH", c.prior, 2, 1, true);
    add(p.val, "pVAL", c.prior, 2, 1, true);
    add(p.high, "pH", c.prior, 3);
    add(p.low, "pL", c.prior, 3);
  }
  for (const price of state.naked_pocs || []) add(price, "nPOC", c.naked, 1, 1, false, false);
  return out;
}

// --- One panel per watched index ---------------------------------------------------------------

export class AuctionPanel {
  constructor(el, urls) {
    this.el = el;
    this.key = el.dataset.auction;
    this.urls = urls;
    this.profile = new ProfileChart(el.querySelector("[data-profile]"));
    this.candles = new CandleChart(el.querySelector("[data-candles]"));
    this.live = null; // the last live message
    this.viewing = "live"; // "live" | a day | "composite"
    this.fields = {};
    el.querySelectorAll("[data-field]").forEach((n) => { this.fields[n.dataset.field] = n; });
    this.labels = {};
    el.querySelectorAll("[data-label]").forEach((n) => {
      this.labels[n.dataset.label] = n;
      n.title = n.dataset.tip; // native tooltip as well as the CSS one
    });
    const day = el.querySelector("[data-history-day]");
    day.addEventListener("change", () => (day.value ? this.showDay(day.value) : this.showLive()));
    el.querySelector("[data-composite-show]").addEventListener("click", () => this.showComposite());
    el.querySelector("[data-live-show]").addEventListener("click", () => {
      day.value = "";
      this.showLive();
    });
  }

  applyLive(message) {
    this.live = message;
    if (this.viewing === "live") this.render(message, true);
  }

  render(message, live) {
    const s = message.state;
    delete this.el.dataset.empty;
    this.profile.show(message);
    for (const [name, node] of Object.entries(this.labels)) {
      const text = humanise(name, s[name]);
      node.textContent = name === "day_type" && s[name] && !s.day_type_final ? `${text} (provisional)` : text;
      node.dataset.value = s[name] ?? "";
    }
    const letter = s.period_letter ? ` · period ${s.period_letter}` : "";
    this.fields.mode.textContent = live ? `live · ${s.date}${letter}` : `session ${s.date} (final, from the history store)`;
    this.fields.levels.textContent = `POC ${fmt(s.poc)} · VA ${fmt(s.val)}–${fmt(s.vah)} · IB ${fmt(s.ibl)}–${fmt(s.ibh)}`;
    this.fields.volume_source.textContent = message.volume_source === "futures" ? "volume: near-month future, moved by the basis" : "";
    if (message.candles && message.candles.length) {
      if (message.candles_partial) this.candles.updateCandles(message.candles);
      else this.candles.setCandles(message.candles, this.shownDay !== s.date);
      this.shownDay = s.date;
    }
    this.candles.setLevels(levelsOf(s));
    this.el.dataset.viewing = this.viewing;
  }

  showLive() {
    this.viewing = "live";
    this.el.querySelector("[data-live-show]").hidden = true;
    if (this.live) this.render(this.live, true);
  }

  async fetchJson(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  async showDay(day) {
    this.viewing = day;
    this.el.querySelector("[data-live-show]").hidden = false;
    try {
      const message = await this.fetchJson(`${this.urls.history}?instrument=${encodeURIComponent(this.key)}&day=${day}`);
      if (this.viewing === day) this.render(message, false);
    } catch (error) {
      this.fields.mode.textContent = `session ${day}: ${error.message}`;
    }
  }

  async showComposite() {
    const n = this.el.querySelector("[data-composite-n]").value || "5";
    const day = this.el.querySelector("[data-history-day]").value || (this.live && this.live.state.date) || new Date().toISOString().slice(0, 10);
    this.viewing = "composite";
    this.el.querySelector("[data-live-show]").hidden = false;
    try {
      const c = await this.fetchJson(`${this.urls.composite}?instrument=${encodeURIComponent(this.key)}&day=${day}&n=${n}`);
      delete this.el.dataset.empty;
      this.profile.showComposite(c);
      this.fields.mode.textContent = `composite of ${c.sessions.length} sessions (${c.sessions[0]} – ${c.sessions[c.sessions.length - 1]})`;
      this.fields.levels.textContent = `POC ${fmt(c.poc)} · VA ${fmt(c.val)}–${fmt(c.vah)}`;
      this.el.dataset.viewing = "composite";
    } catch (error) {
      this.fields.mode.textContent = `composite: ${error.message}`;
    }
  }

  redraw() {
    this.profile.schedule();
    this.candles.restyle();
    if (this.live && this.viewing === "live") this.candles.setLevels(levelsOf(this.live.state));
  }
}

export function signalMarker(signal) {
  const t = Math.floor(Date.parse(signal.ts) / 60_000) * 60 + IST_OFFSET_S;
  const long = signal.side === "long";
  const entry = signal.kind !== "exit";
  return {
    time: t,
    position: entry === long ? "belowBar" : "aboveBar",
    color: long ? cssVar("--up") : cssVar("--down"),
    shape: entry ? (long ? "arrowUp" : "arrowDown") : "circle",
    text: `${entry ? "" : "exit "}${long ? "long" : "short"}`,
  };
}

export function tradeMarker(order, slug) {
  const t = Math.floor(Date.parse(order.ts) / 60_000) * 60 + IST_OFFSET_S;
  const buy = order.side === "BUY";
  return {
    time: t,
    position: buy ? "belowBar" : "aboveBar",
    color: cssVar("--accent"),
    shape: "square",
    // Short on the chart (the full contract is in the signals list and the positions panel).
    text: `${order.side} ${order.quantity}${/\b(CE|PE)\b/.exec(order.trading_symbol || "")?.[0] ? ` ${/\b(CE|PE)\b/.exec(order.trading_symbol)[0]}` : ""} @ ${order.average_price ?? "—"}`,
  };
}
