"""The exit side of a position on the underlying: a stop, an optional target and the intraday
square-off, checked on each completed 1-minute candle.

Shared by every strategy so they all exit the same way: the stop is hit when the candle's low
(long) / high (short) reaches it, the target when the high (long) / low (short) reaches it, the stop
first when both are in one candle (the path inside a candle is unknown: assume the worse); the exit
price is the level itself, or the candle's open when it opened already beyond the level (a gap fills
a real stop or limit order at the open). `BracketStrategy` wraps that for the engine-based
strategies: entry at a candle's close, exits from the next candle, square-off time. Pure Python.

Levels may fall between ticks (an IB midpoint, IBH + 0.5 x IBR). They are kept exact, as a Decimal
number of ticks; decisions compare integer candle ticks against the level snapped away from the
entry (floor for a long stop / short target, ceil for a long target / short stop), which decides
exactly as comparing with the exact level would, without float equality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal
from typing import Any

from strategies.base import (
    ENTRY,
    EXIT,
    LONG,
    SESSION_OPEN_MINUTE,
    TICKS_PER_POINT,
    Candle,
    Param,
    Signal,
    Strategy,
    minute_of_day,
    minutes,
    to_ticks,
)

TICK = Decimal(1) / TICKS_PER_POINT


def ticks_to_price(ticks: Decimal | int) -> Decimal:
    return Decimal(ticks) / TICKS_PER_POINT


@dataclass(slots=True)
class Bracket:
    side: str
    entry_ticks: int
    stop: Decimal  # exact level, in ticks
    target: Decimal | None  # exact level, in ticks
    entry_ts_ms: int
    _stop_cmp: int = field(init=False)
    _target_cmp: int | None = field(init=False)

    def __post_init__(self) -> None:
        long = self.side == LONG
        self._stop_cmp = math.floor(self.stop) if long else math.ceil(self.stop)
        if self.target is None:
            self._target_cmp = None
        else:
            self._target_cmp = math.ceil(self.target) if long else math.floor(self.target)

    def move_target(self, target: Decimal | None) -> None:
        self.target = target
        if target is None:
            self._target_cmp = None
        else:
            self._target_cmp = math.ceil(target) if self.side == LONG else math.floor(target)

    def check(self, candle: Candle) -> tuple[Decimal, str] | None:
        """(exit price in ticks, "stop"|"target") when this candle closes the position, else None."""
        # Only the fields a decision needs are put on the tick grid (this runs for every candle
        # a position is open).
        stop, target = self._stop_cmp, self._target_cmp
        if self.side == LONG:
            if round(candle.low * TICKS_PER_POINT) <= stop:
                o = round(candle.open * TICKS_PER_POINT)
                return (Decimal(o) if o <= stop else self.stop), "stop"
            if target is not None and round(candle.high * TICKS_PER_POINT) >= target:
                o = round(candle.open * TICKS_PER_POINT)
                return (Decimal(o) if o >= target else self.target), "target"
        else:
            if round(candle.high * TICKS_PER_POINT) >= stop:
                o = round(candle.open * TICKS_PER_POINT)
                return (Decimal(o) if o >= stop else self.stop), "stop"
            if target is not None and round(candle.low * TICKS_PER_POINT) <= target:
                o = round(candle.open * TICKS_PER_POINT)
                return (Decimal(o) if o <= target else self.target), "target"
        return None


@dataclass(frozen=True, slots=True)
class Entry:
    """What a `BracketStrategy` decides to enter: levels as exact Decimal ticks."""

    side: str
    price_ticks: int
    stop: Decimal
    target: Decimal | None
    reason: str
    facts: dict


class BracketStrategy(Strategy):
    """A strategy that enters on the underlying at a candle's close and exits by `Bracket` (stop,
    target) or at the square-off time, at most `max_trades` times a day. Subclasses implement
    `find_entry(candle, state, minute)`; they may move the target with `self.position.target`."""

    exit_time = Param("time", time(15, 15), min=time(9, 30), max=time(15, 29), help="Square-off time.")
    max_trades = Param("int", 1, min=1, max=10, help="Most entries a day.")

    def __init__(self, instrument_key: str, params=None) -> None:
        super().__init__(instrument_key, params)
        self._exit_minute = minutes(self.exit_time)
        self.reset_session()

    def reset_session(self) -> None:
        self.position: Bracket | None = None
        self.trades_today = 0

    def on_session_start(self, session_date, state=None) -> list[Signal]:
        super().on_session_start(session_date, state)
        self.reset_session()
        return []

    def find_entry(self, candle: Candle, state: Any, minute: int) -> Entry | None:
        raise NotImplementedError

    def on_candle(self, candle: Candle, state: Any = None) -> list[Signal]:
        minute = minute_of_day(candle.ts_ms)
        if self.position is not None:
            if minute >= self._exit_minute:
                return [self._exit(candle.ts_ms, Decimal(to_ticks(candle.open)), "square-off")]
            hit = self.position.check(candle)
            if hit is not None:
                return [self._exit(candle.ts_ms, *hit)]
            self.manage(candle, state, minute)
            return []
        if minute >= self._exit_minute or self.trades_today >= self.max_trades:
            self.session_done = True
            return []
        if state is None:
            return []
        entry = self.find_entry(candle, state, minute)
        if entry is None:
            return []
        ts = candle.ts_ms + 60_000  # at the candle's close
        self.position = Bracket(entry.side, entry.price_ticks, entry.stop, entry.target, ts)
        self.trades_today += 1
        price = float(ticks_to_price(entry.price_ticks))
        return [
            self.signal(
                ts,
                entry.side,
                ENTRY,
                price,
                entry=price,
                stop=float(ticks_to_price(entry.stop)),
                target=None if entry.target is None else float(ticks_to_price(entry.target)),
                reason=entry.reason,
                facts=entry.facts,
            )
        ]

    def manage(self, candle: Candle, state: Any, minute: int) -> None:
        """Called on every candle a position survives (after the exit checks)."""

    def _exit(self, ts_ms: int, price_ticks: Decimal, why: str) -> Signal:
        position, self.position = self.position, None
        assert position is not None
        if self.trades_today >= self.max_trades:
            self.session_done = True
        return self.signal(
            ts_ms, position.side, EXIT, float(ticks_to_price(price_ticks)), reason=why, facts={"exit": why}
        )

    def on_session_end(self, last: Candle | None, state: Any = None) -> list[Signal]:
        if self.position is None or last is None:
            return []
        return [self._exit(last.ts_ms + 60_000, Decimal(to_ticks(last.close)), "end of data")]


def period_of(minute: int) -> int:
    """TPO period index (A=0) of a minute of the day; negative before the open."""
    return (minute - SESSION_OPEN_MINUTE) // 30


def closes_period(minute: int) -> bool:
    """True for the last 1-minute candle of a 30-minute period (its close ends the period)."""
    return minute >= SESSION_OPEN_MINUTE and (minute - SESSION_OPEN_MINUTE) % 30 == 29


def letter_index(letter: str) -> int:
    return ord(letter) - ord("A") if letter <= "Z" else 26 + ord(letter) - ord("a")


def completed_periods(state: Any, minute: int) -> list[tuple[int, int, int]]:
    """(index, low ticks, high ticks) of the periods that have ended once this candle has closed."""
    current = period_of(minute)
    done = []
    for letter, low, high in state.periods:
        k = letter_index(letter)
        if k < current or (k == current and closes_period(minute)):
            done.append((k, to_ticks(low), to_ticks(high)))
    return done
