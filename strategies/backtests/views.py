"""Backtest pages (login required): the form that starts a run or a sweep, the run list, a run's
report with live progress and cancel, two runs side by side, and a sweep's sortable table.

Thin: forms validate, services start and cancel, selectors read. A bad request renders the form with
its field errors and starts nothing.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from strategies.backtests import selectors, services
from strategies.backtests.forms import backtest_form
from strategies.backtests.models import RunState

# The report's metric rows: (key, label, kind) — kind "pnl" is in the run's unit, "ratio" unitless.
METRIC_ROWS = (
    ("net_pnl", "Net PnL (after costs)", "pnl"),
    ("gross_pnl", "Gross PnL", "pnl"),
    ("costs", "Costs", "pnl"),
    ("trades", "Trades", "count"),
    ("win_rate", "Win rate", "percent"),
    ("profit_factor", "Profit factor", "ratio"),
    ("expectancy", "Expectancy", "pnl"),
    ("avg_win", "Average win", "pnl"),
    ("avg_loss", "Average loss", "pnl"),
    ("sharpe", "Sharpe (daily)", "ratio"),
    ("sortino", "Sortino (daily)", "ratio"),
    ("max_drawdown", "Max drawdown", "pnl"),
    ("calmar", "Calmar", "ratio"),
)


def _strategy_cls(slug: str | None):
    from strategies.library import REGISTRY

    if slug in REGISTRY:
        return REGISTRY[slug]
    return REGISTRY["ib_breakout"] if "ib_breakout" in REGISTRY else next(iter(REGISTRY.values()))


def _start_form(request: HttpRequest, sweep: bool) -> HttpResponse:
    slug = request.POST.get("strategy") if request.method == "POST" else request.GET.get("strategy")
    strategy_cls = _strategy_cls(slug)
    form_cls = backtest_form(strategy_cls, sweep=sweep)
    if request.method == "POST":
        form = form_cls(request.POST)
        if form.is_valid():
            if sweep:
                created = services.start_sweep(
                    user=request.user,
                    strategy=strategy_cls.slug,
                    parameters=form.parameter_values(),
                    grid=form.grid(),
                    **form.run_fields(),
                )
                return redirect("backtest-sweep", sweep_id=created.pk)
            run = services.start_backtest(
                user=request.user,
                strategy=strategy_cls.slug,
                parameters=form.parameter_values(),
                **form.run_fields(),
            )
            return redirect("backtest-detail", run_id=run.pk)
        status = 400
    else:
        form = form_cls(initial={"strategy": strategy_cls.slug, **_stored_range()})
        status = 200
    context = {"form": form, "sweep": sweep, "strategy_cls": strategy_cls}
    return render(request, "backtests/new.html", context, status=status)


def _stored_range(days: int = 30) -> dict:
    """The form's initial dates: the last `days` calendar days the history store has data for."""
    import datetime as dt

    from persistence.readers import session_days

    stored = session_days()
    if not stored:
        return {}
    return {"start": max(stored[0], stored[-1] - dt.timedelta(days=days)), "end": stored[-1]}


@login_required
def run_new(request: HttpRequest) -> HttpResponse:
    return _start_form(request, sweep=False)


@login_required
def sweep_new(request: HttpRequest) -> HttpResponse:
    return _start_form(request, sweep=True)


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    runs = selectors.visible_runs(request.user).filter(sweep__isnull=True)[:200]
    sweeps = selectors.visible_sweeps(request.user)[:50]
    return render(request, "backtests/list.html", {"runs": runs, "sweeps": sweeps})


def _run_or_404(request: HttpRequest, run_id: int):
    run = selectors.visible_runs(request.user).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such backtest.")
    return run


def show_metric(value, kind: str, unit: str = "") -> str:
    """A metric as the report prints it ("—" when undefined, e.g. a profit factor without losses)."""
    if value is None:
        return "—"
    if kind == "count":
        return f"{value:,}"
    if kind == "percent":
        return f"{value * 100:.1f}%"
    if kind == "pnl":
        return f"{value:,.2f} {unit}".strip()
    return f"{value:,.2f}"


def _metric_rows(run) -> list[dict]:
    metrics = run.metrics or {}
    rows = [
        {"key": key, "label": label, "value": show_metric(metrics.get(key), kind, run.pnl_unit)}
        for key, label, kind in METRIC_ROWS
    ]
    if run.fill != "underlying" and metrics.get("net_pnl") is not None:
        # rupee results only: points on the index have no capital to be a return on
        rows.insert(
            1,
            {
                "key": "return",
                "label": "Return on capital",
                "value": f"{metrics['net_pnl'] / float(run.capital) * 100:.2f}%",
            },
        )
    return rows


@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run_or_404(request, run_id)
    context = {
        "run": run,
        "metric_rows": _metric_rows(run),
        "ws_path": f"/ws/backtests/{run.pk}/",
        "percent": round(100 * run.sessions_done / run.sessions_total) if run.sessions_total else 0,
        "report": {
            "equity": run.equity,
            "trades": run.trades,
            "unit": run.pnl_unit,
            "capital": float(run.capital),
            "modelled": run.modelled,
        },
    }
    return render(request, "backtests/detail.html", context)


@login_required
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = services.request_cancel(_run_or_404(request, run_id))
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse({"state": run.state, "cancel_requested": run.cancel_requested})
    return redirect("backtest-detail", run_id=run.pk)


@login_required
def run_status(request: HttpRequest, run_id: int) -> JsonResponse:
    run = _run_or_404(request, run_id)
    return JsonResponse(
        {
            "state": run.state,
            "done": run.sessions_done,
            "total": run.sessions_total,
            "finished": run.finished,
            "error": run.error,
            "report_url": reverse("backtest-detail", args=[run.pk]),
        }
    )


@login_required
def run_compare(request: HttpRequest) -> HttpResponse:
    ids = [value for value in request.GET.getlist("run") if value.isdigit()][:2]
    if len(ids) != 2:
        return render(
            request,
            "backtests/compare.html",
            {"error": "Choose two runs to compare.", "runs": [], "rows": []},
            status=400,
        )
    runs = [_run_or_404(request, int(i)) for i in ids]
    rows = [
        {"label": label, "values": [show_metric((r.metrics or {}).get(key), kind, r.pnl_unit) for r in runs]}
        for key, label, kind in METRIC_ROWS
    ]
    equities = [{"id": r.pk, "equity": r.equity, "unit": r.pnl_unit} for r in runs]
    return render(request, "backtests/compare.html", {"runs": runs, "rows": rows, "equities": equities})


@login_required
def sweep_detail(request: HttpRequest, sweep_id: int) -> HttpResponse:
    sweep = get_object_or_404(selectors.visible_sweeps(request.user), pk=sweep_id)
    sort = request.GET.get("sort", "net_pnl")
    if sort not in selectors.SORTABLE_METRICS:
        sort = "net_pnl"
    descending = request.GET.get("dir", "desc") != "asc"
    runs = selectors.sweep_rows(sweep, sort, descending)
    names = list(sweep.grid)
    rows = [
        {
            "run": r,
            "values": [r.parameters.get(n) for n in names],
            "metrics": [(r.metrics or {}).get(m) for m in selectors.SORTABLE_METRICS],
        }
        for r in runs
    ]
    finished = sum(1 for r in runs if r.finished)
    context = {
        "sweep": sweep,
        "names": names,
        "rows": rows,
        "metrics": selectors.SORTABLE_METRICS,
        "sort": sort,
        "descending": descending,
        "finished": finished,
        "total": len(runs),
        "running": any(r.state in (RunState.QUEUED, RunState.RUNNING) for r in runs),
    }
    return render(request, "backtests/sweep.html", context)
