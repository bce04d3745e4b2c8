"""Loading adapters (timestamp forms, column names), composites over days, volume nodes and the
futures→spot volume shift."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from strategies.engine import (
    ProfileParams,
    composite_of,
    compute_sessions,
    shift_to_spot,
    volume_nodes,
)
from strategies.engine.loading import MarketDataError, candles_from_arrow, load_file

from .sessions import DAY, at, candles_from_periods

KEY = "NSE_INDEX|Nifty 50"


def test_naive_csv_timestamps_are_ist_wall_time(tmp_path):
    path = tmp_path / "naive.csv"
    path.write_text(
        f"instrument_key,ts,ltp,ltq\n{KEY},{DAY} 09:15:00,100.0,4\n{KEY},{DAY} 09:16:30,101.0,6\n"
    )
    ticks = load_file(path, KEY)
    assert ticks.ts_ms == [at("09:15"), at("09:16", second=30)]
    assert ticks.qty == [4, 6]  # `ltq` is accepted as the quantity column


def test_integer_ms_and_tz_aware_parquet(tmp_path):
    path = tmp_path / "ms.parquet"
    pq.write_table(
        pa.table(
            {
                "instrument_key": [KEY, KEY, "OTHER"],
                "ts": [at("09:15"), at("09:16"), at("09:17")],
                "open": [1.0, 2.0, 3.0],
                "high": [1.0, 2.0, 3.0],
                "low": [1.0, 2.0, 3.0],
                "close": [1.0, 2.0, 3.0],
            }
        ),
        path,
    )
    candles = load_file(path, KEY)
    assert candles.ts_ms == [at("09:15"), at("09:16")] and candles.volume is None


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("{}")
    with pytest.raises(MarketDataError, match="unsupported input"):
        load_file(path, KEY)


def test_candles_from_arrow_timestamp_column():
    ts = pa.array([at("09:16"), at("09:15")], type=pa.int64()).cast(pa.timestamp("ms", tz="Asia/Kolkata"))
    table = pa.table(
        {"ts": ts, "open": [2.0, 1.0], "high": [2.0, 1.0], "low": [2.0, 1.0], "close": [2.0, 1.0]}
    )
    candles = candles_from_arrow(table)
    assert candles.ts_ms == [at("09:15"), at("09:16")] and candles.open == [1.0, 2.0]
    with pytest.raises(MarketDataError):
        candles_from_arrow(pa.table({"ts": ts, "open": [1.0, 2.0]}))


def test_composite_of_sessions_and_carry_over():
    from datetime import timedelta

    day1 = candles_from_periods([(100, 120, 100, 110), (110, 115, 105, 110)], DAY - timedelta(days=1))
    day2 = candles_from_periods([(110, 130, 110, 125), (125, 135, 120, 130)], DAY)
    joined = type(day1)(
        day1.ts_ms + day2.ts_ms,
        day1.open + day2.open,
        day1.high + day2.high,
        day1.low + day2.low,
        day1.close + day2.close,
    )
    states = compute_sessions(joined, ProfileParams())
    assert [s.session_date for s in states] == [DAY - timedelta(days=1), DAY]
    assert states[1].prior.poc == states[0].poc
    comp = composite_of(states)
    assert comp.counts[110.0] == states[0].tpo_counts[110.0] + states[1].tpo_counts[110.0]
    assert comp.val <= comp.poc <= comp.vah
    assert composite_of([]).poc is None


def test_volume_nodes():
    counts = [1, 2, 9, 2, 1, 0, 1, 2, 8, 3, 1]
    hvn, lvn = volume_nodes(counts, sensitivity=2)
    assert hvn == [2, 8]
    assert lvn == [5]


def test_futures_volume_moves_to_spot_through_the_basis():
    params = ProfileParams()
    assert shift_to_spot({18350.0: 10, 18355.0: 5}, 47.3, params) == {18300.0: 10, 18305.0: 5}
    assert shift_to_spot({18350.0: 10, 18355.0: 5}, 50.0, params) == {18300.0: 10, 18305.0: 5}
    assert sum(shift_to_spot({18350.0: 10, 18355.0: 5}, 2.0, params).values()) == 15
