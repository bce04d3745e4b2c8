"""Initial-balance breakout (amt.md §8): after the IB, a 5-minute close at least one row beyond the
IB high/low enters in that direction; target IBH + k x IBR (IBL - k x IBR), stop at the IB midpoint,
square-off at the exit time. At most one trade a day.

The rules, exactly:
- 5-minute candles start at 09:15, 09:20, ...; IB = high/low of the session's 1-minute candles
  starting in [09:15, 10:15); a day whose IBR is 0 (or that has no IB candles) is skipped.
- At the close of each 5-minute candle starting at or after 10:15 and before the exit time, with no
  trade taken today: close >= IBH + one row -> long at that close; close <= IBL - one row -> short.
- Exits (from the first 1-minute candle after the entry candle) follow `bracket.Bracket`; still open
  at the 1-minute candle starting at the exit time: exit at its open.

A 5-minute candle closes with its last 1-minute candle (start + 4 min); when that minute is missing
from the data, it closes when the first candle of a later bucket arrives, before that candle is
checked for exits. Needs nothing from the auction engine: it runs on the fast path.
Pure Python: no Django, Celery or Redis.
"""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal

from strategies.base import (
    ENTRY,
    EXIT,
    LONG,
    SESSION_OPEN_MINUTE,
    SHORT,
    Candle,
    Param,
    Signal,
    Strategy,
    minute_of_day,
    minutes,
    to_ticks,
)
from strategies.library.bracket import Bracket, ticks_to_price

IB_END_MINUTE = 10 * 60 + 15


class IBBreakout(Strategy):
    slug = "ib_breakout"
    title = "Initial-balance breakout"
    description = (
        "After 10:15 a 5-minute close one row beyond the IB: go with it, target k x IBR, stop IB mid."
    )
    needs = frozenset()

    row_size = Param("float", 5.0, min=0.05, max=1000.0, help="One row, in index points.")
    target_ibr = Param("float", 1.0, min=0.1, max=10.0, help="Target distance in IB ranges (k).")
    exit_time = Param("time", time(15, 15), min=time(10, 20), max=time(15, 29), help="Square-off time.")

    def __init__(self, instrument_key: str, params=None) -> None:
        super().__init__(instrument_key, params)
        self._row_ticks = to_ticks(self.row_size)
        self._k = Decimal(str(self.target_ibr))
        self._exit_minute = minutes(self.exit_time)
        self._reset()

    def _reset(self) -> None:
        # IB extremes as prices while the IB builds (rounding to ticks is monotone, so the tick of
        # the highest price is the highest tick); in ticks from the first post-IB candle on.
        self._ib_hi_px = float("-inf")
        self._ib_lo_px = float("inf")
        self._ibh: int | None = None
        self._ibl: int | None = None
        self._bucket: int | None = None  # index of the open 5-minute candle
        self._bucket_close_px: float = 0.0
        self._bucket_end_ts: int = 0
        self._traded = False
        self._position: Bracket | None = None
        self._done = False  # square-off passed, the day is skipped, or today's trade is over
        self.session_done = False

    def on_session_start(self, session_date: date, state=None) -> list[Signal]:
        super().on_session_start(session_date, state)
        self._reset()
        return []

    def on_candle(self, candle: Candle, state=None) -> list[Signal]:
        minute = minute_of_day(candle.ts_ms)
        signals: list[Signal] = []
        if minute < IB_END_MINUTE:
            if minute >= SESSION_OPEN_MINUTE:
                if candle.high > self._ib_hi_px:
                    self._ib_hi_px = candle.high
                if candle.low < self._ib_lo_px:
                    self._ib_lo_px = candle.low
            return signals
        if self._done:
            return signals
        if self._ibh is None and self._ib_hi_px >= self._ib_lo_px:
            self._ibh, self._ibl = to_ticks(self._ib_hi_px), to_ticks(self._ib_lo_px)
        bucket = (minute - SESSION_OPEN_MINUTE) // 5
        if self._bucket is not None and bucket != self._bucket:
            # The previous 5-minute candle's last minute was missing: it closes now.
            signals.extend(self._on_five_minute_close())
        if self._position is not None:
            exit_signal = self._check_exit(candle, minute)
            if exit_signal is not None:
                signals.append(exit_signal)
        elif minute >= self._exit_minute:
            self._done = self.session_done = True
        if self._done:
            self._bucket = None
            return signals
        self._bucket = bucket
        self._bucket_close_px = candle.close
        self._bucket_end_ts = candle.ts_ms + (5 - (minute - SESSION_OPEN_MINUTE) % 5) * 60_000
        if (minute - SESSION_OPEN_MINUTE) % 5 == 4:
            signals.extend(self._on_five_minute_close())
        return signals

    def _on_five_minute_close(self) -> list[Signal]:
        bucket, self._bucket = self._bucket, None
        if self._traded or bucket is None or self._ibh is None or self._ibl is None:
            return []
        start_minute = SESSION_OPEN_MINUTE + 5 * bucket
        if start_minute < IB_END_MINUTE or start_minute >= self._exit_minute:
            return []
        ibh, ibl = self._ibh, self._ibl
        ibr = ibh - ibl
        if ibr == 0:
            self._done = self.session_done = True
            return []
        close = to_ticks(self._bucket_close_px)
        if close >= ibh + self._row_ticks:
            side, target = LONG, ibh + self._k * ibr
        elif close <= ibl - self._row_ticks:
            side, target = SHORT, ibl - self._k * ibr
        else:
            return []
        stop = Decimal(ibh + ibl) / 2
        ts = self._bucket_end_ts  # the 5-minute candle's close (its start + 5 min)
        self._traded = True
        self._position = Bracket(side, close, stop, target, ts)
        facts = {
            "ibh": float(ticks_to_price(ibh)),
            "ibl": float(ticks_to_price(ibl)),
            "ibr": float(ticks_to_price(ibr)),
            "close_5m": float(ticks_to_price(close)),
            "row_size": self.row_size,
        }
        beyond = "above IBH" if side == LONG else "below IBL"
        return [
            self.signal(
                ts,
                side,
                ENTRY,
                float(ticks_to_price(close)),
                entry=float(ticks_to_price(close)),
                stop=float(ticks_to_price(stop)),
                target=float(ticks_to_price(target)),
                reason=f"5-min close {ticks_to_price(close)} one row {beyond} "
                f"(IB {ticks_to_price(ibl)}–{ticks_to_price(ibh)})",
                facts=facts,
            )
        ]

    def _check_exit(self, candle: Candle, minute: int) -> Signal | None:
        position = self._position
        assert position is not None
        if minute >= self._exit_minute:
            price, why = Decimal(to_ticks(candle.open)), "square-off"
        else:
            hit = position.check(candle)
            if hit is None:
                return None
            price, why = hit
        self._position = None
        self._done = self.session_done = True  # at most one trade a day
        return self.signal(
            candle.ts_ms,
            position.side,
            EXIT,
            float(ticks_to_price(price)),
            reason={"stop": "stop at IB midpoint", "target": "target k x IBR"}.get(why, "square-off time"),
            facts={"exit": why},
        )

    def on_session_end(self, last: Candle | None, state=None) -> list[Signal]:
        signals: list[Signal] = []
        if self._bucket is not None and not self._done:
            signals.extend(self._on_five_minute_close())
        if self._position is not None and last is not None:
            # The data ended before the square-off time: exit at the last close.
            position, self._position = self._position, None
            signals.append(
                self.signal(
                    last.ts_ms + 60_000,
                    position.side,
                    EXIT,
                    last.close,
                    reason="end of data before square-off",
                    facts={"exit": "end_of_data"},
                )
            )
        return signals
