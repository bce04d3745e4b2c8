"""Backtest runs and sweeps: creating them (and sending their task once the row is committed),
cancelling them, and executing one in a backtests worker (HackSoft-style services).

Execution loads 1-minute candles from the history store (`persistence.readers.read_candles_1m`),
exactly as `manage.py backtest` does without `--input`, and calls the same pure runner with the same
arguments, so a web run and a shell run of the same inputs give the same metrics and trades. The
only addition is `progress.ObservedSeries`, which reports sessions and stops the run between two
sessions when a cancel was requested. Never imported by the engine or the strategies.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from strategies.backtests.models import (
    FINISHED_STATES,
    BacktestRun,
    BacktestSweep,
    DataSource,
    FillModel,
    RunState,
)
from strategies.backtests.progress import (
    ObservedSeries,
    RunCancelled,
    SessionProgress,
    progress_message,
    send_progress,
)

logger = logging.getLogger(__name__)

MAX_SWEEP_RUNS = 200
# AuctionState fields kept for "the session's profile at the trade's entry" (the rest is bulky).
PROFILE_KEYS = (
    "date",
    "period_letter",
    "row_size",
    "open",
    "high",
    "low",
    "close",
    "poc",
    "vah",
    "val",
    "ibh",
    "ibl",
    "ibr",
    "tpo_counts",
    "open_type",
    "day_type",
    "value_relation",
    "single_prints",
    "prior",
)


def backtests_queue() -> str:
    """The queue backtest tasks go to (settings may name another, e.g. a test's private queue)."""
    from auctionsite.celery import BACKTESTS_QUEUE

    return getattr(settings, "BACKTESTS_QUEUE", None) or BACKTESTS_QUEUE


# --- Creating ---------------------------------------------------------------------------------


def start_backtest(
    *,
    user,
    strategy: str,
    parameters: Mapping[str, Any],
    instruments: Sequence[str],
    start: dt.date,
    end: dt.date,
    fill: str = FillModel.UNDERLYING,
    source: str = "candles",
    costs: bool = True,
    capital: Decimal = Decimal("500000"),
    lots: int = 1,
    iv: float = 0.14,
    strike_offset: int = 0,
    slippage: Decimal = Decimal("0.05"),
    sweep: BacktestSweep | None = None,
) -> BacktestRun:
    """Store a queued run and, once the transaction commits, send its task to the backtests queue.
    `parameters` are as the user gave them (validated by the strategy class in the form)."""
    run = BacktestRun(
        user=user,
        sweep=sweep,
        strategy=strategy,
        parameters=_jsonable(parameters),
        instruments=list(instruments),
        start=start,
        end=end,
        fill=fill,
        source=source,
        costs=costs,
        capital=capital,
        lots=lots,
        iv=iv,
        strike_offset=strike_offset,
        slippage=slippage,
    )
    run.full_clean()
    run.save()
    transaction.on_commit(lambda: enqueue(run.pk))
    return run


def enqueue(run_id: int) -> str:
    from strategies.backtests.tasks import run_backtest_task

    result = run_backtest_task.apply_async(args=[run_id], queue=backtests_queue())
    BacktestRun.objects.filter(pk=run_id).update(task_id=result.id)
    return result.id


def sweep_combinations(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's order (the last name varies fastest)."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]


def start_sweep(
    *,
    user,
    strategy: str,
    parameters: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    **run_fields: Any,
) -> BacktestSweep:
    """A sweep and one queued run per grid combination (fixed `parameters` overridden by the grid's);
    each run's task is sent once the transaction commits, so the workers share them out."""
    combos = sweep_combinations(grid)
    if not combos:
        raise ValueError("the grid is empty")
    if len(combos) > MAX_SWEEP_RUNS:
        raise ValueError(f"{len(combos)} combinations: at most {MAX_SWEEP_RUNS}")
    with transaction.atomic():
        sweep = BacktestSweep.objects.create(user=user, strategy=strategy, grid=_jsonable(grid))
        for combo in combos:
            start_backtest(
                user=user, strategy=strategy, parameters={**parameters, **combo}, sweep=sweep, **run_fields
            )
    return sweep


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, list | tuple):
            out[name] = [_jsonable({"v": v})["v"] for v in value]
        elif isinstance(value, dt.time):
            out[name] = value.strftime("%H:%M")
        elif isinstance(value, Decimal):
            out[name] = str(value)
        else:
            out[name] = value
    return out


# --- Cancelling -------------------------------------------------------------------------------


def request_cancel(run: BacktestRun) -> BacktestRun:
    """Ask a run to stop. A queued run is cancelled at once (its task will find it so and do
    nothing); a running one stops before its next session and is marked cancelled by its worker."""
    BacktestRun.objects.filter(pk=run.pk).exclude(state__in=FINISHED_STATES).update(cancel_requested=True)
    finished = BacktestRun.objects.filter(pk=run.pk, state=RunState.QUEUED).update(
        state=RunState.CANCELLED, finished_at=timezone.now()
    )
    run.refresh_from_db()
    if finished:
        _publish(run)
    return run


# --- Executing (in a backtests worker) ---------------------------------------------------------


def execute_run(run_id: int, task_id: str | None = None) -> str:
    """Run a queued backtest to the end (done, failed or cancelled); returns the final state.

    A run that is not queued any more (cancelled before it started, finished, or running in another
    worker) is left alone, except a run still marked running by this very task: the broker
    redelivers a task (acks late) only when the worker running it was lost, so it starts over."""
    takeable = Q(state=RunState.QUEUED)
    if task_id:
        takeable |= Q(state=RunState.RUNNING, task_id=task_id)
    claimed = BacktestRun.objects.filter(takeable, pk=run_id).update(
        state=RunState.RUNNING, started_at=timezone.now(), sessions_done=0
    )
    run = BacktestRun.objects.get(pk=run_id)
    if not claimed:
        return run.state
    if run.cancel_requested:  # asked to stop while its lost worker ran it
        _finish(run, RunState.CANCELLED)
        return run.state
    try:
        outcome = _execute(run)
    except RunCancelled:
        _finish(run, RunState.CANCELLED)
    except Exception as exc:  # the run's page shows why; the worker lives on
        logger.exception("backtest %s failed", run_id)
        _finish(
            run,
            RunState.FAILED,
            error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        )
    else:
        _finish(run, RunState.DONE, **outcome)
    return run.state


def _finish(run: BacktestRun, state: str, **fields: Any) -> None:
    run.state = state
    run.finished_at = timezone.now()
    for name, value in fields.items():
        setattr(run, name, value)
    run.save(update_fields=["state", "finished_at", *fields])
    _publish(run)


def _publish(run: BacktestRun, eta_s: float | None = None) -> None:
    try:
        send_progress(run.pk, progress_message(run.sessions_done, run.sessions_total, eta_s, run.state))
    except Exception as exc:  # progress is best effort: the row holds the truth, the page polls it
        logger.warning("backtest %s progress not sent: %s", run.pk, type(exc).__name__)


def load_series(instrument_key: str, start: dt.date, end: dt.date):
    """One instrument's 1-minute candles from the history store, as `manage.py backtest` loads them."""
    from persistence.readers import read_candles_1m
    from strategies.backtest.data import series_from_table

    return series_from_table(read_candles_1m(instrument_key, start, end), instrument_key, start, end)


def load_ticks(instrument_key: str, start: dt.date, end: dt.date):
    """One instrument's recorded ticks from the history store, for runs driven by ticks."""
    from persistence.readers import read_ticks
    from strategies.backtest.data import ticks_from_table

    return ticks_from_table(read_ticks(instrument_key, start, end), instrument_key)


def _execute(run: BacktestRun) -> dict[str, Any]:
    from strategies.backtest.metrics import TradeResult, compute_metrics
    from strategies.backtest.runner import MODELLED, UNDERLYING, OptionFillConfig, run_backtest
    from strategies.library import get_strategy

    strategy_cls = get_strategy(run.strategy)
    series_list = [load_series(key, run.start, run.end) for key in run.instruments]
    if not any(len(s) for s in series_list):
        raise LookupError(
            f"no candles for {', '.join(run.instruments)} from {run.start} to {run.end} in the history store"
        )
    total = sum(len(s.session_bounds()) for s in series_list)
    run.sessions_total, run.sessions_done = total, 0
    run.save(update_fields=["sessions_total", "sessions_done"])

    def report(done: int, total: int, eta_s: float | None) -> None:
        run.sessions_done = done
        BacktestRun.objects.filter(pk=run.pk).update(sessions_done=done)
        _publish(run, eta_s)

    def cancelled() -> bool:
        return BacktestRun.objects.filter(pk=run.pk, cancel_requested=True).exists()

    progress = SessionProgress(total, report, cancelled)
    premiums = None
    if run.fill == FillModel.RECORDED:
        from strategies.backtests.premiums import RecordedPremiums

        premiums = RecordedPremiums()
    config = OptionFillConfig(
        lots=run.lots,
        iv=run.iv,
        strike_offset=run.strike_offset,
        slippage=Decimal(run.slippage),
        premiums=premiums,
    )
    # the runner's option path ("modelled") with the premiums chosen above
    runner_fill = UNDERLYING if run.fill == FillModel.UNDERLYING else MODELLED
    results = []
    offset = 0
    for series in series_list:
        if not len(series):
            continue
        ticks = None
        if run.source == DataSource.TICKS:
            ticks = load_ticks(series.instrument_key, run.start, run.end)
            if not len(ticks):
                raise LookupError(f"no ticks for {series.instrument_key} from {run.start} to {run.end}")
        observed = ObservedSeries.of(series, progress.instrument(offset))
        results.append(
            run_backtest(
                strategy_cls, observed, run.parameters, fill=runner_fill, options=config, ticks=ticks
            )
        )
        offset += len(results[-1].sessions)

    trades = [t for r in results for t in r.trades]
    trade_dicts = [t.as_dict() for r in results for t in r.trades]
    sessions = sorted({d for r in results for d in r.sessions})
    with_costs = run.costs or run.fill == FillModel.UNDERLYING
    if len(results) == 1 and with_costs:
        metrics = results[0].metrics  # exactly what `manage.py backtest` prints
    else:
        metrics = compute_metrics([_trade_result(t, with_costs, TradeResult) for t in trades], sessions)
    summaries, profiles = _auction_summaries(series_list, trade_dicts)
    for trade, profile in zip(trade_dicts, profiles, strict=True):
        trade["profile_at_entry"] = profile
    if len(results) > 1:
        trade_dicts.sort(key=lambda t: t["entry_ts"])  # one time-ordered list over the instruments
    return {
        "metrics": metrics,
        "trades": trade_dicts,
        "session_summaries": summaries,
        "equity": equity_curve(trades, sessions, with_costs),
    }


def _trade_result(trade, with_costs: bool, cls):
    if trade.option is not None:
        gross = trade.option.gross_pnl
        return cls(trade.session_date, trade.option.net_pnl if with_costs else gross, gross)
    points = Decimal(str(trade.pnl_points))
    return cls(trade.session_date, points, points)


def equity_curve(trades, sessions: Sequence[dt.date], with_costs: bool = True) -> list[list[Any]]:
    """[[date, cumulative PnL, drawdown from the running peak]] over every session (metrics.py's
    convention: PnL by the trade's session day, the curve starting from 0)."""
    daily: dict[dt.date, Decimal] = {d: Decimal(0) for d in sessions}
    for t in trades:
        if t.option is not None:
            pnl = t.option.net_pnl if with_costs else t.option.gross_pnl
        else:
            pnl = Decimal(str(t.pnl_points))
        daily[t.session_date] = daily.get(t.session_date, Decimal(0)) + pnl
    out: list[list[Any]] = []
    equity = peak = Decimal(0)
    for day in sorted(daily):
        equity += daily[day]
        peak = max(peak, equity)
        out.append([day.isoformat(), float(round(equity, 2)), float(round(equity - peak, 2))])
    return out


def _auction_summaries(series_list, trades: list[dict]) -> tuple[list[dict], list[dict | None]]:
    """Per session of each instrument: the auction's open type, day type and value relation (from
    the engine's batch computation), and each trade's session profile at its entry time."""
    from strategies.engine import Candles, compute_session, compute_sessions, params_for, state_to_dict

    summaries: list[dict] = []
    profiles: list[dict | None] = [None] * len(trades)
    for series in series_list:
        if not len(series):
            continue
        key = series.instrument_key
        params = params_for(key)
        candles = Candles(series.ts_ms, series.open, series.high, series.low, series.close, series.volume)
        states = compute_sessions(candles, params)
        by_day = {}
        ibrs: list[float] = []
        ranges: list[float] = []
        prior = None
        for state in states:
            summaries.append(
                {
                    "instrument_key": key,
                    "date": state.session_date.isoformat(),
                    "open_type": state.open_type,
                    "day_type": state.day_type,
                    "value_relation": state.value_relation,
                    "poc": state.poc,
                    "vah": state.vah,
                    "val": state.val,
                    "ibh": state.ibh,
                    "ibl": state.ibl,
                    "high": state.high,
                    "low": state.low,
                }
            )
            by_day[state.session_date] = (prior, _avg(ibrs), _avg(ranges))
            prior = state.to_prior()
            if state.ibr is not None and state.ib_complete:
                ibrs.append(state.ibr)
            if state.high is not None and state.low is not None:
                ranges.append(state.high - state.low)
        bounds = {d: (a, b) for d, a, b in series.session_bounds()}
        for i, trade in enumerate(trades):
            if trade["instrument_key"] != key:
                continue
            entry = dt.datetime.fromisoformat(trade["entry_ts"])
            context = by_day.get(entry.date())
            if context is None:
                continue
            entry_ms = int(entry.timestamp() * 1000)
            # the candles the strategy had seen when it entered: those that closed by then
            a, b = bounds[entry.date()]
            upto = a
            while upto < b and series.ts_ms[upto] + 60_000 <= entry_ms:
                upto += 1
            if upto == a:
                continue
            state = compute_session(
                candles.slice(a, upto), params, context[0], (), context[1], context[2], final=False
            )
            full = state_to_dict(state)
            profiles[i] = {k: full[k] for k in PROFILE_KEYS}
    return summaries, profiles


def _avg(values: list[float], days: int = 20) -> float | None:
    window = values[-days:]
    return sum(window) / len(window) if window else None
