"""ib_breakout: hand-made sessions for each rule, then agreement with an independent implementation
on generated sessions (and on the real 2024 Nifty sessions when /work/shared/data is present)."""

from __future__ import annotations

import random
from datetime import date, time
from fractions import Fraction
from pathlib import Path

import pytest

from strategies.base import ENTRY, EXIT, LONG, SHORT, Candle
from strategies.library import get_strategy
from strategies.library.ib_breakout import IBBreakout
from tests.strategies.library.drive import drive
from tests.strategies.library.ib_reference import reference_trades
from tests.strategies.library.sessions import (
    flat_fill,
    random_session,
    session_from_path,
    trading_days,
    ts_ms,
)

DAY = date(2024, 3, 12)
DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "nifty50_1m_2024-01_2024-04.parquet"


def ib(day=DAY, high=110.0, low=100.0) -> list[Candle]:
    """An IB of 100-110: A and B periods flat at 105, with one candle touching each extreme."""
    candles = flat_fill(day, "09:15", "10:15", 105.0)
    candles[3] = Candle(candles[3].ts_ms, 105, high, 105, 105)
    candles[40] = Candle(candles[40].ts_ms, 105, 105, low, 105)
    return candles


def run(candles, **params):
    _, trades = drive(IBBreakout("NSE_INDEX|Nifty 50", params), candles)
    return trades


def test_long_breakout_hits_target():
    c = ib()
    c += flat_fill(DAY, "10:15", "10:19", 108.0)
    c += session_from_path(DAY, [("10:19", 108, 115.5, 108, 115.0)])  # 5-min close 115 = IBH + 1 row
    c += session_from_path(DAY, [("10:20", 115, 119, 114, 118), ("10:21", 118, 121, 117, 120)])
    c += flat_fill(DAY, "10:22", "15:30", 120.0)
    trades = run(c)
    assert len(trades) == 1
    entry, exit_ = trades[0]
    assert (entry.side, entry.price, entry.stop, entry.target) == (LONG, 115.0, 105.0, 120.0)
    assert entry.ts_ms == ts_ms(DAY, "10:20")  # at the close of the 10:15 five-minute candle
    assert entry.facts["ibh"] == 110.0 and entry.facts["ibr"] == 10.0
    assert (exit_.price, exit_.ts_ms, exit_.facts["exit"]) == (120.0, ts_ms(DAY, "10:21"), "target")


def test_close_less_than_one_row_beyond_does_not_fire():
    c = ib()
    c += session_from_path(DAY, [("10:15", 110, 116, 110, 114.95)])  # a 1-min high beyond is not a close
    c += flat_fill(DAY, "10:16", "10:20", 114.95)
    c += flat_fill(DAY, "10:20", "15:30", 112.0)
    assert run(c) == []


def test_close_must_be_the_five_minute_close_not_a_one_minute_close():
    c = ib()
    c += session_from_path(DAY, [("10:15", 110, 116, 110, 116.0)])  # one-minute close beyond...
    c += flat_fill(DAY, "10:16", "10:20", 112.0)  # ...but the 5-minute candle closes at 112
    c += flat_fill(DAY, "10:20", "15:30", 112.0)
    assert run(c) == []


def test_breakout_before_1015_is_ignored_and_ib_includes_it():
    c = flat_fill(DAY, "09:15", "10:10", 105.0)
    c[0] = Candle(c[0].ts_ms, 105, 105, 100, 105)
    c += flat_fill(DAY, "10:10", "10:15", 130.0)  # inside [09:15, 10:15): part of the IB
    c += flat_fill(DAY, "10:15", "15:30", 134.0)  # IBH is 130 now: 134 < 135, no trade
    assert run(c) == []


def test_short_breakout_stop_at_ib_midpoint_and_stop_first_when_both_in_one_candle():
    c = ib()
    c += flat_fill(DAY, "10:15", "10:34", 100.0)
    c += session_from_path(DAY, [("10:34", 100, 100, 94, 95.0)])  # 10:30 candle closes 95 = IBL - row
    c += session_from_path(DAY, [("10:35", 95, 106, 89, 100)])  # both stop 105 and target 90 inside
    c += flat_fill(DAY, "10:36", "15:30", 100.0)
    ((entry, exit_),) = run(c)
    assert (entry.side, entry.price, entry.stop, entry.target) == (SHORT, 95.0, 105.0, 90.0)
    assert entry.ts_ms == ts_ms(DAY, "10:35")
    assert (exit_.price, exit_.facts["exit"], exit_.ts_ms) == (105.0, "stop", ts_ms(DAY, "10:35"))


def test_gap_through_stop_fills_at_the_open():
    c = ib()
    c += flat_fill(DAY, "10:15", "10:19", 112.0)
    c += session_from_path(DAY, [("10:19", 112, 116, 112, 116.0), ("10:20", 101, 102, 100, 101)])
    c += flat_fill(DAY, "10:21", "15:30", 101.0)
    ((entry, exit_),) = run(c)
    assert exit_.price == 101.0 and exit_.facts["exit"] == "stop"  # opened below the 105 stop


def test_gap_through_target_fills_at_the_open():
    c = ib()
    c += flat_fill(DAY, "10:15", "10:19", 112.0)
    c += session_from_path(DAY, [("10:19", 112, 116, 112, 116.0), ("10:20", 123, 124, 122, 123)])
    c += flat_fill(DAY, "10:21", "15:30", 123.0)
    ((_, exit_),) = run(c)
    assert (exit_.price, exit_.facts["exit"]) == (123.0, "target")


def test_square_off_at_exit_time_open_and_one_trade_a_day():
    c = ib()
    c += flat_fill(DAY, "10:15", "10:19", 112.0)
    c += session_from_path(DAY, [("10:19", 112, 116, 112, 116.0)])
    c += flat_fill(DAY, "10:20", "15:15", 117.0)
    c += session_from_path(DAY, [("15:15", 117.5, 118, 117, 117.5)])
    c += flat_fill(DAY, "15:16", "15:30", 140.0)  # would be a target, but after the square-off
    ((_, exit_),) = run(c)
    assert (exit_.price, exit_.ts_ms, exit_.facts["exit"]) == (117.5, ts_ms(DAY, "15:15"), "square-off")


def test_no_entry_on_five_minute_candle_starting_at_exit_time():
    c = ib()
    c += flat_fill(DAY, "10:15", "15:00", 108.0)
    c += flat_fill(DAY, "15:00", "15:30", 120.0)  # the 15:00 candle closes beyond
    assert len(run(c, exit_time="15:00")) == 0
    assert len(run(c, exit_time="15:05")) == 1


def test_zero_ibr_skips_the_day():
    c = flat_fill(DAY, "09:15", "10:15", 100.0) + flat_fill(DAY, "10:15", "15:30", 150.0)
    assert run(c) == []


def test_target_ibr_and_row_size_params_and_half_tick_levels():
    c = ib(high=110.05)  # IBR 10.05: mid 105.025 and 0.5 x IBR 5.025 fall between ticks
    c += flat_fill(DAY, "10:15", "10:19", 112.0)
    c += session_from_path(DAY, [("10:19", 112, 112.1, 112, 112.05)])  # IBH + 2 = one 2-point row
    c += session_from_path(DAY, [("10:20", 112, 115.05, 112, 115.0)])  # target 115.075 not reached
    c += session_from_path(DAY, [("10:21", 115, 115.1, 105.0, 105.0)])  # low 105.00 <= stop 105.025
    c += flat_fill(DAY, "10:22", "15:30", 105.0)
    assert run(c) == []  # 112.05 < IBH + 5
    ((entry, exit_),) = run(c, row_size=2, target_ibr=0.5)
    assert entry.target == pytest.approx(115.075) and entry.stop == pytest.approx(105.025)
    assert exit_.facts["exit"] == "stop" and exit_.price == pytest.approx(105.025)


def test_missing_last_minute_closes_the_five_minute_candle_on_the_next_bucket():
    c = ib()
    c += flat_fill(DAY, "10:15", "10:18", 112.0)
    c += session_from_path(DAY, [("10:18", 112, 116, 112, 116.0)])  # 10:19 missing: close 116
    c += session_from_path(DAY, [("10:20", 116, 121, 115, 120)])  # checked for exits too
    c += flat_fill(DAY, "10:21", "15:30", 120.0)
    ((entry, exit_),) = run(c)
    assert entry.ts_ms == ts_ms(DAY, "10:20") and entry.price == 116.0
    assert (exit_.ts_ms, exit_.price) == (ts_ms(DAY, "10:20"), 120.0)


def test_state_resets_between_sessions():
    d1, d2 = trading_days(DAY, 2)
    day = ib(d1) + flat_fill(d1, "10:15", "15:30", 116.0)
    day2 = ib(d2) + flat_fill(d2, "10:15", "15:30", 94.0)
    trades = run(day + day2)
    assert [e.side for e, _ in trades] == [LONG, SHORT]


def test_registry_and_signal_kinds():
    assert get_strategy("ib_breakout") is IBBreakout
    c = ib() + flat_fill(DAY, "10:15", "15:30", 116.0)
    signals, _ = drive(IBBreakout("k"), c)
    assert [s.kind for s in signals] == [ENTRY, EXIT]
    assert all(s.strategy == "ib_breakout" and s.instrument_key == "k" for s in signals)


def assert_same(candles, **params):
    _, trades = drive(IBBreakout("NSE_INDEX|Nifty 50", params), candles)
    ref = reference_trades(candles, **params)
    mine = [
        {
            "side": e.side,
            "entry_ts": e.ts_ms,
            "exit_ts": x.ts_ms,
            "entry_t": round(e.price * 20),
            "exit_t": x.price * 20,
        }
        for e, x in trades
    ]
    assert len(mine) == len(ref)
    for m, r in zip(mine, ref, strict=True):
        assert (m["side"], m["entry_ts"], m["exit_ts"], m["entry_t"]) == (
            r["side"],
            r["entry_ts"],
            r["exit_ts"],
            r["entry_t"],
        ), (m, r)
        assert abs(Fraction(m["exit_t"]) - r["exit_t"]) < Fraction(1, 1000), (m, r)
    return len(mine)


@pytest.mark.parametrize(
    "params",
    [{}, {"target_ibr": 0.5}, {"row_size": 10, "target_ibr": 1.5, "exit_time": time(14, 30)}],
)
def test_agrees_with_independent_implementation_on_generated_sessions(params):
    rng = random.Random(20240312 + len(params))
    candles = []
    for i, day in enumerate(trading_days(date(2024, 1, 1), 60)):
        candles += random_session(day, rng, vol=2 + (i % 7) * 1.5, drop=0.02 if i % 3 == 0 else 0.0)
    params = {k: v for k, v in params.items()}
    n = assert_same(candles, **params)
    assert n > 20  # the generator does produce breakouts


@pytest.mark.skipif(not DATA.exists(), reason=f"real data not present at {DATA}")
@pytest.mark.parametrize("params", [{}, {"target_ibr": 0.5}])
def test_agrees_with_independent_implementation_on_real_sessions(params):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(DATA).sort_by("ts")
    ts = pc.cast(table["ts"], "int64").to_pylist()  # microseconds since the epoch
    unit = 1000 if table.schema.field("ts").type.unit == "us" else 1
    cols = [table[n].to_pylist() for n in ("open", "high", "low", "close")]
    candles = [Candle(t // unit, o, h, lo, c) for t, o, h, lo, c in zip(ts, *cols, strict=True)]
    assert assert_same(candles, **params) > 20


def test_registry_lists_the_library():
    from strategies.library import REGISTRY

    assert set(REGISTRY) == {
        "ib_breakout",
        "eighty_percent",
        "va_acceptance",
        "open_drive",
        "look_above_fail",
    }
    for slug, cls in REGISTRY.items():
        assert cls.slug == slug and cls.title and cls.param_schema()
    with pytest.raises(KeyError, match="known: eighty_percent"):
        get_strategy("nope")
