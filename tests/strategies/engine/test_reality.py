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
