// The strategies panel: each strategy's heartbeat, positions and PnL from its worker's
// `strategy.update` messages, the recent signals list, signal and trade markers on the auction
// charts, and the kill switch's confirmation dialog (the switch itself is a plain POST form with
// CSRF; this only opens and closes the dialog). It displays; it never decides anything.

import { signalMarker, tradeMarker } from "./auction.js";

const HEARTBEAT_STALE_MS = 30_000;
const MAX_SIGNALS = 50;

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
const rupees = new Intl.NumberFormat("en-IN", { style: "currency", currency: "INR", minimumFractionDigits: 2 });
const clock = new Intl.DateTimeFormat("en-IN", {
  timeZone: "Asia/Kolkata", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

function money(text) {
  if (text === null || text === undefined || text === "") return "—";
  const v = Number(text);
  return Number.isFinite(v) ? rupees.format(v) : String(text);
}

export class StrategiesPanel {
  constructor(panels) {
    this.panels = panels; // instrument key -> AuctionPanel
    this.rows = new Map();
    this.lastUpdate = new Map(); // slug -> page-clock ms of its last update
    this.list = document.getElementById("signals");
    document.querySelectorAll("#strategies [data-strategy]").forEach((tr) => {
      const fields = {};
      tr.querySelectorAll("[data-field]").forEach((n) => { fields[n.dataset.field] = n; });
      this.rows.set(tr.dataset.strategy, { tr, fields, instruments: (tr.dataset.instruments || "").split(",").filter(Boolean) });
      const beat = Number(tr.dataset.heartbeatMs);
      // The worker's last heartbeat (server clock, ms since the epoch), until its first update.
      if (beat) this.lastUpdate.set(tr.dataset.strategy, Math.min(beat, Date.now()));
    });
    this.setupKillSwitch();
    const initial = document.getElementById("initial-signals");
    if (initial) {
      try {
        for (const signal of JSON.parse(initial.textContent) || []) this.addSignal(signal.slug, signal);
      } catch {
        // a page without its stored signals still gets the live ones
      }
    }
    setInterval(() => this.renderHeartbeats(), 1000);
  }

  setupKillSwitch() {
    const open = document.getElementById("kill-switch-open");
    const dialog = document.getElementById("kill-dialog");
    if (!open || !dialog) return;
    open.addEventListener("click", () => dialog.showModal());
    document.getElementById("kill-cancel").addEventListener("click", () => dialog.close());
  }

  apply(message) {
    const row = this.rows.get(message.slug);
    this.lastUpdate.set(message.slug, Date.now());
    if (row) {
      const f = row.fields;
      if (message.mode) f.mode.textContent = message.mode;
      const positions = message.positions || [];
      f.positions.replaceChildren();
      const open = positions.filter((p) => Number(p.quantity) !== 0);
      if (!open.length) {
        const none = document.createElement("span");
        none.className = "muted";
        none.textContent = positions.length ? "flat" : "none";
        f.positions.append(none);
      }
      for (const p of open) {
        const div = document.createElement("div");
        div.className = "position";
        div.textContent = `${p.instrument_key} ${p.quantity > 0 ? "+" : ""}${p.quantity} @ ${p.average_price ?? "—"} (last ${p.last_price ?? "—"}, PnL ${money(p.unrealised)})`;
        f.positions.append(div);
      }
      const pnl = message.pnl || {};
      f.realised.textContent = money(pnl.realised);
      f.unrealised.textContent = money(pnl.unrealised);
      f.net.textContent = money(pnl.net);
      const net = Number(pnl.net);
      f.net.classList.toggle("up", net > 0);
      f.net.classList.toggle("down", net < 0);
    }
    for (const signal of message.signals || []) this.addSignal(message.slug, signal);
    for (const order of message.orders || []) this.addTrade(message.slug, order);
    this.renderHeartbeats();
  }

  chartFor(instrumentKey, slug) {
    if (this.panels.has(instrumentKey)) return this.panels.get(instrumentKey);
    const row = this.rows.get(slug);
    for (const key of row ? row.instruments : []) if (this.panels.has(key)) return this.panels.get(key);
    return null;
  }

  addSignal(slug, signal) {
    const panel = this.chartFor(signal.instrument_key, slug);
    if (panel) panel.candles.addMarker(`s${signal.id ?? signal.stream_id}`, signalMarker({ ...signal, slug }));
    if (!this.list) return;
    const li = document.createElement("li");
    li.dataset.signal = String(signal.id ?? "");
    const when = clock.format(new Date(Date.parse(signal.ts)));
    li.textContent = `${when} ${slug}: ${signal.kind || "entry"} ${signal.side} ${signal.instrument_key} @ ${signal.price ?? "—"} — ${signal.reason || ""}`;
    this.list.prepend(li);
    while (this.list.children.length > MAX_SIGNALS) this.list.lastElementChild.remove();
  }

  addTrade(slug, order) {
    if (order.state !== "FILLED" && order.state !== "filled") return;
    const underlying = (order.trading_symbol || "").startsWith("BANKNIFTY") ? "Nifty Bank" : "Nifty 50";
    let panel = null;
    for (const [key, p] of this.panels) if (key.endsWith(underlying)) panel = p;
    panel = panel || this.chartFor(order.instrument_key, slug);
    if (panel) panel.candles.addMarker(`o${order.client_order_id}`, tradeMarker(order, slug));
  }

  renderHeartbeats() {
    const now = Date.now();
    for (const [slug, row] of this.rows) {
      const at = this.lastUpdate.get(slug);
      const cell = row.fields.heartbeat;
      if (!at) {
        cell.textContent = "—";
        continue;
      }
      const age = Math.max(0, now - at);
      cell.textContent = age < 60_000 ? `${Math.round(age / 1000)} s ago` : `${Math.round(age / 60_000)} min ago`;
      cell.classList.toggle("stale", age > HEARTBEAT_STALE_MS);
    }
  }
}
