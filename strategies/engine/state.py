"""The values the auction engine hands to strategies and the dashboard, and the one function that
derives them from a session's accumulated facts (shared by the incremental engine and the batch
computation, so both answer alike from the same facts).

No Django, Celery or Redis imports here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from . import classify, profile, structure
from .params import ProfileParams, period_letter
from .vocabulary import Balance, DayType, OpenType, Shape


@dataclass(frozen=True, slots=True)
class PriorSession:
    """The previous session's references (prices)."""

    date: date
    high: float
    low: float
    close: float
    poc: float | None
    vah: float | None
    val: float | None


@dataclass(frozen=True, slots=True)
class AuctionState:
    """A session's auction as known after the latest update (developing values, no look-ahead).

    Prices are floats on the tick grid; rows are named by their lower bound. `tpo_counts` covers
    every row from the day's low row to its high row (gap rows hold 0).
    """

    session_date: date | None
    period_index: int | None
    period_letter: str | None
    open: float | None
    high: float | None
    low: float | None
    last: float | None
    row_size: float
    tpo_counts: dict[float, int] = field(default_factory=dict)
    volume_by_row: dict[float, int] = field(default_factory=dict)
    poc: float | None = None
    vah: float | None = None
    val: float | None = None
    volume_poc: float | None = None
    volume_vah: float | None = None
    volume_val: float | None = None
    ibh: float | None = None
    ibl: float | None = None
    ibr: float | None = None
    ib_complete: bool = False
    extension_up: bool = False
    extension_down: bool = False
    extension_up_multiple: float | None = None
    extension_down_multiple: float | None = None
    extension_levels: dict[str, dict[float, float]] = field(default_factory=dict)
    open_location: str | None = None
    open_type: str = OpenType.UNDETERMINED
    day_type: str = DayType.UNDETERMINED
    day_type_final: bool = False
    single_prints: list[tuple[float, float]] = field(default_factory=list)
    poor_high: bool = False
    poor_low: bool = False
    weak_high: bool = False
    weak_low: bool = False
    excess_high: bool = False
    excess_low: bool = False
    hvn: list[float] = field(default_factory=list)
    lvn: list[float] = field(default_factory=list)
    rotation_factor: int = 0
    value_relation: str | None = None
    balance: str = Balance.BALANCE
    shape: str = Shape.NONE
    prior: PriorSession | None = None
    naked_pocs: list[float] = field(default_factory=list)
    periods: list[tuple[str, float, float]] = field(default_factory=list)  # (letter, low, high)
    now_ms: int | None = None

    def to_prior(self) -> PriorSession | None:
        if self.session_date is None or self.high is None or self.low is None or self.last is None:
            return None
        return PriorSession(self.session_date, self.high, self.low, self.last, self.poc, self.vah, self.val)


class SessionFacts:
    """What a session has accumulated so far, in integers (ticks, rows, ms). The incremental engine
    and the batch computation each fill one; `derive_state` turns it into an AuctionState."""

    __slots__ = (
        "a_close",
        "avg_daily_range",
        "avg_ibr",
        "day",
        "final",
        "high",
        "high_before_down_drive",
        "last",
        "low",
        "low_before_up_drive",
        "naked_pocs",
        "now_ms",
        "open",
        "open_ms",
        "periods",
        "prior",
        "tpo",
        "volume",
    )

    def __init__(self) -> None:
        self.day: date | None = None
        self.open_ms = 0
        self.open: int | None = None
        self.high: int | None = None
        self.low: int | None = None
        self.last: int | None = None
        self.a_close: int | None = None
        self.low_before_up_drive: int | None = None
        self.high_before_down_drive: int | None = None
        self.periods: list[list[int]] = []  # [index, high, low] for periods with data, in order
        self.tpo: dict[int, int] = {}
        self.volume: dict[int, int] = {}
        self.now_ms: int | None = None
        self.final = False
        self.prior: PriorSession | None = None
        self.naked_pocs: tuple[float, ...] = ()
        self.avg_ibr: float | None = None
        self.avg_daily_range: float | None = None


def drive_ticks(params: ProfileParams, avg_daily_range: float | None) -> int:
    """D of the opening-type rule, in ticks."""
    if avg_daily_range:
        adr = round(avg_daily_range * params.ticks_per_unit)
        return max(1, (adr * params.open_drive_pct_of_adr + 50) // 100)
    return params.open_drive_min_rows * params.ticks_per_row


class ProfileCache:
    """Profile-derived values (POC, value area, structure) recomputed only when counts changed."""

    __slots__ = ("tpo_key", "tpo_values", "vol_key", "vol_values")

    def __init__(self) -> None:
        self.tpo_key: object = None
        self.tpo_values: tuple | None = None
        self.vol_key: object = None
        self.vol_values: tuple | None = None


def derive_state(
    facts: SessionFacts, params: ProfileParams, cache: ProfileCache | None = None, versions=None
) -> AuctionState:
    """Build the AuctionState a session's facts imply (POC/VA/structure on the data so far)."""
    tpu = params.ticks_per_unit
    tpr = params.ticks_per_row
    row_size = params.row_size
    prior = facts.prior
    naked = list(facts.naked_pocs)
    if facts.open is None or facts.high is None or facts.low is None or facts.last is None:
        return AuctionState(
            session_date=facts.day,
            period_index=None,
            period_letter=None,
            open=None,
            high=None,
            low=None,
            last=None,
            row_size=row_size,
            prior=prior,
            naked_pocs=naked,
            now_ms=facts.now_ms,
        )

    def px(t: int) -> float:
        return t / tpu

    def label(r: int) -> float:
        return round(r * row_size, 9)

    high, low, last, open_ = facts.high, facts.low, facts.last, facts.open
    lo_row, hi_row = low // tpr, high // tpr
    periods = facts.periods
    period_index = periods[-1][0]

    # Profile-derived values, cached on the caller's version counters.
    tpo_key = (versions[0], lo_row, hi_row) if versions is not None else None
    if cache is not None and tpo_key is not None and cache.tpo_key == tpo_key:
        tpo_values = cache.tpo_values
    else:
        counts = profile.dense_range(facts.tpo, lo_row, hi_row)
        poc_i = profile.poc_index(counts)
        va = (
            profile.value_area(counts, poc_i, params.va_percent, params.va_method)
            if poc_i is not None
            else None
        )
        zones = structure.single_print_zones(counts, params.single_print_min_rows)
        runs = structure.single_print_zones(counts, 1)
        longest = max((b - a + 1 for a, b in runs), default=0)
        ext = structure.extremes(counts)
        tpo_values = (counts, poc_i, va, zones, longest, ext)
        if cache is not None:
            cache.tpo_key, cache.tpo_values = tpo_key, tpo_values
    counts, poc_i, va, zones, longest, ext = tpo_values

    # Nodes fall back to TPO counts when there is no volume, so the TPO version is part of the key.
    vol_key = (versions[1], versions[0], lo_row, hi_row) if versions is not None else None
    if cache is not None and vol_key is not None and cache.vol_key == vol_key:
        vol_values = cache.vol_values
    else:
        vol_vec = profile.dense_range(facts.volume, lo_row, hi_row) if facts.volume else []
        vpoc = profile.poc_index(vol_vec) if vol_vec else None
        vva = (
            profile.value_area(vol_vec, vpoc, params.va_percent, params.va_method)
            if vpoc is not None
            else None
        )
        nodes_src = vol_vec if vpoc is not None else counts
        hvn_i, lvn_i = profile.volume_nodes(nodes_src, params.node_sensitivity_rows)
        vol_values = (vol_vec, vpoc, vva, hvn_i, lvn_i)
        if cache is not None:
            cache.vol_key, cache.vol_values = vol_key, vol_values
    vol_vec, vpoc, vva, hvn_i, lvn_i = vol_values

    poc = label(lo_row + poc_i) if poc_i is not None else None
    val = label(lo_row + va[0]) if va else None
    vah = label(lo_row + va[1]) if va else None

    # Initial balance and its extension.
    ib_ranges = [(h, lw) for k, h, lw in periods if k < params.ib_periods]
    ib_end = facts.open_ms + params.ib_periods * params.period_ms
    ib_complete = facts.now_ms is not None and facts.now_ms >= ib_end
    ibh_t = max(h for h, _ in ib_ranges) if ib_ranges else None
    ibl_t = min(lw for _, lw in ib_ranges) if ib_ranges else None
    ext_up = ext_down = 0
    ext_levels: dict[str, dict[float, float]] = {}
    up_mult = down_mult = None
    kind = DayType.UNDETERMINED
    ranges = [(h, lw) for _, h, lw in periods]
    if ib_complete and ibh_t is not None and ibl_t is not None:
        ext_up, ext_down = classify.extensions(ibh_t, ibl_t, high, low, tpr)
        ibr_t = ibh_t - ibl_t
        ext_levels = structure.extension_levels(ibh_t, ibl_t, tpu)
        if ibr_t > 0:
            up_mult = (high - ibh_t) / ibr_t
            down_mult = (ibl_t - low) / ibr_t
        avg_ibr_t = round(facts.avg_ibr * tpu) if facts.avg_ibr else None
        # One-timeframing is judged from the last IB period on, by period index (empty periods
        # leave no range, so list positions are not period numbers).
        from_last_ib = [(h, lw) for k, h, lw in periods if k >= params.ib_periods - 1]
        kind = classify.day_type(
            ibh_t,
            ibl_t,
            high,
            low,
            last,
            tpr,
            avg_ibr_t,
            from_last_ib,
            1,
            longest,
            params.non_trend_ibr_pct,
            params.double_distribution_min_rows,
        )

    # Opening type, known once period A has ended.
    kind_open = OpenType.UNDETERMINED
    a_end = facts.open_ms + params.period_ms
    if facts.now_ms is not None and facts.now_ms >= a_end and periods and periods[0][0] == 0:
        a_close = facts.a_close if facts.a_close is not None else last
        kind_open = classify.open_type(
            open_,
            a_close,
            periods[0][1],
            periods[0][2],
            facts.low_before_up_drive,
            facts.high_before_down_drive,
            params.open_adverse_rows * tpr,
            params.open_test_rows * tpr,
            drive_ticks(params, facts.avg_daily_range),
        )

    location = relation = None
    if prior is not None:
        location = structure.open_location(
            open_,
            round(prior.high * tpu),
            round(prior.low * tpu),
            round(prior.vah * tpu) if prior.vah is not None else round(prior.high * tpu),
            round(prior.val * tpu) if prior.val is not None else round(prior.low * tpu),
        )
        if va and prior.vah is not None and prior.val is not None:
            relation = structure.value_relation(
                (lo_row + va[0]) * tpr, (lo_row + va[1]) * tpr, round(prior.val * tpu), round(prior.vah * tpu)
            )

    post_ib = [(h, lw) for k, h, lw in periods if k >= params.ib_periods - 1] if ib_complete else []
    bal = classify.balance(
        relation, kind, ext_up, ext_down, (ibh_t - ibl_t) if ibh_t is not None else 0, post_ib
    )
    rotations = structure.rotation_factors(ranges)

    return AuctionState(
        session_date=facts.day,
        period_index=period_index,
        period_letter=period_letter(period_index),
        open=px(open_),
        high=px(high),
        low=px(low),
        last=px(last),
        row_size=row_size,
        tpo_counts={label(lo_row + i): c for i, c in enumerate(counts)},
        volume_by_row={label(lo_row + i): c for i, c in enumerate(vol_vec) if c},
        poc=poc,
        vah=vah,
        val=val,
        volume_poc=label(lo_row + vpoc) if vpoc is not None else None,
        volume_vah=label(lo_row + vva[1]) if vva else None,
        volume_val=label(lo_row + vva[0]) if vva else None,
        ibh=px(ibh_t) if ibh_t is not None else None,
        ibl=px(ibl_t) if ibl_t is not None else None,
        ibr=px(ibh_t - ibl_t) if ibh_t is not None and ibl_t is not None else None,
        ib_complete=ib_complete,
        extension_up=bool(ext_up),
        extension_down=bool(ext_down),
        extension_up_multiple=up_mult,
        extension_down_multiple=down_mult,
        extension_levels=ext_levels,
        open_location=location,
        open_type=kind_open,
        day_type=kind,
        day_type_final=facts.final and kind != DayType.UNDETERMINED,
        single_prints=[(label(lo_row + a), label(lo_row + b)) for a, b in zones],
        poor_high=ext.poor_high,
        poor_low=ext.poor_low,
        weak_high=ext.weak_high,
        weak_low=ext.weak_low,
        excess_high=ext.excess_high,
        excess_low=ext.excess_low,
        hvn=[label(lo_row + i) for i in hvn_i],
        lvn=[label(lo_row + i) for i in lvn_i],
        rotation_factor=rotations[-1] if rotations else 0,
        value_relation=relation,
        balance=bal,
        shape=classify.shape(counts, poc_i, longest, params.double_distribution_min_rows),
        prior=prior,
        naked_pocs=[p for p in naked if not low <= round(p * tpu) <= high],
        periods=[(period_letter(k), px(lw), px(h)) for k, h, lw in periods],
        now_ms=facts.now_ms,
    )
