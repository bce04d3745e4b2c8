"""Executing runs in-process: the same metrics and trades as `manage.py backtest` on the same history
store, costs off, cancel between sessions, progress counting and ETA."""

from __future__ import annotations

import json
from datetime import date, datetime, time
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from strategies.backtest.data import CandleSeries
from strategies.backtests import services
from strategies.backtests.models import BacktestRun
from strategies.backtests.progress import ObservedSeries, RunCancelled, SessionProgress, eta_seconds

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_queue(settings, private_channel_layer):
    """Runs here are executed in-process: no task is consumed, progress goes to private groups."""
    settings.BACKTESTS_QUEUE = "test.backtests.never-consumed"


@pytest.fixture
def user():
    return get_user_model().objects.create_user("svc", password="pw-svc-123")


def start(user, **fields):
    base = {
        "user": user,
        "strategy": "ib_breakout",
        "parameters": {},
        "instruments": ["NSE_INDEX|Nifty 50"],
        "start": date(2024, 3, 1),
        "end": date(2024, 3, 31),
    }
    return BacktestRun.objects.get(pk=services.start_backtest(**{**base, **fields}).pk)


def shell(*args: str) -> dict:
    out = StringIO()
    call_command("backtest", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.parametrize(
    ("fill", "params", "cli"),
    [
        ("underlying", {}, []),
        (
            "underlying",
            {"row_size": "2.5", "exit_time": "14:00"},
            ["--param", "row_size=2.5", "--param", "exit_time=14:00"],
        ),
        ("modelled", {}, ["--fill", "modelled"]),
    ],
)
def test_a_run_stores_what_the_shell_command_prints(user, history_dir, fill, params, cli):
    run = start(user, fill=fill, parameters=params)
    assert services.execute_run(run.pk) == "done"
    run.refresh_from_db()
    expected = shell("ib_breakout", "--from", "2024-03-01", "--to", "2024-03-31", *cli)
    assert run.metrics == expected["metrics"]
    stored = [{k: v for k, v in t.items() if k != "profile_at_entry"} for t in run.trades]
    assert json.loads(json.dumps(stored)) == expected["trades"]
    assert expected["metrics"]["trades"] > 0
    assert (run.sessions_done, run.sessions_total) == (6, 6)
    assert len(run.session_summaries) == 6 and {"open_type", "day_type", "value_relation"} <= set(
        run.session_summaries[0]
    )
    assert all(t["profile_at_entry"]["tpo_counts"] for t in run.trades)
    assert run.equity[-1][1] == pytest.approx(expected["metrics"]["net_pnl"], abs=0.006)


def test_costs_off_reports_gross_as_net(user, history_dir):
    on, off = start(user, fill="modelled"), start(user, fill="modelled", costs=False)
    services.execute_run(on.pk)
    services.execute_run(off.pk)
    on.refresh_from_db()
    off.refresh_from_db()
    assert on.metrics["costs"] > 0 and off.metrics["costs"] == 0
    assert off.metrics["net_pnl"] == off.metrics["gross_pnl"] == on.metrics["gross_pnl"]


def test_a_cancel_requested_while_running_stops_before_the_next_session(user, history_dir, monkeypatch):
    run = start(user)
    real_load = services.load_series

    def load_then_cancel(*args):
        # the user presses Cancel while the worker loads the data
        BacktestRun.objects.filter(pk=run.pk).update(cancel_requested=True)
        return real_load(*args)

    monkeypatch.setattr(services, "load_series", load_then_cancel)
    assert services.execute_run(run.pk) == "cancelled"
    run.refresh_from_db()
    assert run.sessions_done == 0 and run.sessions_total == 6 and run.metrics == {} and run.finished_at


def test_a_queued_run_cancelled_never_runs(user, history_dir):
    run = services.request_cancel(start(user))
    assert run.state == "cancelled"
    assert services.execute_run(run.pk) == "cancelled"
    run.refresh_from_db()
    assert run.started_at is None and run.sessions_total == 0


def test_a_failing_run_is_marked_failed_with_its_reason(user, history_dir):
    run = start(user, start=date(2020, 1, 1), end=date(2020, 1, 31))
    assert services.execute_run(run.pk) == "failed"
    run.refresh_from_db()
    assert "no candles" in run.error


def test_sweep_combinations_cover_the_grid():
    combos = services.sweep_combinations({"a": [1, 2], "b": ["x", "y", "z"]})
    assert len(combos) == 6 and combos[0] == {"a": 1, "b": "x"} and combos[-1] == {"a": 2, "b": "z"}


def test_eta_and_throttled_progress_with_cancel():
    assert (
        eta_seconds(10.0, 0, 10) is None and eta_seconds(10.0, 5, 10) == 10.0 and eta_seconds(3, 10, 10) == 0
    )
    now = [0.0]
    reports: list[tuple] = []
    flag = {"cancel": False}
    progress = SessionProgress(4, lambda *r: reports.append(r), lambda: flag["cancel"], clock=lambda: now[0])
    on_session = progress.instrument(0)
    on_session(0)
    now[0] = 0.1
    on_session(1)  # within the throttle interval: not reported
    now[0] = 1.0
    on_session(2)
    assert reports == [(0, 4, None), (2, 4, 1.0)]
    flag["cancel"] = True
    with pytest.raises(RunCancelled):
        on_session(3)
    on_session(4)  # the end is always reported and never cancelled
    assert reports[-1] == (4, 4, 0.0)


def test_observed_series_reports_each_session_to_the_runner():
    day_ms = 86_400_000
    base = 1_709_523_900_000  # 2024-03-04 09:15 IST
    ts = [base, base + 60_000, base + day_ms, base + 2 * day_ms]
    series = CandleSeries("K", ts, [1.0] * 4, [1.0] * 4, [1.0] * 4, [1.0] * 4, [0] * 4)
    seen: list[int] = []
    observed = ObservedSeries.of(series, seen.append)
    days = [d for d, _, _ in observed.session_bounds()]
    assert seen == [0, 1, 2, 3] and len(days) == 3 and observed.ts_ms is series.ts_ms


def test_a_redelivered_task_restarts_its_run_but_never_another_tasks(user, history_dir):
    lost = start(user)
    BacktestRun.objects.filter(pk=lost.pk).update(state="running", task_id="task-1", sessions_done=3)
    assert services.execute_run(lost.pk, task_id="task-1") == "done"
    busy = start(user)
    BacktestRun.objects.filter(pk=busy.pk).update(state="running", task_id="task-2", sessions_done=3)
    assert services.execute_run(busy.pk, task_id="task-3") == "running"
    busy.refresh_from_db()
    assert busy.sessions_done == 3 and busy.metrics == {}
    BacktestRun.objects.filter(pk=busy.pk).update(cancel_requested=True)
    assert services.execute_run(busy.pk, task_id="task-2") == "cancelled"


def test_several_instruments_run_one_after_another_into_one_report(user, history_dir):
    from tests.strategies.backtests.conftest import make_history, trading_days, write_history

    bank = "NSE_INDEX|Nifty Bank"
    write_history(history_dir, make_history(trading_days(date(2024, 3, 4), 6), seed=11, key=bank))
    both = start(user, instruments=["NSE_INDEX|Nifty 50", bank])
    services.execute_run(both.pk)
    both.refresh_from_db()
    singles = []
    for key in ("NSE_INDEX|Nifty 50", bank):
        run = start(user, instruments=[key])
        services.execute_run(run.pk)
        run.refresh_from_db()
        singles.append(run)
    assert both.state == "done" and (both.sessions_done, both.sessions_total) == (12, 12)
    assert both.metrics["trades"] == sum(r.metrics["trades"] for r in singles)
    assert both.metrics["net_pnl"] == pytest.approx(sum(r.metrics["net_pnl"] for r in singles), abs=1e-6)
    assert [t["entry_ts"] for t in both.trades] == sorted(t["entry_ts"] for t in both.trades)
    assert {s["instrument_key"] for s in both.session_summaries} == {"NSE_INDEX|Nifty 50", bank}


def test_a_tick_run_feeds_the_recorded_ticks_through_the_runner(user, tmp_path, settings):
    import random

    from feeds.ticks import Tick
    from persistence.writer import HistoryWriter
    from strategies.backtest.data import series_from_table, ticks_from_table
    from strategies.backtest.runner import run_backtest
    from strategies.library import get_strategy
    from tests.strategies.backtests.conftest import NIFTY, make_history, trading_days

    days = trading_days(date(2024, 3, 4), 4)
    candles = make_history(days, seed=5).to_pylist()
    rng = random.Random(1)
    ticks = []
    for c in candles:  # four ticks a minute inside each candle's range: open, two inside, close
        inside = [round(rng.uniform(c["low"], c["high"]) * 20) / 20 for _ in range(2)]
        for k, price in enumerate([c["open"], *inside, c["close"]]):
            ticks.append(Tick(NIFTY, c["ts_ms"] + 15_000 * k, price, ltq=50))
    root = tmp_path / "history"
    with HistoryWriter(root, flush_interval=None) as writer:
        writer.write_ticks(ticks)
    settings.HISTORY_DIR = root

    run = start(user, strategy="look_above_fail", source="ticks")
    assert services.execute_run(run.pk) == "done", BacktestRun.objects.get(pk=run.pk).error
    run.refresh_from_db()
    from persistence.readers import read_candles_1m, read_ticks

    series = series_from_table(read_candles_1m(NIFTY, days[0], days[-1]), NIFTY)
    direct = run_backtest(
        get_strategy("look_above_fail"),
        series,
        ticks=ticks_from_table(read_ticks(NIFTY, days[0], days[-1]), NIFTY),
    )
    assert run.metrics == direct.metrics and run.sessions_total == 4
    assert len(direct.trades) > 0
    assert [t["entry_ts"] for t in run.trades] == [t.as_dict()["entry_ts"] for t in direct.trades]


def option_candles(keys_by_day: dict, base: float = 100.0):
    """1-minute candles 09:15..15:29 of each contract on its days: open = base + 0.5 x minute index."""
    import pyarrow as pa

    from tests.strategies.backtests.conftest import IST

    rows = []
    for day, keys in keys_by_day.items():
        t0 = int(datetime.combine(day, time(9, 15), IST).timestamp() * 1000)
        for key in keys:
            for i in range(375):
                o = base + 0.5 * i
                rows.append(
                    {
                        "instrument_key": key,
                        "ts_ms": t0 + 60_000 * i,
                        "open": o,
                        "high": o + 1,
                        "low": o - 1,
                        "close": o + 0.25,
                    }
                )
    return pa.Table.from_pylist(rows)


def test_recorded_fill_prices_options_from_the_history_store(user, history_dir):
    from persistence.writer import HistoryWriter

    modelled = start(user, fill="modelled")  # which contracts the strategy trades
    services.execute_run(modelled.pk)
    modelled.refresh_from_db()
    keys_by_day: dict = {}
    for t in modelled.trades:
        day = date.fromisoformat(t["entry_ts"][:10])
        keys_by_day.setdefault(day, set()).add(t["option"]["contract"]["instrument_key"])
    first_day = min(keys_by_day)
    with HistoryWriter(history_dir, flush_interval=None) as writer:
        writer.write_candles(option_candles({first_day: keys_by_day[first_day]}))

    partial = start(user, fill="recorded")  # option prices for the first day only: fails, naming one
    assert services.execute_run(partial.pk) == "failed"
    partial.refresh_from_db()
    assert "no recorded price of NIFTY" in partial.error

    with HistoryWriter(history_dir, flush_interval=None) as writer:
        writer.write_candles(option_candles({d: k for d, k in keys_by_day.items() if d != first_day}))
    recorded = start(user, fill="recorded")
    assert services.execute_run(recorded.pk) == "done", recorded.error
    recorded.refresh_from_db()
    assert recorded.metrics["trades"] == modelled.metrics["trades"] > 0
    for t in recorded.trades:
        leg = t["option"]
        assert leg["premiums"] == "traded"
        entry_minute = (int(t["entry_ts"][11:13]) * 60 + int(t["entry_ts"][14:16])) - (9 * 60 + 15)
        exit_minute = (int(t["exit_ts"][11:13]) * 60 + int(t["exit_ts"][14:16])) - (9 * 60 + 15)
        # the open of the order's minute, plus (buy) or minus (sell) the paper broker's slippage
        assert Decimal(leg["entry_premium"]) == Decimal(str(100 + 0.5 * entry_minute)) + Decimal("0.05")
        assert Decimal(leg["exit_premium"]) == Decimal(str(100 + 0.5 * exit_minute)) - Decimal("0.05")
