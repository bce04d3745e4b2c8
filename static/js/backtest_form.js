// The backtest form: choosing another strategy reloads the page with that strategy's parameter
// fields (built on the server from its declaration). Validation stays on the server.
(function () {
  const select = document.getElementById("id_strategy");
  if (!select) return;
  select.addEventListener("change", () => {
    const url = new URL(window.location.href);
    url.searchParams.set("strategy", select.value);
    window.location.assign(url.toString());
  });
})();
