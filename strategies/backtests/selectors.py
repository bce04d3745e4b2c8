"""Reads of backtest runs and sweeps for the pages and the progress consumer (HackSoft selectors).

Visibility: a user sees their own runs and sweeps; staff see everyone's. Nothing here writes.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from strategies.backtests.models import BacktestRun, BacktestSweep

# Metrics a sweep's table sorts by (all numbers or None), in the order of its columns.
SORTABLE_METRICS = (
    "net_pnl",
    "gross_pnl",
    "costs",
    "trades",
    "win_rate",
    "profit_factor",
    "expectancy",
    "avg_win",
    "avg_loss",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
)


def visible_runs(user) -> QuerySet[BacktestRun]:
    runs = BacktestRun.objects.select_related("user")
    return runs if user.is_staff else runs.filter(user=user)


def visible_sweeps(user) -> QuerySet[BacktestSweep]:
    sweeps = BacktestSweep.objects.select_related("user")
    return sweeps if user.is_staff else sweeps.filter(user=user)


def can_see_run(user, run_id: int) -> bool:
    if user is None or not user.is_authenticated:
        return False
    return visible_runs(user).filter(pk=run_id).exists()


def run_status(run_id: int) -> dict[str, Any] | None:
    row = BacktestRun.objects.filter(pk=run_id).values("state", "sessions_done", "sessions_total").first()
    return row


def sweep_rows(sweep: BacktestSweep, sort: str = "net_pnl", descending: bool = True) -> list[BacktestRun]:
    """The sweep's runs sorted by one metric (runs without it, e.g. unfinished, last)."""
    runs = list(sweep.runs.order_by("id"))
    key = sort if sort in SORTABLE_METRICS else "net_pnl"
    with_value = [r for r in runs if isinstance((r.metrics or {}).get(key), int | float)]
    without = [r for r in runs if r not in with_value]
    with_value.sort(key=lambda r: r.metrics[key], reverse=descending)
    return with_value + without
