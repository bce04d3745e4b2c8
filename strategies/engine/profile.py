"""Profile arithmetic on row vectors: point of control, value area, candle volume spreading,
composites, volume nodes (amt.md §1–§3, §7).

Row vectors are lists of integer counts (TPOs or volume) from the lowest row to the highest, empty
rows included. Every decision compares integers. No Django, Celery or Redis imports here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .params import ProfileParams


def poc_index(counts: Sequence[int]) -> int | None:
    """Index of the point of control in a low→high row vector, None when it is all zeros.

    Tie 1: the maximum closest to the centre of the full row range. Tie 2 (one each side, equally
    close): the side of the centre holding more counts; if equal, the lower row.
    """
    if not counts:
        return None
    best = max(counts)
    if best <= 0:
        return None
    n = len(counts)
    # Distances are doubled so the centre (n-1)/2 stays an integer.
    candidates = [i for i, c in enumerate(counts) if c == best]
    if len(candidates) == 1:
        return candidates[0]
    nearest = min(abs(2 * i - (n - 1)) for i in candidates)
    closest = [i for i in candidates if abs(2 * i - (n - 1)) == nearest]
    if len(closest) == 1:
        return closest[0]
    low, high = closest[0], closest[-1]  # one on each side of the centre
    below = sum(c for i, c in enumerate(counts) if 2 * i < n - 1)
    above = sum(c for i, c in enumerate(counts) if 2 * i > n - 1)
    return high if above > below else low


def value_area(
    counts: Sequence[int], poc: int | None = None, percent: int = 70, method: str = "two_row"
) -> tuple[int, int] | None:
    """(lo_idx, hi_idx) of the value area, None when the profile is empty.

    Two-row (CBOT/Dalton, default): compare the sums of the next ≤2 rows above and below, add the
    larger pair whole, the upper on a tie, the other side when one is exhausted; stop as soon as
    `100*acc >= percent*total`. One-row: the same loop a row at a time.
    """
    total = sum(counts)
    if total <= 0:
        return None
    if poc is None:
        poc = poc_index(counts)
    if poc is None:
        return None
    step = 2 if method == "two_row" else 1
    if method not in ("two_row", "one_row"):
        raise ValueError(f"unknown value-area method {method!r}")
    n = len(counts)
    lo = hi = poc
    acc = counts[poc]
    target = percent * total
    while 100 * acc < target:
        up_end = min(hi + step, n - 1)
        down_end = max(lo - step, 0)
        up = sum(counts[hi + 1 : up_end + 1]) if hi < n - 1 else None
        down = sum(counts[down_end:lo]) if lo > 0 else None
        if up is None and down is None:
            break
        if down is None or (up is not None and up >= down):
            hi, acc = up_end, acc + up
        else:
            lo, acc = down_end, acc + down
    return lo, hi


def spread_candle_volume(low_tick: int, high_tick: int, volume: int, ticks_per_row: int) -> dict[int, int]:
    """A candle's volume spread evenly over every tick in [low, high], summed by row.

    Integer and exactly conserved: the row holding ticks [a, b) of the n ticks gets
    `volume*b//n − volume*a//n`.
    """
    if volume <= 0:
        return {}
    if high_tick < low_tick:
        low_tick, high_tick = high_tick, low_tick
    n = high_tick - low_tick + 1
    out: dict[int, int] = {}
    first_row = low_tick // ticks_per_row
    last_row = high_tick // ticks_per_row
    for row in range(first_row, last_row + 1):
        a = max(row * ticks_per_row, low_tick) - low_tick
        b = min((row + 1) * ticks_per_row - 1, high_tick) - low_tick + 1
        share = volume * b // n - volume * a // n
        if share:
            out[row] = share
    return out


def row_vector(by_row: Mapping[int, int]) -> tuple[int, list[int]]:
    """(lowest row, dense low→high vector) from a sparse row → count mapping (rows with 0 kept)."""
    rows = [r for r, c in by_row.items() if c]
    if not rows:
        return 0, []
    lo, hi = min(rows), max(rows)
    return lo, [by_row.get(r, 0) for r in range(lo, hi + 1)]


def dense_range(by_row: Mapping[int, int], lo_row: int, hi_row: int) -> list[int]:
    get = by_row.get
    return [get(r, 0) for r in range(lo_row, hi_row + 1)]


@dataclass(frozen=True, slots=True)
class Composite:
    """A profile summed over several days on the absolute row grid (keys: row lower bounds)."""

    counts: dict[float, int]
    poc: float | None
    vah: float | None
    val: float | None


def composite_profile(
    profiles: Iterable[Mapping[float, int]], row_size: float, percent: int = 70, method: str = "two_row"
) -> Composite:
    """Sum daily row vectors (row lower bound → count) and apply the POC and value-area rules."""
    by_row: dict[int, int] = {}
    for profile in profiles:
        for label, count in profile.items():
            row = round(label / row_size)
            by_row[row] = by_row.get(row, 0) + count
    lo, vec = row_vector(by_row)
    poc = poc_index(vec)
    va = value_area(vec, poc, percent, method) if poc is not None else None

    def label(i: int) -> float:
        return _label(lo + i, row_size)

    counts = {_label(r, row_size): c for r, c in sorted(by_row.items()) if c}
    if poc is None or va is None:
        return Composite(counts, None, None, None)
    return Composite(counts, label(poc), label(va[1]), label(va[0]))


def _label(row: int, row_size: float) -> float:
    # Row sizes are tick multiples; rounding to 1e-9 removes binary noise (0.1*3 → 0.3).
    return round(row * row_size, 9)


def volume_nodes(counts: Sequence[int], sensitivity: int = 2) -> tuple[list[int], list[int]]:
    """(HVN indices, LVN indices) of a row vector.

    The vector is smoothed by a centred 3-row sum; a high-volume node is a row whose smoothed value is
    the strict maximum of the window `sensitivity` rows each side (truncated at the edges) and above 0;
    a low-volume node is the strict minimum of a full window (so the thin edges of a profile are
    not called nodes).
    """
    n = len(counts)
    if n == 0:
        return [], []
    smooth = [
        (counts[i - 1] if i > 0 else 0) + counts[i] + (counts[i + 1] if i < n - 1 else 0) for i in range(n)
    ]
    hvn: list[int] = []
    lvn: list[int] = []
    s = sensitivity
    for i in range(n):
        window = smooth[max(0, i - s) : i] + smooth[i + 1 : i + s + 1]
        if not window:
            continue
        v = smooth[i]
        if v > 0 and all(v > w for w in window):
            hvn.append(i)
        if i - s >= 0 and i + s < n and all(v < w for w in window):
            lvn.append(i)
    return hvn, lvn


def composite_of(
    states: Iterable, kind: str = "tpo", percent: int = 70, method: str = "two_row"
) -> Composite:
    """The composite of several AuctionStates (`kind` "tpo" or "volume"), e.g. the last N days."""
    states = list(states)
    if not states:
        return Composite({}, None, None, None)
    attr = "tpo_counts" if kind == "tpo" else "volume_by_row"
    return composite_profile((getattr(s, attr) for s in states), states[0].row_size, percent, method)


def shift_to_spot(by_row: Mapping[float, int], basis: float, params: ProfileParams) -> dict[float, int]:
    """Move a futures volume profile onto the spot grid: each futures row's volume goes to the spot
    row holding `row − basis` (basis = future − spot, in points), on the same absolute grid. Whole
    rows move, so the map is exact when the basis is a whole number of rows, within a row otherwise."""
    tpu, tpr = params.ticks_per_unit, params.ticks_per_row
    shift = round(basis * tpu)
    out: dict[float, int] = {}
    for label, count in by_row.items():
        key = _label((round(label * tpu) - shift) // tpr, params.row_size)
        out[key] = out.get(key, 0) + count
    return out
