"""The exit side of a position on the underlying: a stop, an optional target and the intraday
square-off, checked on each completed 1-minute candle.

Shared by every strategy so they all exit the same way: the stop is hit when the candle's low
(long) / high (short) reaches it, the target when the high (long) / low (short) reaches it, the stop
first when both are in one candle (the path inside a candle is unknown: assume the worse); the exit
price is the level itself, or the candle's open when it opened already beyond the level (a gap fills
a real stop or limit order at the open). Pure Python.

Levels may fall between ticks (an IB midpoint, IBH + 0.5 x IBR). They are kept exact, as a Decimal
number of ticks; decisions compare integer candle ticks against the level snapped away from the
entry (floor for a long stop / short target, ceil for a long target / short stop), which decides
exactly as comparing with the exact level would, without float equality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

from strategies.base import LONG, TICKS_PER_POINT, Candle, to_ticks

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

    def check(self, candle: Candle) -> tuple[Decimal, str] | None:
        """(exit price in ticks, "stop"|"target") when this candle closes the position, else None."""
        o, h, lo = to_ticks(candle.open), to_ticks(candle.high), to_ticks(candle.low)
        stop, target = self._stop_cmp, self._target_cmp
        if self.side == LONG:
            if lo <= stop:
                return (Decimal(o) if o <= stop else self.stop), "stop"
            if target is not None and h >= target:
                return (Decimal(o) if o >= target else self.target), "target"
        else:
            if h >= stop:
                return (Decimal(o) if o >= stop else self.stop), "stop"
            if target is not None and lo <= target:
                return (Decimal(o) if o <= target else self.target), "target"
        return None
