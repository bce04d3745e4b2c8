"""The engine over real sessions from /work/shared/data (../shared/data from the project root):
every 1-minute session of each index file, incremental and batch, against the invariants.
Skips with a message when the files are absent (a fresh clone)."""

from pathlib import Path

import pytest
from django.conf import settings

from strategies.engine import (
    AuctionEngine,
    DayType,
    OpenType,
    compute_session,
    compute_sessions,
    params_for,
    value_area,
)
from strategies.engine.batch import split_sessions
from strategies.engine.loading import load_file

DATA = Path(settings.BASE_DIR).parent / "shared" / "data"
FILES = {
    "nifty50_1m_2024-01_2024-04.parquet": "NSE_INDEX|Nifty 50",
    "niftybank_1m_2024-01_2024-04.parquet": "NSE_INDEX|Nifty Bank",
}


def _load(name: str, key: str):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real market data not present at {path} (see /work/shared/data/README.md)")
    return load_file(path, key)


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_real_session_through_the_engine(name):
    key = FILES[name]
    params = params_for(key)
    candles = _load(name, key)
    states = compute_sessions(candles, params)
    assert len(states) == 77
    days = split_sessions(candles)
    tpu = params.ticks_per_unit
    prior = None
    naked: list[float] = []
    ibrs: list[float] = []
    ranges: list[float] = []
    for day, batch in zip(days, states, strict=True):
        # Incremental, candle by candle, with what the batch carried into the day.
        engine = AuctionEngine(
            params,
            prior=prior,
            naked_pocs=naked,
            avg_ibr=sum(ibrs[-20:]) / len(ibrs[-20:]) if ibrs else None,
            avg_daily_range=sum(ranges[-20:]) / len(ranges[-20:]) if ranges else None,
        )
        for i in range(len(day)):
            engine.on_candle(day.ts_ms[i], day.open[i], day.high[i], day.low[i], day.close[i])
        live = engine.state()
        assert live == batch, batch.session_date

        # Range, letters, IB.
        assert batch.high == round(max(day.high) * tpu) / tpu and batch.low == round(min(day.low) * tpu) / tpu
        assert [p[0] for p in batch.periods] == list("ABCDEFGHIJKLM")
        a, b = batch.periods[0], batch.periods[1]
        assert batch.ibh == max(a[2], b[2]) and batch.ibl == min(a[1], b[1]) and batch.ib_complete
        # TPOs: every period adds one per row it spans, nothing else.
        spans = sum(int(h // params.row_size) - int(lo // params.row_size) + 1 for _, lo, h in batch.periods)
        assert sum(batch.tpo_counts.values()) == spans
        # POC inside value; value reaches 70%.
        rows = sorted(batch.tpo_counts)
        counts = [batch.tpo_counts[r] for r in rows]
        assert batch.val <= batch.poc <= batch.vah
        lo, hi = value_area(counts, rows.index(batch.poc))
        assert (rows[lo], rows[hi]) == (batch.val, batch.vah)
        assert 100 * sum(counts[lo : hi + 1]) >= 70 * sum(counts)
        # Judgements are made, final at the close; naked POCs really untouched today.
        assert batch.open_type != OpenType.UNDETERMINED
        assert batch.day_type != DayType.UNDETERMINED and batch.day_type_final
        assert all(not batch.low <= p <= batch.high for p in batch.naked_pocs)
        assert (batch.value_relation is None) == (prior is None)

        prior = batch.to_prior()
        naked = [*batch.naked_pocs, batch.poc]
        ibrs.append(batch.ibr)
        ranges.append(batch.high - batch.low)


def test_real_ticks_batch_path_equals_tick_by_tick():
    name = "nifty50_ticks_1s_2022-08_2022-10.parquet"
    ticks = _load(name, "NSE_INDEX|Nifty 50")
    params = params_for("NSE_INDEX|Nifty 50")
    states = compute_sessions(ticks, params, final=None)
    assert len(states) == 29
    for day, batch in list(zip(split_sessions(ticks), states, strict=True))[:5]:
        one = AuctionEngine(params, prior=batch.prior, naked_pocs=[])
        bulk = AuctionEngine(params, prior=batch.prior, naked_pocs=[])
        for t, p in zip(day.ts_ms, day.price, strict=True):
            one.on_tick(t, p)
        bulk.on_ticks(day.ts_ms, day.price)
        assert one.state() == bulk.state()
        assert one.state().tpo_counts == batch.tpo_counts and one.state().poc == batch.poc


def test_developing_values_after_every_real_candle_match_batch_on_the_data_so_far():
    key = "NSE_INDEX|Nifty Bank"
    params = params_for(key)
    days = split_sessions(_load("niftybank_1m_2024-01_2024-04.parquet", key))
    for day in (days[0], days[30], days[-1]):
        engine = AuctionEngine(params)
        for i in range(len(day)):
            engine.on_candle(day.ts_ms[i], day.open[i], day.high[i], day.low[i], day.close[i])
            assert engine.state() == compute_session(day.slice(0, i + 1), params), (day.ts_ms[i], i)


def test_futures_trades_volume_profile_maps_onto_spot():
    """2022-11-18: every Nifty near-month futures trade builds a volume profile (conserved), which
    lands inside the spot day's range once moved through the basis (future − spot ≈ +47)."""
    import duckdb

    from strategies.engine import Ticks, shift_to_spot
    from strategies.engine.params import session_bounds_ms

    path = DATA / "fo_trades_2022-11-18.parquet"
    if not path.exists():
        pytest.skip(f"real market data not present at {path}")
    rows = duckdb.sql(
        f"SELECT epoch_ms(ts) AS t, price, qty FROM '{path}' "
        "WHERE underlying = 'NIFTY' AND instrument_type = 'FUT' ORDER BY t"
    ).fetchall()
    params = params_for("NSE_FO|NIFTY22NOVFUT")
    future = compute_session(Ticks([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]), params)
    open_ms, close_ms = session_bounds_ms(future.session_date, params)
    assert sum(future.volume_by_row.values()) == sum(q for t, _, q in rows if open_ms <= t < close_ms)

    spot_ticks = _load("nifty50_ticks_1s_2022-08_2022-10.parquet", "NSE_INDEX|Nifty 50")
    spot = [s for s in compute_sessions(spot_ticks, params) if s.session_date == future.session_date][0]
    basis = future.last - spot.last
    assert 20 < basis < 80
    on_spot = shift_to_spot(future.volume_by_row, basis, params)
    assert sum(on_spot.values()) == sum(future.volume_by_row.values())
    vpoc = max(on_spot, key=on_spot.get)
    assert spot.low - params.row_size <= vpoc <= spot.high
