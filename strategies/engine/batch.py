"""Batch computation of sessions from 1-minute candles or ticks, for history and backtests.

Written independently of the incremental engine (period slices by bisection, C-speed max/min) and
required to give the same AuctionState at every period boundary; the property tests hold the two
together. No Django, Celery or Redis imports here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from .params import MINUTE_MS, ProfileParams, day_start_ms, session_bounds_ms, session_date_of
from .profile import spread_candle_volume
from .state import AuctionState, PriorSession, SessionFacts, derive_state, drive_ticks


@dataclass(frozen=True, slots=True)
class Candles:
    """1-minute candles in time order (ts = candle start, ms since the epoch)."""

    ts_ms: Sequence[int]
    open: Sequence[float]
    high: Sequence[float]
    low: Sequence[float]
    close: Sequence[float]
    volume: Sequence[int] | None = None

    def __len__(self) -> int:
        return len(self.ts_ms)

    def slice(self, a: int, b: int) -> Candles:
        v = self.volume[a:b] if self.volume is not None else None
        return Candles(self.ts_ms[a:b], self.open[a:b], self.high[a:b], self.low[a:b], self.close[a:b], v)


@dataclass(frozen=True, slots=True)
class Ticks:
    """Trades or snapshots in time order (ms since the epoch, price, quantity or None)."""

    ts_ms: Sequence[int]
    price: Sequence[float]
    qty: Sequence[int] | None = None

    def __len__(self) -> int:
        return len(self.ts_ms)

    def slice(self, a: int, b: int) -> Ticks:
        return Ticks(self.ts_ms[a:b], self.price[a:b], self.qty[a:b] if self.qty is not None else None)


def compute_session(
    data: Candles | Ticks,
    params: ProfileParams,
    prior: PriorSession | None = None,
    naked_pocs: Iterable[float] = (),
    avg_ibr: float | None = None,
    avg_daily_range: float | None = None,
    final: bool | None = None,
) -> AuctionState:
    """The AuctionState of one session from its candles or ticks.

    `final=None` marks the day type final when the data reaches the close (a candle ending at the
    close, or any update at/after it), as the incremental engine does; pass True for history known
    to be complete.
    """
    f = SessionFacts()
    f.prior, f.naked_pocs, f.avg_ibr, f.avg_daily_range = prior, tuple(naked_pocs), avg_ibr, avg_daily_range
    is_candles = isinstance(data, Candles)
    ts = data.ts_ms
    n = len(ts)
    first = _first_in_session(ts, params)
    if first is not None:
        day = session_date_of(ts[first])
        open_ms, close_ms = session_bounds_ms(day, params)
        if session_date_of(ts[-1]) != day or session_date_of(ts[0]) != day:
            raise ValueError("compute_session takes one session; use compute_sessions for many")
        a, b = first, bisect_left(ts, close_ms, first, n)
        f.day, f.open_ms = day, open_ms
        if is_candles:
            _fill_from_candles(f, data, a, b, open_ms, close_ms, params, avg_daily_range)
            f.now_ms = ts[b - 1] + MINUTE_MS
            f.final = f.now_ms >= close_ms
        else:
            _fill_from_ticks(f, data, a, b, open_ms, close_ms, params, avg_daily_range)
            f.now_ms = ts[b - 1]
        if b < n:  # updates at or after the close
            f.final = True
            f.now_ms = max(f.now_ms, ts[n - 1])
        if final is not None:
            f.final = final
    return derive_state(f, params)


def _first_in_session(ts: Sequence[int], params: ProfileParams) -> int | None:
    if not ts:
        return None
    open_ms, close_ms = session_bounds_ms(session_date_of(ts[0]), params)
    i = bisect_left(ts, open_ms)
    if i < len(ts) and ts[i] < close_ms:
        return i
    return None


def _period_slices(ts: Sequence[int], a: int, b: int, open_ms: int, close_ms: int, period_ms: int):
    k = 0
    start = open_ms
    while start < close_ms and a < b:
        end = min(start + period_ms, close_ms)
        j = bisect_left(ts, end, a, b)
        if j > a:
            yield k, a, j
        a = j
        k += 1
        start += period_ms


def _add_tpo(tpo: dict[int, int], lo_t: int, hi_t: int, tpr: int) -> None:
    for row in range(lo_t // tpr, hi_t // tpr + 1):
        tpo[row] = tpo.get(row, 0) + 1


def _fill_from_candles(f, c: Candles, a, b, open_ms, close_ms, params, avg_daily_range) -> None:
    tpu, tpr = params.ticks_per_unit, params.ticks_per_row
    opens, highs, lows, closes = c.open, c.high, c.low, c.close
    for k, i, j in _period_slices(c.ts_ms, a, b, open_ms, close_ms, params.period_ms):
        hi = round(max(max(highs[i:j]), max(opens[i:j]), max(closes[i:j])) * tpu)
        lo = round(min(min(lows[i:j]), min(opens[i:j]), min(closes[i:j])) * tpu)
        f.periods.append([k, hi, lo])
        _add_tpo(f.tpo, lo, hi, tpr)
        if k == 0:
            path = []
            for m in range(i, j):
                o, h, lw, cl = opens[m], highs[m], lows[m], closes[m]
                path.extend((o, lw, h, cl) if cl >= o else (o, h, lw, cl))
            _open_type_scan(f, [round(p * tpu) for p in path], drive_ticks(params, avg_daily_range))
            if j < b:
                f.a_close = round(closes[j - 1] * tpu)
    f.open = round(opens[a] * tpu)
    f.last = round(closes[b - 1] * tpu)
    f.high = max(p[1] for p in f.periods)
    f.low = min(p[2] for p in f.periods)
    if c.volume is not None:
        vol = f.volume
        for m in range(a, b):
            v = c.volume[m]
            if v:
                o, cl = opens[m], closes[m]
                hi = round(max(o, highs[m], lows[m], cl) * tpu)
                lo = round(min(o, highs[m], lows[m], cl) * tpu)
                for row, share in spread_candle_volume(lo, hi, int(v), tpr).items():
                    vol[row] = vol.get(row, 0) + share


def _fill_from_ticks(f, t: Ticks, a, b, open_ms, close_ms, params, avg_daily_range) -> None:
    tpu, tpr = params.ticks_per_unit, params.ticks_per_row
    prices = t.price
    for k, i, j in _period_slices(t.ts_ms, a, b, open_ms, close_ms, params.period_ms):
        chunk = prices[i:j]
        hi, lo = round(max(chunk) * tpu), round(min(chunk) * tpu)
        f.periods.append([k, hi, lo])
        _add_tpo(f.tpo, lo, hi, tpr)
        if k == 0:
            _open_type_scan(f, [round(p * tpu) for p in chunk], drive_ticks(params, avg_daily_range))
            if j < b:
                f.a_close = round(prices[j - 1] * tpu)
    f.open = round(prices[a] * tpu)
    f.last = round(prices[b - 1] * tpu)
    f.high = max(p[1] for p in f.periods)
    f.low = min(p[2] for p in f.periods)
    if t.qty is not None:
        vol = f.volume
        for m in range(a, b):
            q = t.qty[m]
            if q:
                row = round(prices[m] * tpu) // tpr
                vol[row] = vol.get(row, 0) + q


def _open_type_scan(f: SessionFacts, path: list[int], drive: int) -> None:
    """The adverse extreme reached before period A's path first went ±drive from the open."""
    open_ = path[0]
    hi = lo = open_
    for p in path:
        if p > hi:
            hi = p
        if p < lo:
            lo = p
        if f.low_before_up_drive is None and p >= open_ + drive:
            f.low_before_up_drive = lo
        if f.high_before_down_drive is None and p <= open_ - drive:
            f.high_before_down_drive = hi


def split_sessions(data: Candles | Ticks) -> list[Candles | Ticks]:
    """One slice per IST calendar day, in order (data must be in time order)."""
    ts = data.ts_ms
    out = []
    i, n = 0, len(ts)
    while i < n:
        day = session_date_of(ts[i])
        j = bisect_left(ts, day_start_ms(day + timedelta(days=1)), i, n)
        out.append(data.slice(i, j))
        i = j
    return out


def compute_sessions(
    data: Candles | Ticks,
    params: ProfileParams,
    prior: PriorSession | None = None,
    naked_pocs: Iterable[float] = (),
    average_days: int = 20,
    final: bool | None = True,
) -> list[AuctionState]:
    """Every session in the data, each with the previous one as prior, the naked POCs carried
    forward and averages (IBR, daily range) over up to `average_days` earlier sessions (never the
    day itself). Sessions followed by another are final; the last one takes `final`."""
    states: list[AuctionState] = []
    naked = list(naked_pocs)
    ibrs: list[float] = []
    ranges: list[float] = []
    days = split_sessions(data)
    for number, day in enumerate(days):
        avg_ibr = sum(ibrs[-average_days:]) / len(ibrs[-average_days:]) if ibrs else None
        avg_dr = sum(ranges[-average_days:]) / len(ranges[-average_days:]) if ranges else None
        last = number == len(days) - 1
        state = compute_session(day, params, prior, naked, avg_ibr, avg_dr, final=True if not last else final)
        if state.session_date is None:
            continue
        states.append(state)
        prior = state.to_prior()
        naked = list(state.naked_pocs) + ([state.poc] if state.poc is not None else [])
        if state.ibr is not None and state.ib_complete:
            ibrs.append(state.ibr)
        if state.high is not None and state.low is not None:
            ranges.append(state.high - state.low)
    return states
