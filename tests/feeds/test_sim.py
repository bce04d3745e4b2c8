"""The simulated auction (feeds.sim): deterministic per date, shaped like an auction."""

import asyncio
import math
import time
from datetime import date, timedelta
from datetime import time as dtime

import pytest

from feeds import contracts, sim, universe
from feeds.sources import CLOSED, OPEN, PRE_OPEN

DAY = date(2025, 12, 1)


def _trading_days(start: date, n: int) -> list[date]:
    out, d = [], start
    while len(out) < n:
        if contracts.is_trading_day(d):
            out.append(d)
        d += timedelta(days=1)
    return out


def test_same_date_same_ticks_other_date_differs():
    a = list(sim.SimSession(DAY).ticks(0, 120))
    b = list(sim.SimSession(DAY).ticks(0, 120))
    c = list(sim.SimSession(date(2025, 12, 2)).ticks(0, 120))
    assert len(a) > 1000
    assert a == b
    assert [t.ltp for t in a[:50]] != [t.ltp for t in c[:50]]


def test_instrument_subset_does_not_change_an_instruments_ticks():
    full = sim.SimSession(DAY)
    fut = universe.near_future(full.master, "NIFTY")["instrument_key"]
    only = sim.SimSession(DAY, instruments=[fut])
    mine = [t for t in full.ticks(0, 300) if t.instrument_key == fut]
    assert mine == list(only.ticks(0, 300))


def test_session_clock_and_close_chain():
    s = sim.SimSession(DAY, instruments=["NSE_INDEX|Nifty 50"])
    ticks = list(s.ticks())
    open_ms, close_ms = (int(x.timestamp() * 1000) for x in contracts.session_bounds(DAY))
    assert open_ms <= ticks[0].ts_ms < open_ms + 1000
    assert close_ms - 1000 <= ticks[-1].ts_ms < close_ms
    assert all(a.ts_ms < b.ts_ms for a, b in zip(ticks, ticks[1:], strict=False))
    assert 22_000 <= len(ticks) <= sim.SESSION_SECONDS  # about one index tick a second
    # Yesterday's simulated close is today's previous close.
    prev = contracts.previous_trading_day(DAY)
    assert ticks[0].close_prev == sim.index_path("NIFTY", prev)[-1] == sim.day_plan("NIFTY", prev).close


def test_sessions_have_an_ib_some_extend_some_trend():
    days = _trading_days(date(2025, 1, 1), 40)
    stats = {"ext15": 0, "inside": 0, "trend": 0, "types": set()}
    for d in days:
        for symbol in sim.UNDERLYINGS:
            path = sim.index_path(symbol, d)
            ib = path[: sim.IB_SECONDS]
            ibh, ibl, high, low, close = max(ib), min(ib), max(path), min(path), path[-1]
            ibr, dr = ibh - ibl, high - low
            assert ibr > 0.001 * path[0], "every day builds an initial balance"
            stats["ext15"] += dr > 1.5 * ibr
            stats["inside"] += high <= ibh + 0.01 * ibr and low >= ibl - 0.01 * ibr
            # Trend: a wide day closing in its outer 20%.
            stats["trend"] += dr > 2 * ibr and min(close - low, high - close) < 0.2 * dr
            stats["types"].add(sim.day_plan(symbol, d).day_type)
    n = 2 * len(days)
    assert 0.3 * n <= stats["ext15"] <= 0.95 * n
    assert stats["inside"] >= 0.02 * n
    assert stats["trend"] >= 0.1 * n
    assert stats["types"] == set(sim.DAY_TYPES)


def test_opening_types_match_the_plan():
    """An open drive never goes far against the open; a rejection-reverse goes against, then through."""
    seen = set()
    for d in _trading_days(date(2025, 3, 1), 60):
        plan = sim.day_plan("NIFTY", d)
        a = [plan.direction * (p - plan.open) for p in sim.index_path("NIFTY", d)[:1800]]
        adverse, favourable = -min(a), max(a)
        if plan.open_type == "open_drive":
            assert adverse <= 0.12 * plan.ib_range and favourable >= 0.45 * plan.ib_range
        elif plan.open_type == "open_rejection_reverse":
            assert adverse >= 0.25 * plan.ib_range and a[-1] > 0
        seen.add(plan.open_type)
    assert seen == set(sim.OPEN_TYPES)


def test_option_premiums_are_sane_and_parity_holds():
    s = sim.SimSession(DAY)
    plan = s.plans["NIFTY"]
    expiry = contracts.nearest_expiry("NIFTY", DAY)
    ts = s.open_ms + 3_600_000
    spot = sim.index_path("NIFTY", DAY)[3600]
    strikes = [universe.atm_strike("NIFTY", spot) + i * 50 for i in range(-6, 7)]
    ce = [sim.option_premium(plan, spot, k, expiry, "CE", ts) for k in strikes]
    pe = [sim.option_premium(plan, spot, k, expiry, "PE", ts) for k in strikes]
    assert all(p > 0 for p in ce + pe)
    assert all(a > b for a, b in zip(ce, ce[1:], strict=False))
    assert all(a < b for a, b in zip(pe, pe[1:], strict=False))
    years = contracts.time_to_expiry_years(ts, expiry)
    for k, c, p in zip(strikes, ce, pe, strict=True):
        parity = spot * math.exp(-sim.DIVIDEND_YIELD * years) - k * math.exp(-sim.RISK_FREE * years)
        # Skew makes call and put IVs differ a little; parity must still hold within a few points.
        assert abs((c - p) - parity) < 0.002 * spot


def test_option_and_future_ticks():
    s = sim.SimSession(DAY)
    ticks = list(s.ticks(1800, 2400))
    rows = s.rows
    path = sim.index_path("NIFTY", DAY)
    by_kind: dict[str, list] = {}
    for t in ticks:
        by_kind.setdefault(rows[t.instrument_key]["instrument_type"], []).append(t)
    assert set(by_kind) == {"INDEX", "FUT", "CE", "PE"}
    for t in by_kind["CE"] + by_kind["PE"] + by_kind["FUT"]:
        assert t.ltp > 0 and t.bid <= t.ltp <= t.ask and t.ltq % rows[t.instrument_key]["lot_size"] == 0
        assert t.volume > 0 and t.oi > 0
    nifty_fut = universe.near_future(s.master, "NIFTY")["instrument_key"]
    fut = [t for t in by_kind["FUT"] if t.instrument_key == nifty_fut]
    assert len(fut) > 600  # a few trades a second
    assert all(a.volume < b.volume for a, b in zip(fut, fut[1:], strict=False))
    # Futures trade at a premium to spot: the cost of carry to the real expiry.
    basis = [t.ltp - path[(t.ts_ms - s.open_ms) // 1000] for t in fut]
    expected = sim.carry_basis(path[2000], universe.expiry_date(s.rows[nifty_fut]), s.open_ms + 2_000_000)
    assert expected > 0
    assert abs(sum(basis) / len(basis) - expected) < 0.25 * expected + 5


def test_not_a_trading_day():
    with pytest.raises(ValueError, match="not an NSE trading day"):
        sim.SimSession(date(2025, 12, 25))
    with pytest.raises(ValueError, match="unknown instrument"):
        sim.SimSession(DAY, instruments=["NSE_FO|1"])


class ListSink:
    def __init__(self) -> None:
        self.ticks: list = []
        self.states: list[str] = []

    def put(self, ticks) -> None:
        self.ticks.extend(ticks)

    def set_status(self, **fields) -> None:
        if "session_state" in fields:
            self.states.append(fields["session_state"])


def test_source_slice_flat_out_and_paced():
    src = sim.SimSource(
        DAY, speed=1000, instruments=["NSE_INDEX|Nifty 50"], start=dtime(11, 0), end=dtime(11, 10)
    )
    sink = ListSink()
    asyncio.run(src.run(sink))
    assert sink.states == [PRE_OPEN, OPEN, CLOSED]
    start_ms = int(contracts.session_bounds(DAY)[0].timestamp() * 1000) + 6300 * 1000
    assert len(sink.ticks) == 600
    assert start_ms <= sink.ticks[0].ts_ms and sink.ticks[-1].ts_ms < start_ms + 600_000
    # Speed 50: 10 simulated seconds take at least ~0.18 s of wall time.
    paced = sim.SimSource(
        DAY, speed=50, instruments=["NSE_INDEX|Nifty 50"], start=dtime(11, 0), end=dtime(11, 0, 10)
    )
    t0 = time.monotonic()
    asyncio.run(paced.run(ListSink()))
    assert time.monotonic() - t0 >= 0.17
