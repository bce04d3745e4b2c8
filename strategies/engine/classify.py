"""Judgements about a session (amt.md §5, §6, §7): opening type, day type, balance/imbalance and
profile shape. The literature leaves thresholds to judgement; here each is a parameter and each rule
is written out below. Integer arithmetic only. No Django, Celery or Redis imports here.
"""

from __future__ import annotations

from collections.abc import Sequence

from .structure import one_timeframing
from .vocabulary import Balance, DayType, OpenType, Shape, ValueRelation


def open_type(
    open_: int,
    a_close: int,
    a_high: int,
    a_low: int,
    low_before_up_drive: int | None,
    high_before_down_drive: int | None,
    adverse: int,
    test: int,
    drive: int,
) -> OpenType:
    """Classify period A from its path (all in ticks).

    A drive up happened when A's high reached `open + drive` and A closed above the open; its
    adverse excursion is how far below the open price traded *before* the high first reached
    `open + drive` (`low_before_up_drive`). Then, by that excursion:
      ≤ adverse (ε)  → Open Drive;  ≤ test (τ) → Open Test Drive;  > τ → Open Rejection Reverse
    (it moved more than τ one way, came back through the open and went ≥ D beyond it).
    The mirror holds for down. Anything else rotated around the open: Open Auction.
    """
    if low_before_up_drive is not None and a_high - open_ >= drive and a_close > open_:
        excursion = open_ - low_before_up_drive
        if excursion <= adverse:
            return OpenType.OPEN_DRIVE_UP
        if excursion <= test:
            return OpenType.OPEN_TEST_DRIVE_UP
        return OpenType.OPEN_REJECTION_REVERSE_UP
    if high_before_down_drive is not None and open_ - a_low >= drive and a_close < open_:
        excursion = high_before_down_drive - open_
        if excursion <= adverse:
            return OpenType.OPEN_DRIVE_DOWN
        if excursion <= test:
            return OpenType.OPEN_TEST_DRIVE_DOWN
        return OpenType.OPEN_REJECTION_REVERSE_DOWN
    return OpenType.OPEN_AUCTION


def extensions(ibh: int, ibl: int, high: int, low: int, row: int) -> tuple[int, int]:
    """(up, down) range extension beyond the IB; less than one row counts as 0."""
    up = high - ibh
    down = ibl - low
    return (up if up >= row else 0), (down if down >= row else 0)


def day_type(
    ibh: int,
    ibl: int,
    high: int,
    low: int,
    close: int,
    row: int,
    avg_ibr: int | None = None,
    periods: Sequence[tuple[int, int]] = (),
    ib_periods: int = 2,
    longest_single_run: int = 0,
    non_trend_ibr_pct: int = 60,
    double_distribution_rows: int = 3,
) -> DayType:
    """Dalton's day types from the IB, the range, the close and the periods' (high, low).

    1. Extension both sides → Neutral-Center (close inside the IB), Neutral-Extreme (close beyond the
       IB in the outer 25% of the range), else Neutral.
    2. No extension → Non-trend if IBR < non_trend_ibr_pct% of the average IBR, else Normal (with no
       average known, Normal).
    3. One-sided extension e: e ≤ 15% of the range → Normal; e ≤ IBR → Normal Variation; e > IBR,
       close in the outer 20% of the range and ≥70% of post-IB periods one-timeframing → Trend
       (Double-Distribution Trend when an interior single-print run of ≥ double_distribution_rows
       rows separates two distributions); otherwise a wide Normal Variation.
    """
    ibr = ibh - ibl
    dr = high - low
    up, down = extensions(ibh, ibl, high, low, row)
    if up and down:
        if ibl <= close <= ibh:
            return DayType.NEUTRAL_CENTER
        if close > ibh and 4 * (high - close) <= dr:
            return DayType.NEUTRAL_EXTREME_UP
        if close < ibl and 4 * (close - low) <= dr:
            return DayType.NEUTRAL_EXTREME_DOWN
        return DayType.NEUTRAL
    if not up and not down:
        if avg_ibr is not None and 100 * ibr < non_trend_ibr_pct * avg_ibr:
            return DayType.NON_TREND
        return DayType.NORMAL
    is_up = bool(up)
    e = up or down
    if 100 * e <= 15 * dr:
        return DayType.NORMAL
    variation = DayType.NORMAL_VARIATION_UP if is_up else DayType.NORMAL_VARIATION_DOWN
    if e <= ibr:
        return variation
    outer = 5 * (high - close) <= dr if is_up else 5 * (close - low) <= dr
    post = list(periods[max(ib_periods - 1, 0) :])
    post_count = len(post) - 1
    if outer and post_count > 0 and 10 * one_timeframing(post, is_up) >= 7 * post_count:
        if longest_single_run >= double_distribution_rows:
            return DayType.DOUBLE_DISTRIBUTION_UP if is_up else DayType.DOUBLE_DISTRIBUTION_DOWN
        return DayType.TREND_UP if is_up else DayType.TREND_DOWN
    return variation


_BALANCED_VALUE = {
    ValueRelation.UNCHANGED,
    ValueRelation.INSIDE,
    ValueRelation.OUTSIDE,
    ValueRelation.OVERLAPPING_HIGHER,
    ValueRelation.OVERLAPPING_LOWER,
}
_IMBALANCED_DAYS = {
    DayType.TREND_UP,
    DayType.TREND_DOWN,
    DayType.DOUBLE_DISTRIBUTION_UP,
    DayType.DOUBLE_DISTRIBUTION_DOWN,
    DayType.NEUTRAL_EXTREME_UP,
    DayType.NEUTRAL_EXTREME_DOWN,
}


def balance(
    relation: ValueRelation | None,
    kind: DayType,
    ext_up: int,
    ext_down: int,
    ibr: int,
    post_ib_periods: Sequence[tuple[int, int]] = (),
) -> Balance:
    """Imbalance when value moved wholly higher/lower, the day is a Trend or Neutral-Extreme, the
    post-IB periods one-timeframe (≥70%, at least 3 comparisons), or one side extended beyond a
    full IBR; otherwise balance (small extension, overlapping value)."""
    if relation is not None and relation not in _BALANCED_VALUE:
        return Balance.IMBALANCE
    if kind in _IMBALANCED_DAYS:
        return Balance.IMBALANCE
    n = len(post_ib_periods) - 1
    if n >= 3:
        best = max(one_timeframing(post_ib_periods, True), one_timeframing(post_ib_periods, False))
        if 10 * best >= 7 * n:
            return Balance.IMBALANCE
    if max(ext_up, ext_down) > ibr > 0:
        return Balance.IMBALANCE
    return Balance.BALANCE


def shape(counts: Sequence[int], poc: int | None, longest_single_run: int, double_rows: int = 3) -> Shape:
    """B when single prints of ≥ double_rows rows split two distributions; I when the profile is
    thin (the POC holds ≤ 2 TPOs over ≥ 8 rows); otherwise by where the POC sits in the range:
    upper third P, lower third b, middle D."""
    n = len(counts)
    if poc is None or n == 0:
        return Shape.NONE
    if longest_single_run >= double_rows:
        return Shape.DOUBLE
    if n >= 8 and counts[poc] <= 2:
        return Shape.ELONGATED
    if n < 3:
        return Shape.D
    if 3 * poc >= 2 * (n - 1) + 1:
        return Shape.P
    if 3 * poc <= (n - 1) - 1:
        return Shape.B_LOWER
    return Shape.D
