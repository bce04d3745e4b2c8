"""The incremental engine on constructed sessions: each opening type and day type, developing
values without look-ahead, naked POCs, session boundaries."""

import pytest

from strategies.engine import (
    AuctionEngine,
    Balance,
    DayType,
    OpenLocation,
    OpenType,
    PriorSession,
    ProfileParams,
    SessionRolled,
    Shape,
    ValueRelation,
)

from .sessions import DAY, at, period_start, run_periods

BASE = 22000.0


def open_type_of(path: list[float], **kwargs) -> tuple[OpenType, OpenType]:
    """(type during A, type after A) for a 1-minute path of prices in period A."""
    engine = AuctionEngine(ProfileParams(), **kwargs)
    for minute, offset in enumerate(path):
        engine.on_tick(at("09:15") + minute * 60_000, BASE + offset)
    during = engine.state().open_type
    engine.on_tick(at("09:45"), BASE + path[-1])
    return during, engine.state().open_type


# Default thresholds with 5-point rows: ε = 5, τ = 15, D = 20 points (no average range yet).
@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ([0, -1, 5, 12, 21, 25, 24], OpenType.OPEN_DRIVE_UP),
        ([0, 1, -6, -14, -22, -25, -24], OpenType.OPEN_DRIVE_DOWN),
        ([0, -5, -10, 0, 15, 25, 23], OpenType.OPEN_TEST_DRIVE_UP),
        ([0, 6, 12, 0, -15, -25, -21], OpenType.OPEN_TEST_DRIVE_DOWN),
        ([0, -10, -20, 0, 10, 25, 22], OpenType.OPEN_REJECTION_REVERSE_UP),
        ([0, 10, 20, 0, -10, -25, -22], OpenType.OPEN_REJECTION_REVERSE_DOWN),
        ([0, 8, -6, 4, -3, 1], OpenType.OPEN_AUCTION),
        ([0, 25, 2, -1], OpenType.OPEN_AUCTION),  # drove, but A closed back below the open
    ],
)
def test_opening_types_on_constructed_paths(path, kind):
    during, after = open_type_of(path)
    assert during == OpenType.UNDETERMINED
    assert after == kind


def test_open_drive_threshold_follows_the_average_daily_range():
    # With a 300-point average range, D = 20% = 60 points: a 25-point drive is only an auction.
    assert open_type_of([0, -1, 5, 12, 21, 25, 24], avg_daily_range=300.0)[1] == OpenType.OPEN_AUCTION
    assert open_type_of([0, -1, 30, 61, 58], avg_daily_range=300.0)[1] == OpenType.OPEN_DRIVE_UP


def test_candle_paths_give_the_opening_type():
    engine = AuctionEngine(ProfileParams())
    engine.on_candle(at("09:15"), BASE, BASE + 12, BASE - 1, BASE + 11)  # bullish: low first
    for m in range(1, 30):
        engine.on_candle(at("09:15") + m * 60_000, BASE + 11, BASE + 25, BASE + 10, BASE + 24)
    assert engine.state().open_type == OpenType.OPEN_DRIVE_UP


# Day types, one constructed session each (5-point rows, average IBR 40 where it matters).
DAY_TYPES = [
    (DayType.NORMAL, [(120, 140, 100, 125), (125, 135, 110, 120), (120, 143, 118, 120)]),
    (DayType.NON_TREND, [(104, 108, 100, 105), (105, 107, 101, 104), (104, 109, 102, 104)]),
    (DayType.NORMAL_VARIATION_UP, [(110, 130, 100, 120), (120, 128, 105, 125), (125, 155, 120, 150)]),
    (DayType.NEUTRAL_CENTER, [(110, 130, 100, 120), (120, 128, 105, 125), (125, 135, 95, 114)]),
    (
        DayType.NEUTRAL_EXTREME_UP,
        [(110, 130, 100, 120), (120, 128, 105, 125), (110, 120, 95, 110), (110, 140, 110, 139)],
    ),
    (
        DayType.TREND_UP,
        [
            (105, 115, 100, 112),
            (112, 120, 105, 118),
            (118, 130, 118, 129),
            (129, 140, 125, 139),
            (139, 150, 135, 149),
            (149, 160, 145, 158),
        ],
    ),
    (
        DayType.DOUBLE_DISTRIBUTION_UP,
        [
            (105, 115, 100, 112),
            (112, 120, 105, 118),
            (118, 130, 118, 129),
            (129, 160, 128, 159),
            (159, 170, 155, 169),
            (169, 175, 165, 174),
        ],
    ),
    (
        DayType.TREND_DOWN,
        [
            (155, 160, 145, 148),
            (148, 155, 140, 142),
            (142, 142, 130, 131),
            (131, 135, 120, 121),
            (121, 125, 110, 111),
            (111, 115, 100, 102),
        ],
    ),
]


@pytest.mark.parametrize(("kind", "periods"), DAY_TYPES, ids=[k for k, _ in DAY_TYPES])
def test_day_types_on_constructed_sessions(kind, periods):
    state = run_periods(periods, avg_ibr=40.0)
    assert state.day_type == kind
    assert not state.day_type_final


def test_day_type_is_undetermined_before_the_ib_and_final_at_the_close():
    engine = AuctionEngine(ProfileParams(), avg_ibr=40.0)
    engine.on_candle(period_start(0), 120, 140, 100, 125)
    assert engine.state().day_type == DayType.UNDETERMINED
    assert not engine.state().ib_complete
    engine.on_candle(period_start(1), 125, 135, 110, 120)
    engine.on_candle(period_start(2), 120, 143, 118, 120)
    assert engine.state().day_type == DayType.NORMAL
    engine.on_candle(at("15:29"), 120, 121, 119, 120)
    state = engine.state()
    assert state.day_type_final and state.period_letter == "M"


def test_trend_day_is_imbalance_and_normal_day_balance():
    trend = run_periods(DAY_TYPES[5][1], avg_ibr=40.0)
    normal = run_periods(DAY_TYPES[0][1], avg_ibr=40.0)
    assert trend.balance == Balance.IMBALANCE
    assert normal.balance == Balance.BALANCE
    dd = run_periods(DAY_TYPES[6][1], avg_ibr=40.0)
    assert dd.shape == Shape.DOUBLE and dd.single_prints == [(135.0, 150.0)]


@pytest.mark.parametrize(
    ("counts", "kind"),
    [
        ([1, 1, 2, 3, 4, 6, 5, 3], Shape.P),
        ([3, 5, 6, 4, 3, 2, 1, 1], Shape.B_LOWER),
        ([1, 2, 4, 6, 4, 2, 1], Shape.D),
        ([2, 3, 3, 1, 1, 1, 3, 4, 2], Shape.DOUBLE),
        ([1, 2, 2, 2, 2, 2, 2, 1], Shape.ELONGATED),
        ([], Shape.NONE),
    ],
)
def test_profile_shapes(counts, kind):
    from strategies.engine import poc_index, shape, single_print_zones

    runs = single_print_zones(counts, 1)
    longest = max((b - a + 1 for a, b in runs), default=0)
    assert shape(counts, poc_index(counts), longest) == kind


def test_developing_values_never_look_ahead():
    engine = AuctionEngine(ProfileParams())
    engine.on_tick(at("09:15"), 100.0)
    engine.on_tick(at("09:16"), 110.0)
    first = engine.state()
    assert (first.poc, first.high, first.low) == (105.0, 110.0, 100.0)
    engine.on_tick(at("09:45"), 200.0)  # a new period far away changes nothing already reported
    assert first.tpo_counts == {100.0: 1, 105.0: 1, 110.0: 1}
    assert engine.state().high == 200.0


def test_fast_path_keeps_last_price_and_clock_and_does_not_add_tpos():
    engine = AuctionEngine(ProfileParams())
    engine.on_tick(at("09:15"), 100.0)
    engine.on_tick(at("09:16"), 112.0)
    before = engine.state().tpo_counts
    engine.on_tick(at("09:17"), 104.95)
    state = engine.state()
    assert state.tpo_counts == before
    assert state.last == 104.95 and state.now_ms == at("09:17")


def test_tick_volume_goes_to_its_row():
    engine = AuctionEngine(ProfileParams())
    engine.on_tick(at("09:15"), 100.0, 10)
    engine.on_tick(at("09:16"), 104.95, 5)
    engine.on_tick(at("09:17"), 105.0, 7)
    assert engine.state().volume_by_row == {100.0: 15, 105.0: 7}
    assert engine.state().volume_poc == 100.0


def test_pre_open_ignored_post_close_makes_final_and_another_day_is_refused():
    engine = AuctionEngine(ProfileParams())
    engine.on_tick(at("09:05"), 50.0)
    engine.on_tick(at("09:15"), 100.0)
    engine.on_tick(at("10:20"), 101.0)
    assert engine.state().open == 100.0 and engine.state().low == 100.0
    engine.on_tick(at("15:31"), 500.0)
    assert engine.state().high == 101.0 and engine.state().day_type_final
    with pytest.raises(SessionRolled):
        engine.on_tick(at("09:15", DAY.replace(day=DAY.day + 1)), 100.0)


def test_prior_session_references_and_naked_pocs():
    prior = PriorSession(DAY.replace(day=11), high=150, low=80, close=120, poc=115, vah=130, val=100)
    engine = AuctionEngine(ProfileParams(), prior=prior, naked_pocs=[95.0, 115.0, 160.0])
    engine.on_candle(period_start(0), 140, 145, 112, 140)
    state = engine.state()
    assert state.open_location == OpenLocation.ABOVE_VALUE
    assert state.naked_pocs == [95.0, 160.0]  # 115 was touched
    assert state.value_relation == ValueRelation.OVERLAPPING_HIGHER  # value 110–145 vs 100–130
    nxt = engine.next_session()
    assert nxt.state().prior.poc == state.poc
    assert nxt.state().naked_pocs == [95.0, 160.0, state.poc]
