"""The incremental auction engine: fed tick by tick (or 1-minute candle by candle) for live use.

Per-tick cost is kept tiny: a tick inside the current period's high/low and period window only
stores the last price and the clock (the fast path); TPO rows change only when a period's range
grows, and POC/value area/structure are recomputed lazily in `state()` when counts changed.
No Django, Celery or Redis imports here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from .params import MINUTE_MS, ProfileParams, session_bounds_ms, session_date_of
from .state import AuctionState, PriorSession, ProfileCache, SessionFacts, derive_state, drive_ticks

_INF = float("inf")


class SessionRolled(ValueError):
    """Data for another session reached an engine bound to one session."""


class AuctionEngine:
    """One instrument's auction for one session."""

    def __init__(
        self,
        params: ProfileParams,
        prior: PriorSession | None = None,
        naked_pocs: Iterable[float] = (),
        avg_ibr: float | None = None,
        avg_daily_range: float | None = None,
    ) -> None:
        self.params = params
        self._tpu = params.ticks_per_unit
        self._tpr = params.ticks_per_row
        self._period_ms = params.period_ms
        self._drive = drive_ticks(params, avg_daily_range)
        f = self._facts = SessionFacts()
        f.prior = prior
        f.naked_pocs = tuple(naked_pocs)
        f.avg_ibr = avg_ibr
        f.avg_daily_range = avg_daily_range
        self._close_ms = 0
        # Current period window and its range, as floats for the fast path (exact: rounding is
        # monotone, so price ≤ the float that made the high never rounds above the high).
        self._p_start = 0
        self._p_end = 0
        self._p_hi_px = -_INF
        self._p_lo_px = _INF
        self._period: list[int] | None = None
        self._last_px = 0.0
        self._tpo_version = 0
        self._vol_version = 0
        self._cache = ProfileCache()
        self._up_target: int | None = None
        self._down_target: int | None = None
        self._k = 0

    # ---- feeding -------------------------------------------------------------------------------
    def on_tick(self, ts_ms: int, price: float, qty: int = 0) -> None:
        """One trade/snapshot: exchange time in ms since the epoch, price, traded quantity."""
        if self._p_start <= ts_ms < self._p_end and self._p_lo_px <= price <= self._p_hi_px:
            self._last_px = price
            self._facts.now_ms = ts_ms
            if qty:
                self._add_volume(price, qty)
            return
        if self._enter(ts_ms, ts_ms):
            self._apply(price)
            self._facts.last = round(price * self._tpu)
            if qty:
                self._add_volume(price, qty)

    def on_ticks(
        self, ts_ms: Sequence[int], prices: Sequence[float], qtys: Sequence[int] | None = None
    ) -> None:
        """Many ticks in time order. Without quantities, each period outside A is reduced to its
        first, highest, lowest and last price (C-speed max/min); period A keeps its path because the
        opening type depends on the order of its extremes."""
        n = len(ts_ms)
        if qtys is not None:
            for i in range(n):
                self.on_tick(ts_ms[i], prices[i], qtys[i])
            return
        on_tick = self.on_tick
        i = 0
        while i < n:
            on_tick(ts_ms[i], prices[i])
            i += 1
            if self._period is None or not (self._p_start <= ts_ms[i - 1] < self._p_end):
                continue
            j = bisect_left(ts_ms, self._p_end, i, n)
            if j <= i:
                continue
            if self._period[0] == 0:
                for k in range(i, j):
                    on_tick(ts_ms[k], prices[k])
            else:
                chunk = prices[i:j]
                on_tick(ts_ms[i], max(chunk))
                on_tick(ts_ms[i], min(chunk))
                on_tick(ts_ms[j - 1], prices[j - 1])
            i = j

    def on_candle(
        self, ts_ms: int, open_: float, high: float, low: float, close: float, volume: int = 0
    ) -> None:
        """One 1-minute candle labelled by its start. Its path is taken as open→low→high→close when
        it closed at or above its open, open→high→low→close otherwise; volume is spread evenly over
        its ticks. The clock moves to the candle's end."""
        if not self._enter(ts_ms, ts_ms + MINUTE_MS):
            return
        path = (open_, low, high, close) if close >= open_ else (open_, high, low, close)
        for price in path:
            self._apply(price)
        tpu = self._tpu
        self._facts.last = round(close * tpu)
        self._last_px = close
        if volume:
            from .profile import spread_candle_volume

            lo = round(min(path) * tpu)
            hi = round(max(path) * tpu)
            vol = self._facts.volume
            for row, share in spread_candle_volume(lo, hi, int(volume), self._tpr).items():
                vol[row] = vol.get(row, 0) + share
            self._vol_version += 1

    def close_session(self) -> None:
        """Mark the session closed: the day type becomes final."""
        self._facts.final = True

    # ---- reading -------------------------------------------------------------------------------
    def state(self) -> AuctionState:
        """The auction as known now (developing POC/VA recomputed only if counts changed)."""
        f = self._facts
        if f.open is not None:
            f.last = round(self._last_px * self._tpu)
        return derive_state(f, self.params, self._cache, (self._tpo_version, self._vol_version))

    def next_session(
        self, avg_ibr: float | None = None, avg_daily_range: float | None = None
    ) -> AuctionEngine:
        """A fresh engine for the following session, carrying this one as its prior and the naked
        POCs still untouched (including today's POC)."""
        s = self.state()
        naked = list(s.naked_pocs)
        if s.poc is not None:
            naked.append(s.poc)
        return AuctionEngine(self.params, s.to_prior(), naked, avg_ibr, avg_daily_range)

    # ---- internals -----------------------------------------------------------------------------
    def _enter(self, ts_ms: int, clock_ms: int) -> bool:
        """Place an update on the session clock; False when it is outside the session."""
        f = self._facts
        if f.day is None:
            day = session_date_of(ts_ms)
            open_ms, close_ms = session_bounds_ms(day, self.params)
            if not open_ms <= ts_ms < close_ms:
                return False
            f.day, f.open_ms, self._close_ms = day, open_ms, close_ms
        if ts_ms >= self._close_ms:
            if session_date_of(ts_ms) != f.day:
                raise SessionRolled(f"data for {session_date_of(ts_ms)} reached the {f.day} engine")
            f.final = True
            if f.now_ms is None or ts_ms > f.now_ms:
                f.now_ms = ts_ms
            return False
        if ts_ms < f.open_ms:
            if session_date_of(ts_ms) != f.day:
                raise SessionRolled(f"data for {session_date_of(ts_ms)} reached the {f.day} engine")
            return False  # pre-open is not part of the profile
        k = (ts_ms - f.open_ms) // self._period_ms
        if self._period is None or k != self._period[0]:
            self._start_period(k)
        if clock_ms >= self._close_ms:
            f.final = True
        if f.now_ms is None or clock_ms > f.now_ms:
            f.now_ms = clock_ms
        return True

    def _start_period(self, k: int) -> None:
        f = self._facts
        if self._period is not None and self._period[0] == 0:
            f.a_close = round(self._last_px * self._tpu)  # the close of A, for the opening type
        self._period = None
        self._p_start = f.open_ms + k * self._period_ms
        self._p_end = min(self._p_start + self._period_ms, self._close_ms)
        self._p_hi_px = -_INF
        self._p_lo_px = _INF
        self._k = k

    def _apply(self, price: float) -> None:
        """A price inside the current period (slow path: it may widen the period's range)."""
        t = round(price * self._tpu)
        f = self._facts
        tpr = self._tpr
        tpo = f.tpo
        period = self._period
        self._last_px = price
        if period is None:
            period = self._period = [self._k, t, t]
            f.periods.append(period)
            row = t // tpr
            tpo[row] = tpo.get(row, 0) + 1
            self._tpo_version += 1
            self._p_hi_px = self._p_lo_px = price
            if f.open is None:
                f.open = f.high = f.low = t
                self._up_target = t + self._drive
                self._down_target = t - self._drive
        else:
            if t > period[1]:
                for row in range(period[1] // tpr + 1, t // tpr + 1):
                    tpo[row] = tpo.get(row, 0) + 1
                period[1] = t
                self._p_hi_px = price
                self._tpo_version += 1
            elif t == period[1] and price > self._p_hi_px:
                self._p_hi_px = price
            if t < period[2]:
                for row in range(t // tpr, period[2] // tpr):
                    tpo[row] = tpo.get(row, 0) + 1
                period[2] = t
                self._p_lo_px = price
                self._tpo_version += 1
            elif t == period[2] and price < self._p_lo_px:
                self._p_lo_px = price
        if t > f.high:
            f.high = t
        if t < f.low:
            f.low = t
        if period[0] == 0:
            # Opening type: the adverse extreme reached before the drive first reached ±D.
            if f.low_before_up_drive is None and t >= self._up_target:
                f.low_before_up_drive = period[2]
            if f.high_before_down_drive is None and t <= self._down_target:
                f.high_before_down_drive = period[1]

    def _add_volume(self, price: float, qty: int) -> None:
        row = round(price * self._tpu) // self._tpr
        vol = self._facts.volume
        vol[row] = vol.get(row, 0) + qty
        self._vol_version += 1
