"""Profile structure and session relations (amt.md §4, §5, §7): single prints, excess and poor
extremes, rotation factor, open location, value relation, initial-balance extension levels.

Pure functions on integers (ticks or rows). No Django, Celery or Redis imports here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .vocabulary import OpenLocation, ValueRelation


def single_print_zones(counts: Sequence[int], min_rows: int = 2) -> list[tuple[int, int]]:
    """Runs (lo_idx, hi_idx) of ≥ min_rows interior count-1 rows; runs touching an extreme are
    tails (excess), not single prints."""
    zones: list[tuple[int, int]] = []
    n = len(counts)
    i = 0
    while i < n:
        if counts[i] == 1:
            j = i
            while j + 1 < n and counts[j + 1] == 1:
                j += 1
            if i > 0 and j < n - 1 and j - i + 1 >= min_rows:
                zones.append((i, j))
            i = j + 1
        else:
            i += 1
    return zones


@dataclass(frozen=True, slots=True)
class Extremes:
    poor_high: bool
    weak_high: bool
    excess_high: bool
    poor_low: bool
    weak_low: bool
    excess_low: bool


def extremes(counts: Sequence[int]) -> Extremes:
    """Excess: ≥2 count-1 rows at an extreme. Poor: the extreme row has ≥2 TPOs. Weak: a lone
    count-1 extreme row."""
    if not counts:
        return Extremes(False, False, False, False, False, False)

    def kind(seq: Sequence[int]) -> tuple[bool, bool, bool]:
        if seq[0] >= 2:
            return True, False, False
        run = 0
        for c in seq:
            if c != 1:
                break
            run += 1
        if run >= 2:
            return False, False, True
        return False, seq[0] == 1, False

    ph, wh, eh = kind(list(reversed(counts)))
    pl, wl, el = kind(counts)
    return Extremes(ph, wh, eh, pl, wl, el)


def rotation_factors(periods: Sequence[tuple[int, int]]) -> list[int]:
    """Running rotation factor over (high, low) periods in order: ±1 for a higher/lower high, ±1 for
    a higher/lower low against the previous period, 0 when equal."""
    out: list[int] = []
    total = 0
    prev: tuple[int, int] | None = None
    for high, low in periods:
        if prev is not None:
            total += (high > prev[0]) - (high < prev[0]) + (low > prev[1]) - (low < prev[1])
        out.append(total)
        prev = (high, low)
    return out


def open_location(
    open_: int, prior_high: int, prior_low: int, prior_vah: int, prior_val: int
) -> OpenLocation:
    """Where today opened against yesterday (edges inclusive on value)."""
    if open_ > prior_high:
        return OpenLocation.ABOVE_RANGE
    if open_ < prior_low:
        return OpenLocation.BELOW_RANGE
    if open_ > prior_vah:
        return OpenLocation.ABOVE_VALUE
    if open_ < prior_val:
        return OpenLocation.BELOW_VALUE
    return OpenLocation.IN_VALUE


def value_relation(val: int, vah: int, prior_val: int, prior_vah: int) -> ValueRelation:
    """Today's value against yesterday's, checked in the amt.md order; touching is overlapping."""
    if val == prior_val and vah == prior_vah:
        return ValueRelation.UNCHANGED
    if val >= prior_val and vah <= prior_vah:
        return ValueRelation.INSIDE
    if val <= prior_val and vah >= prior_vah:
        return ValueRelation.OUTSIDE
    if val > prior_vah:
        return ValueRelation.HIGHER
    if vah < prior_val:
        return ValueRelation.LOWER
    if vah > prior_vah:
        return ValueRelation.OVERLAPPING_HIGHER
    return ValueRelation.OVERLAPPING_LOWER


EXTENSION_MULTIPLES = (0.5, 1.0, 1.5, 2.0, 3.0)


def extension_levels(ibh: int, ibl: int, ticks_per_unit: int) -> dict[str, dict[float, float]]:
    """IBH + k·IBR and IBL − k·IBR for k in 0.5, 1, 1.5, 2, 3 (prices)."""
    ibr = ibh - ibl
    up: dict[float, float] = {}
    down: dict[float, float] = {}
    for k in EXTENSION_MULTIPLES:
        k2 = round(k * 2)  # half-IB multiples stay exact in half ticks
        up[k] = (2 * ibh + k2 * ibr) / (2 * ticks_per_unit)
        down[k] = (2 * ibl - k2 * ibr) / (2 * ticks_per_unit)
    return {"up": up, "down": down}


def one_timeframing(periods: Sequence[tuple[int, int]], up: bool) -> int:
    """How many periods (after the first) one-timeframe: up — the low holds at or above the previous
    period's low while the high rises; down — the mirror."""
    count = 0
    for (ph, pl), (h, low) in zip(periods, periods[1:], strict=False):
        if up and low >= pl and h > ph:
            count += 1
        elif not up and h <= ph and low < pl:
            count += 1
    return count
