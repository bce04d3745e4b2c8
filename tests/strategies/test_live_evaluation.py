"""LiveStrategy, the in-memory evaluator: on ticks it decides exactly as the backtest runner does
on the 1-minute candles of those ticks (same engine, strategy and session handling), and turns
decisions into option orders with stable ids."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest

from feeds import contracts
from feeds.sim import SimSession
from strategies.backtest.data import CandleSeries
from strategies.backtest.runner import run_backtest
from strategies.base import session_date_of
from strategies.engine import params_for, session_bounds_ms
from strategies.library import REGISTRY
from strategies.live.evaluation import CandleBuilder, LiveOrder, LiveSignal, LiveStrategy, client_order_id

NIFTY = "NSE_INDEX|Nifty 50"


def sim_days(first: date, count: int) -> list[date]:
    days, d = [], first
    while len(days) < count:
        if contracts.is_trading_day(d):
            days.append(d)
        d = date.fromordinal(d.toordinal() + 1)
    return days


@pytest.fixture(scope="module")
def ticks():
    return [t for day in sim_days(date(2025, 11, 3), 4) for t in SimSession(day, [NIFTY]).ticks()]


def candles_of(ticks) -> CandleSeries:
    builder, out = CandleBuilder(), []
    for t in ticks:
        open_ms, close_ms = session_bounds_ms(session_date_of(t.ts_ms), params_for(NIFTY))
        if open_ms <= t.ts_ms < close_ms:
            done = builder.add(t.ts_ms, t.ltp, t.ltq)
            if done is not None and (not out or out[-1].ts_ms != done.ts_ms):
                out.append(done)
    out.append(builder.take())
    columns = list(zip(*out, strict=True))
    return CandleSeries(NIFTY, *map(list, columns))


@pytest.mark.parametrize("slug", sorted(REGISTRY))
def test_live_decides_as_the_backtest_does_on_the_same_candles(ticks, slug):
    live = LiveStrategy(slug, REGISTRY[slug], [NIFTY])
    # Fed in uneven batches, as claim checks arrive.
    events, entries = [], [(f"{1000 + i}-0", t) for i, t in enumerate(ticks)]
    for start in range(0, len(entries), 997):
        events += live.on_ticks(NIFTY, entries[start : start + 997])
    backtest = run_backtest(REGISTRY[slug], candles_of(ticks))
    live_signals = [e.signal for e in events if isinstance(e, LiveSignal)]
    assert [(s.ts_ms, s.side, s.kind, s.price, s.stop, s.target) for s in live_signals] == [
        (s.ts_ms, s.side, s.kind, s.price, s.stop, s.target) for s in backtest.signals
    ]
    orders = [e for e in events if isinstance(e, LiveOrder)]
    entries_ = [s for s in live_signals if s.kind == "entry"]
    assert len(orders) == 2 * len(entries_)
    for order in orders:
        assert order.fill is not None and order.premium_source == "modelled"
        assert order.quantity == 75 and order.contract.option_type in ("CE", "PE")
        assert re.fullmatch(r"[EXQ][0-9a-f]{19}", order.client_order_id)
    for entry, order in zip(entries_, orders[::2], strict=True):
        assert order.side == "buy" and order.contract.option_type == ("CE" if entry.side == "long" else "PE")
    # Positions and PnL are the last day's (the book starts again each day), all flat, in Decimal.
    last_day = session_date_of(ticks[-1].ts_ms)
    positions = live.positions()
    assert all(p["quantity"] == 0 for p in positions)
    today = [o for o in orders if session_date_of(o.ts_ms) == last_day]
    assert {p["instrument_key"] for p in positions} == {o.instrument_key for o in today}
    pnl = live.pnl(last_day)
    assert Decimal(pnl["realised"]) == sum((Decimal(p["realised"]) for p in positions), Decimal(0))
    assert Decimal(pnl["net"]) == Decimal(pnl["realised"]) - Decimal(pnl["charges"])


def test_candle_builder_completes_a_minute_on_the_next_minutes_first_tick():
    b = CandleBuilder()
    base = 1_764_653_400_000  # a minute boundary
    assert b.add(base + 1_000, 100.0, 1) is None
    assert b.add(base + 20_000, 101.5, 2) is None
    assert b.add(base + 40_000, 99.0, 3) is None
    assert b.add(base + 59_999, 100.5, 0) is None
    done = b.add(base + 60_000, 102.0, 1)
    assert tuple(done) == (base, 100.0, 101.5, 99.0, 100.5, 6)
    assert b.add(base + 30_000, 50.0, 1) is None  # late tick of a finished minute: ignored
    assert tuple(b.take()) == (base + 60_000, 102.0, 102.0, 102.0, 102.0, 1)


def test_client_order_ids_are_stable_broker_tags():
    a = client_order_id("ib", NIFTY, "1764653400123-4", "entry")
    assert a == client_order_id("ib", NIFTY, "1764653400123-4", "entry")
    assert a != client_order_id("ib", NIFTY, "1764653400123-4", "exit")
    assert a != client_order_id("ib2", NIFTY, "1764653400123-4", "entry")
    assert len(a) == 20 and re.fullmatch(r"[A-Za-z0-9_-]{1,20}", a)


def test_a_strategy_on_a_future_signals_but_buys_no_option():
    from feeds import universe

    day = date(2025, 12, 2)
    future = universe.near_future(SimSession(day).master, "NIFTY")["instrument_key"]
    ticks = list(SimSession(day, [future]).ticks())
    live = LiveStrategy("fut", REGISTRY["ib_breakout"], [future])
    events = live.on_ticks(future, [(f"{i + 1}-0", t) for i, t in enumerate(ticks)])
    assert [e.signal.kind for e in events if isinstance(e, LiveSignal)] == ["entry", "exit"]
    (refused,) = [e for e in events if isinstance(e, LiveOrder)]
    assert refused.quantity == 0 and refused.fill is None and "unknown underlying" in refused.rejected


def test_the_gate_decides_before_the_paper_book(ticks):
    """Every order asks the gate first: one it refuses never reaches the paper book (no fill, no
    position), so the exit signal of a refused entry makes no order at all."""
    asked = []

    def refuse_entries(order: LiveOrder) -> str:
        asked.append(order)
        assert order.fill is None and not order.rejected  # asked before the paper book saw it
        return "no entries today" if order.side == "buy" else ""

    live = LiveStrategy("ib_breakout", REGISTRY["ib_breakout"], [NIFTY], gate=refuse_entries)
    events = live.on_ticks(NIFTY, [(f"{1000 + i}-0", t) for i, t in enumerate(ticks)])
    orders = [e for e in events if isinstance(e, LiveOrder)]
    kinds = [e.signal.kind for e in events if isinstance(e, LiveSignal)]
    assert "entry" in kinds and "exit" in kinds
    assert orders and all(o.side == "buy" and o.rejected == "no entries today" for o in orders)
    assert all(o.fill is None for o in orders)
    assert [a.client_order_id for a in asked] == [o.client_order_id for o in orders]  # each asked once
    assert live.broker.positions() == [] and live.broker.fills == []
