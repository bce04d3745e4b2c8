// A backtest run's page: live progress from /ws/backtests/<id>/ (bar, sessions done/total, ETA,
// state), a reload into the report when the run finishes, the equity and drawdown chart
// (lightweight-charts), and a trade's session profile at entry. The compare page reuses the chart.
// Displays only what the server computed.
(function () {
  const script = document.getElementById("backtest-script");
  const FINISHED = new Set(["done", "failed", "cancelled"]);
  const STATE_LABELS = { queued: "Queued", running: "Running", done: "Done", failed: "Failed", cancelled: "Cancelled" };

  function cssVar(name, fallback) {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  function fmtEta(s) {
    if (s === null || s === undefined) return "";
    if (s < 60) return `about ${Math.ceil(s)} s left`;
    return `about ${Math.floor(s / 60)} min ${Math.round(s % 60)} s left`;
  }

  // --- Progress ----------------------------------------------------------------------------------
  const panel = document.getElementById("progress");
  if (panel && script.dataset.wsPath) {
    const bar = document.getElementById("progress-bar");
    const text = document.getElementById("progress-text");
    const eta = document.getElementById("progress-eta");
    const stateEl = document.getElementById("run-state");
    const initial = panel.dataset.state;
    let reloaded = false;

    function show(msg) {
      if (msg.total > 0) {
        bar.max = msg.total;
        bar.value = msg.done;
      }
      bar.dataset.percent = msg.total > 0 ? String(Math.round((100 * msg.done) / msg.total)) : "0";
      text.textContent = `${msg.done} / ${msg.total} sessions`;
      eta.textContent = msg.state === "running" ? fmtEta(msg.eta_s) : "";
      stateEl.textContent = STATE_LABELS[msg.state] || msg.state;
      stateEl.className = `pill state-${msg.state}`;
      panel.dataset.state = msg.state;
      if (FINISHED.has(msg.state)) {
        const cancel = document.getElementById("cancel-form");
        if (cancel) cancel.remove();
        if (!FINISHED.has(initial) && !reloaded) {
          reloaded = true;
          // the report is rendered by the server: show it
          setTimeout(() => window.location.reload(), msg.state === "done" ? 600 : 300);
        }
      }
    }

    let socket = null;
    let pollTimer = null;
    function poll() {
      fetch(script.dataset.statusUrl, { headers: { Accept: "application/json" } })
        .then((r) => r.json())
        .then((s) => show({ done: s.done, total: s.total, state: s.state, eta_s: null }))
        .catch(() => {});
    }
    function connect(attempt) {
      const proto = window.location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${proto}://${window.location.host}${script.dataset.wsPath}`);
      socket.addEventListener("message", (event) => show(JSON.parse(event.data)));
      socket.addEventListener("close", () => {
        if (FINISHED.has(panel.dataset.state)) return;
        // the status URL keeps the page honest while the socket is away
        if (!pollTimer) pollTimer = setInterval(poll, 2000);
        setTimeout(() => connect(attempt + 1), Math.min(15000, 1000 * 2 ** attempt));
      });
      socket.addEventListener("open", () => {
        if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
      });
    }
    if (!FINISHED.has(initial)) connect(0);
  }

  // --- Charts ------------------------------------------------------------------------------------
  function chartOptions(el) {
    return {
      autoSize: true,
      layout: { background: { color: "transparent" }, textColor: cssVar("--muted", "#666") },
      grid: { vertLines: { visible: false }, horzLines: { color: cssVar("--line", "#e5e5e5") } },
      timeScale: { borderVisible: false },
      rightPriceScale: { borderVisible: false },
    };
  }

  function drawEquity(el, equity) {
    if (!window.LightweightCharts || !el) return null;
    const LC = window.LightweightCharts;
    const chart = LC.createChart(el, chartOptions(el));
    const line = chart.addSeries(LC.LineSeries, { color: cssVar("--accent", "#2962ff"), lineWidth: 2, title: "equity" });
    line.setData(equity.map(([day, eq]) => ({ time: day, value: eq })));
    const dd = chart.addSeries(
      LC.AreaSeries,
      { lineColor: cssVar("--down", "#d32f2f"), topColor: "rgba(211,47,47,0.05)", bottomColor: "rgba(211,47,47,0.35)", lineWidth: 1, title: "drawdown", invertFilledArea: true },
      1,
    );
    dd.setData(equity.map(([day, , d]) => ({ time: day, value: d })));
    chart.timeScale().fitContent();
    el.dataset.ready = "true";
    return chart;
  }

  const reportData = document.getElementById("report-data");
  if (reportData) {
    const report = JSON.parse(reportData.textContent);
    drawEquity(document.getElementById("equity-chart"), report.equity || []);
    const profile = document.getElementById("profile");
    document.querySelectorAll("#trades tr[data-trade]").forEach((row) => {
      const open = () => showProfile(profile, report.trades[Number(row.dataset.trade)], row);
      row.addEventListener("click", open);
      row.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    });
  }

  const compareData = document.getElementById("compare-data");
  if (compareData && window.LightweightCharts) {
    const LC = window.LightweightCharts;
    const el = document.getElementById("equity-chart");
    const chart = LC.createChart(el, chartOptions(el));
    const colors = [cssVar("--accent", "#2962ff"), "#ef6c00"];
    const runs = JSON.parse(compareData.textContent);
    // points and rupees share no scale: a run in another unit than the first gets the left one
    const mixed = runs.some((r) => r.unit !== runs[0].unit);
    if (mixed) chart.applyOptions({ leftPriceScale: { visible: true, borderVisible: false } });
    runs.forEach((run, i) => {
      const scale = mixed && run.unit !== runs[0].unit ? "left" : "right";
      const s = chart.addSeries(LC.LineSeries, { color: colors[i % 2], lineWidth: 2, priceScaleId: scale, title: `run ${run.id} (${run.unit})` });
      s.setData(run.equity.map(([day, eq]) => ({ time: day, value: eq })));
    });
    chart.timeScale().fitContent();
    el.dataset.ready = "true";
  }

  // --- A trade's session profile at entry -------------------------------------------------------
  function showProfile(box, trade, row) {
    document.querySelectorAll("#trades tr.selected").forEach((r) => r.classList.remove("selected"));
    row.classList.add("selected");
    box.hidden = false;
    box.replaceChildren();
    const p = trade && trade.profile_at_entry;
    const head = document.createElement("h3");
    if (!p) {
      head.textContent = "No profile: the trade entered before the session's first candle closed.";
      box.append(head);
      return;
    }
    head.textContent = `Profile at entry ${trade.entry_ts.slice(0, 16).replace("T", " ")} (${trade.side} at ${trade.entry_price})`;
    const facts = document.createElement("p");
    facts.className = "muted";
    facts.textContent = [
      `period ${p.period_letter}`,
      `POC ${p.poc}`, `VA ${p.val}–${p.vah}`, `IB ${p.ibl}–${p.ibh}`,
      `open ${p.open_type || "—"}`, `day ${p.day_type || "—"}`, `value ${p.value_relation || "—"}`,
    ].join(" · ");
    box.append(head, facts);
    const rows = Object.entries(p.tpo_counts).map(([k, n]) => [Number(k), n]).sort((a, b) => b[0] - a[0]);
    const most = Math.max(1, ...rows.map((r) => r[1]));
    const list = document.createElement("div");
    list.className = "bt-tpo";
    for (const [price, n] of rows) {
      const line = document.createElement("div");
      line.className = "bt-tpo__row";
      const top = price + p.row_size;
      if (p.poc !== null && price <= p.poc && p.poc < top) line.classList.add("poc");
      else if (p.val !== null && p.vah !== null && price >= p.val && price <= p.vah) line.classList.add("va");
      if (price <= trade.entry_price && trade.entry_price < top) line.classList.add("entry");
      const label = document.createElement("span");
      label.textContent = String(price);
      const barEl = document.createElement("span");
      barEl.className = "bt-tpo__bar";
      barEl.style.width = `${(100 * n) / most}%`;
      barEl.textContent = String(n);
      line.append(label, barEl);
      list.append(line);
    }
    box.append(list);
  }
})();
