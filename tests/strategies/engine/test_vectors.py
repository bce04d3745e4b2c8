"""Every test vector of /work/shared/reference/amt.md, against the pure functions and the engine."""

import pytest

from strategies.engine import (
    AuctionEngine,
    DayType,
    OpenLocation,
    ProfileParams,
    ValueRelation,
    composite_profile,
    day_type,
    extension_levels,
    extremes,
    open_location,
    period_index_at,
    period_letter,
    poc_index,
    rotation_factors,
    row_of,
    single_print_zones,
    spread_candle_volume,
    value_area,
    value_relation,
)

from .sessions import at, run_periods

P = ProfileParams()


# §0 Session, clock, grid
@pytest.mark.parametrize(
    ("hhmm", "letter"),
    [
        ("09:44", "A"),
        ("09:45", "B"),
        ("10:14", "B"),
        ("10:15", "C"),
        ("15:14", "L"),
        ("15:15", "M"),
        ("15:29", "M"),
    ],
)
def test_period_letters(hhmm, letter):
    assert period_letter(period_index_at(at(hhmm), P)) == letter


def test_outside_the_session_has_no_period_and_a_day_has_13_letters():
    assert period_index_at(at("09:14"), P) is None
    assert period_index_at(at("15:30"), P) is None
    assert period_index_at(at("09:10"), P) is None  # pre-open is not part of the profile
    assert P.periods_per_session == 13
    assert period_letter(25) == "Z" and period_letter(26) == "a" and period_letter(51) == "z"


def test_absolute_row_grid():
    assert row_of(25004.95, P) == 25000
    assert row_of(25005.00, P) == 25005
    assert row_of(25004.95, ProfileParams(row_size=10.0)) == 25000


# §1 Profiles
def test_tpo_counts_distinct_periods_and_gaps_stay_zero():
    # A covers 100–112, B 105–110 (inside A), C gaps up to 125–125 (H = L marks one row).
    state = run_periods([(100, 112, 100, 110), (108, 110, 105, 106), (125, 125, 125, 125)])
    counts = state.tpo_counts
    assert counts[100.0] == 1 and counts[105.0] == 2 and counts[110.0] == 2
    assert counts[115.0] == 0 and counts[120.0] == 0  # rows inside the gap
    assert counts[125.0] == 1


def test_candle_volume_spread_example():
    # tick 0.05, 0.5-point rows: L 100.00, H 101.00, V 2100 → 1000 / 1000 / 100
    assert spread_candle_volume(2000, 2020, 2100, 10) == {200: 1000, 201: 1000, 202: 100}
    params = ProfileParams(row_size=0.5)
    engine = AuctionEngine(params)
    engine.on_candle(at("09:15"), 100.0, 101.0, 100.0, 100.5, 2100)
    assert engine.state().volume_by_row == {100.0: 1000, 100.5: 1000, 101.0: 100}


def test_candle_volume_is_conserved_when_it_does_not_divide():
    spread = spread_candle_volume(1, 37, 1001, 7)
    assert sum(spread.values()) == 1001
    assert max(spread.values()) - min(v for k, v in spread.items() if k not in (0, 5)) <= 1


# §2 Point of control
@pytest.mark.parametrize(
    ("counts", "poc"), [([3, 1, 2, 3, 2, 1], 3), ([1, 5, 5, 1], 1), ([2, 5, 5, 1], 1), ([1, 5, 5, 2], 2)]
)
def test_poc_tie_rules(counts, poc):
    assert poc_index(counts) == poc


def test_poc_of_nothing():
    assert poc_index([]) is None and poc_index([0, 0]) is None


# §3 Value area
@pytest.mark.parametrize(
    ("counts", "two_row", "one_row"),
    [
        ([1, 2, 8, 3, 10, 4, 1, 6, 1], (2, 6), (1, 5)),
        ([2, 6, 6, 3, 9, 5, 1, 1, 4, 4], (0, 6), (1, 5)),
        ([5, 1, 1, 8, 12, 7, 2, 2, 2], (2, 6), (3, 6)),
    ],
)
def test_value_area_vectors(counts, two_row, one_row):
    assert value_area(counts, poc_index(counts)) == two_row
    assert value_area(counts, poc_index(counts), 70, "two_row") == two_row
    assert value_area(counts, poc_index(counts), 70, "one_row") == one_row


def test_value_area_stops_when_the_target_is_met_exactly():
    assert value_area([1, 2, 5, 1, 1], 2, 70, "one_row") == (1, 2)


def test_value_area_of_an_empty_profile_is_none():
    assert value_area([0, 0, 0]) is None
    assert value_area([]) is None


def test_value_area_method_and_percent_are_parameters():
    counts = [1, 2, 8, 3, 10, 4, 1, 6, 1]
    assert value_area(counts, 4, 100) == (0, 8)
    assert value_area(counts, 4, 20) == (4, 4)
    engine_params = ProfileParams(va_method="one_row")
    assert engine_params.va_method == "one_row"
    with pytest.raises(ValueError):
        ProfileParams(va_method="three_row")


# §4 Initial balance and range extension
def test_initial_balance_and_extension_vector():
    state = run_periods([(105, 110, 100, 108), (108, 115, 105, 110), (112, 130, 112, 128)])
    assert (state.ibh, state.ibl, state.ibr) == (115, 100, 15)
    assert state.ib_complete
    assert state.extension_up and not state.extension_down
    assert state.extension_up_multiple == 1.0
    assert list(state.extension_levels["up"].values()) == [122.5, 130, 137.5, 145, 160]
    assert extension_levels(115 * 20, 100 * 20, 20)["down"][1.0] == 85


def test_the_1015_bar_belongs_to_c_and_does_not_move_the_ib():
    state = run_periods([(105, 110, 100, 108), (108, 115, 105, 110), (115, 140, 90, 120)])
    assert (state.ibh, state.ibl) == (115, 100)
    assert state.extension_up and state.extension_down


# §5 Open location
@pytest.mark.parametrize(
    ("open_", "where"),
    [
        (155, OpenLocation.ABOVE_RANGE),
        (150, OpenLocation.ABOVE_VALUE),
        (140, OpenLocation.ABOVE_VALUE),
        (130, OpenLocation.IN_VALUE),
        (115, OpenLocation.IN_VALUE),
        (100, OpenLocation.IN_VALUE),
        (90, OpenLocation.BELOW_VALUE),
        (80, OpenLocation.BELOW_VALUE),
        (75, OpenLocation.BELOW_RANGE),
    ],
)
def test_open_location_vectors(open_, where):
    assert open_location(open_, 150, 80, 130, 100) == where


# §6 Day type (5-point rows, average IBR 40)
@pytest.mark.parametrize(
    ("ib", "rng", "close", "kind"),
    [
        ((100, 140), (100, 143), 120, DayType.NORMAL),
        ((100, 108), (100, 109), 104, DayType.NON_TREND),
        ((100, 130), (100, 155), 150, DayType.NORMAL_VARIATION_UP),
        ((100, 130), (95, 135), 114, DayType.NEUTRAL_CENTER),
        ((100, 130), (95, 140), 139, DayType.NEUTRAL_EXTREME_UP),
    ],
)
def test_day_type_vectors(ib, rng, close, kind):
    ibl, ibh = ib
    low, high = rng
    assert day_type(ibh, ibl, high, low, close, row=5, avg_ibr=40) == kind


# §7 Structure
@pytest.mark.parametrize(
    ("counts", "high", "low"),
    [
        ([1, 1, 3, 4, 5, 3, 1, 1], "excess", "excess"),
        ([2, 3, 5, 4, 3, 2], "poor", "poor"),
        ([1, 1, 1, 4, 6, 2], "poor", "excess"),
        ([1, 3, 4, 1], "weak", "weak"),
    ],
)
def test_extremes_vectors(counts, high, low):
    e = extremes(counts)
    got_high = "poor" if e.poor_high else "excess" if e.excess_high else "weak" if e.weak_high else "?"
    got_low = "poor" if e.poor_low else "excess" if e.excess_low else "weak" if e.weak_low else "?"
    assert (got_high, got_low) == (high, low)


def test_single_prints_are_interior_runs_of_at_least_two():
    assert single_print_zones([1, 1, 3, 1, 1, 1, 4, 1, 2, 1, 1]) == [(3, 5)]
    assert single_print_zones([2, 1, 2]) == []


def test_rotation_factor_vector():
    assert rotation_factors([(110, 100), (112, 101), (112, 99), (108, 95), (108, 95)]) == [0, 2, 1, -1, -1]


@pytest.mark.parametrize(
    ("today", "relation"),
    [
        ((125, 140), ValueRelation.HIGHER),
        ((110, 130), ValueRelation.OVERLAPPING_HIGHER),
        ((120, 135), ValueRelation.OVERLAPPING_HIGHER),
        ((105, 115), ValueRelation.INSIDE),
        ((100, 118), ValueRelation.INSIDE),
        ((95, 125), ValueRelation.OUTSIDE),
        ((80, 95), ValueRelation.LOWER),
        ((90, 110), ValueRelation.OVERLAPPING_LOWER),
        ((100, 120), ValueRelation.UNCHANGED),
    ],
)
def test_value_relation_vectors(today, relation):
    assert value_relation(today[0], today[1], 100, 120) == relation


def test_composite_sums_on_the_absolute_grid():
    day1 = {100.0: 1, 105.0: 3, 110.0: 2}
    day2 = {105.0: 1, 110.0: 4, 115.0: 1, 120.0: 1}
    comp = composite_profile([day1, day2], row_size=5.0)
    assert comp.counts == {100.0: 1, 105.0: 4, 110.0: 6, 115.0: 1, 120.0: 1}
    assert comp.poc == 110.0
    # total 13, 70% → 9.1: POC 6, + pair below (105,100)=5 beats pair above (115,120)=2 → 11.
    assert (comp.val, comp.vah) == (100.0, 110.0)


def test_value_area_takes_the_upper_side_on_a_tie():
    # Crafted so that taking the lower side first would give a different area.
    assert value_area([1, 2, 2, 6, 2, 2, 4], 3, 70, "two_row") == (3, 6)  # lower-first → (1, 5)
    assert value_area([1, 3, 5, 3, 4], 2, 70, "one_row") == (2, 4)  # lower-first → (1, 4)


def test_value_area_percent_and_method_reach_the_engine():
    periods = [(105, 110, 100, 108), (108, 115, 105, 110), (112, 130, 112, 128)]
    everything = run_periods(periods, ProfileParams(va_percent=100))
    assert (everything.val, everything.vah) == (100.0, 130.0)
    one_row = run_periods(periods, ProfileParams(va_method="one_row"))
    assert one_row.val <= one_row.poc <= one_row.vah
