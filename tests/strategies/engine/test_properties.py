"""Properties on generated sessions (hypothesis): incremental equals batch at every period boundary,
volume is conserved, the POC lies inside the value area, the value area reaches its target unless
the profile is exhausted, adding an update never shrinks a count."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategies.engine import (
    AuctionEngine,
    Candles,
    PriorSession,
    ProfileParams,
    Ticks,
    compute_session,
    poc_index,
    value_area,
)

from .sessions import DAY, at

OPEN_MS = at("09:15")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PARAMS = st.sampled_from(
    [ProfileParams(), ProfileParams(row_size=10.0), ProfileParams(row_size=0.5, va_method="one_row")]
)
PRIOR = st.sampled_from(
    [
        None,
        PriorSession(
            DAY.replace(day=11), high=20040, low=19950, close=20010, poc=20000, vah=20020, val=19980
        ),
    ]
)


@st.composite
def candle_sessions(draw, with_volume=True):
    """A session of 1-minute candles: hypothesis draws its shape (length, start, gaps, volatility,
    trend), a seeded generator draws the path, so long sessions with real drives are common."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    start = draw(st.sampled_from([0, 0, -20, 1]) | st.integers(-20, 380))
    count = draw(st.integers(1, 420))
    gap_pct = draw(st.sampled_from([0, 0, 10, 60]))
    vol = draw(st.sampled_from([5, 40, 150]))  # ticks per minute
    drift = draw(st.integers(-30, 30))
    volume = with_volume and draw(st.booleans())
    price = 20000 * 20 + rng.randint(-400, 400)
    ts, o, h, lo, c, v = [], [], [], [], [], []
    m = start
    for _ in range(count):
        if m > 390:
            break
        if rng.randrange(100) >= gap_pct:
            close = price + drift + rng.randint(-vol, vol)
            ts.append(OPEN_MS + m * 60_000)
            o.append(price / 20)
            c.append(close / 20)
            h.append((max(price, close) + rng.randint(0, vol)) / 20)
            lo.append((min(price, close) - rng.randint(0, vol)) / 20)
            v.append(rng.randint(0, 5000))
            price = close
        m += 1
    if not ts:
        ts, o, h, lo, c, v = [OPEN_MS], [100.0], [100.0], [100.0], [100.0], [1]
    return Candles(ts, o, h, lo, c, v if volume else None)


@st.composite
def tick_sessions(draw, max_count=3000):
    """Ticks at random instants (some before the open, some after the close), a random walk."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    count = draw(st.integers(1, max_count))
    start = draw(st.integers(-600_000, 22_000_000))
    spread = draw(st.sampled_from([60_000, 2_000_000, 23_500_000]))
    vol = draw(st.sampled_from([2, 20, 60]))
    drift = draw(st.sampled_from([-3, 0, 0, 3]))
    offsets = sorted(start + rng.randrange(spread) for _ in range(count))
    price = 20000 * 20
    prices, qtys = [], []
    for _ in offsets:
        price += drift + rng.randint(-vol, vol)
        prices.append(price / 20)
        qtys.append(rng.randint(0, 300))
    return Ticks([OPEN_MS + x for x in offsets], prices, qtys if draw(st.booleans()) else None)


def _boundaries(ts, params):
    """Indexes where a new period (or the close) starts: the engine is compared before them."""
    out = []
    prev = None
    for i, t in enumerate(ts):
        k = (t - OPEN_MS) // params.period_ms if OPEN_MS <= t else -1
        if k != prev:
            out.append(i)
        prev = k
    out.append(len(ts))
    return out


@SETTINGS
@given(candle_sessions(), PARAMS, PRIOR, st.sampled_from([None, 35.0]), st.sampled_from([None, 180.0]))
def test_incremental_equals_batch_at_every_period_boundary_candles(candles, params, prior, avg_ibr, adr):
    kwargs = dict(prior=prior, naked_pocs=[19990.0, 20100.0], avg_ibr=avg_ibr, avg_daily_range=adr)
    engine = AuctionEngine(params, **kwargs)
    fed = 0
    for boundary in _boundaries(candles.ts_ms, params):
        for i in range(fed, boundary):
            engine.on_candle(
                candles.ts_ms[i],
                candles.open[i],
                candles.high[i],
                candles.low[i],
                candles.close[i],
                candles.volume[i] if candles.volume else 0,
            )
        fed = boundary
        assert engine.state() == compute_session(candles.slice(0, boundary), params, **kwargs)


@SETTINGS
@given(tick_sessions(), PARAMS, PRIOR)
def test_incremental_equals_batch_at_every_period_boundary_ticks(ticks, params, prior):
    engine = AuctionEngine(params, prior=prior)
    fed = 0
    for boundary in _boundaries(ticks.ts_ms, params):
        for i in range(fed, boundary):
            engine.on_tick(ticks.ts_ms[i], ticks.price[i], ticks.qty[i] if ticks.qty else 0)
        fed = boundary
        assert engine.state() == compute_session(ticks.slice(0, boundary), params, prior=prior)
    # The batch fast path of the engine gives the same final state too.
    bulk = AuctionEngine(params, prior=prior)
    bulk.on_ticks(ticks.ts_ms, ticks.price, ticks.qty)
    assert bulk.state() == engine.state()


@SETTINGS
@given(candle_sessions(with_volume=True), PARAMS)
def test_volume_conserved_and_poc_inside_value(candles, params):
    state = compute_session(candles, params)
    if state.session_date is None:
        return
    open_ms, close_ms = OPEN_MS, OPEN_MS + 375 * 60_000
    expected = sum(
        v
        for t, v in zip(candles.ts_ms, candles.volume or [0] * len(candles), strict=True)
        if open_ms <= t < close_ms
    )
    assert sum(state.volume_by_row.values()) == expected
    assert state.val <= state.poc <= state.vah
    if state.volume_poc is not None:
        assert state.volume_val <= state.volume_poc <= state.volume_vah
    # Every TPO row lies inside the day's range and each period adds one TPO per row it spans.
    assert min(state.tpo_counts) <= state.low and max(state.tpo_counts) <= state.high
    assert max(state.tpo_counts.values()) <= len(state.periods)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=40),
    st.integers(1, 100),
    st.sampled_from(["two_row", "one_row"]),
)
def test_value_area_reaches_its_target_unless_exhausted(counts, percent, method):
    total = sum(counts)
    poc = poc_index(counts)
    va = value_area(counts, poc, percent, method)
    if total == 0:
        assert va is None and poc is None
        return
    lo, hi = va
    assert lo <= poc <= hi
    assert 100 * sum(counts[lo : hi + 1]) >= percent * total
    assert counts[poc] == max(counts)


@SETTINGS
@given(tick_sessions(max_count=400), PARAMS)
def test_adding_a_tick_never_shrinks_a_count(ticks, params):
    engine = AuctionEngine(params)
    before_tpo: dict[float, int] = {}
    before_vol: dict[float, int] = {}
    for i in range(len(ticks)):
        engine.on_tick(ticks.ts_ms[i], ticks.price[i], ticks.qty[i] if ticks.qty else 0)
        state = engine.state()
        assert all(state.tpo_counts.get(row, 0) >= n for row, n in before_tpo.items())
        assert all(state.volume_by_row.get(row, 0) >= n for row, n in before_vol.items())
        before_tpo, before_vol = state.tpo_counts, state.volume_by_row
