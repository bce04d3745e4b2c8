"""Open-drive follow (amt.md §8): when the engine classifies the opening as an Open Drive (at the end
of period A, 09:45), follow the drive.

Rule as coded: entry at the close of the first candle after which `state.open_type` is
open_drive_up/down, if that is no later than `confirm_by`. Stop at the open (`stop_at=open`) or at
the A-period extreme against the drive (`stop_at=a_extreme`). Target: open ± `target_ibr` x IBR;
until the IB is complete the A-period range stands in for the IBR, and the target moves to the real
IBR when the IB completes (if still open). Pure Python.
"""

from __future__ import annotations

from datetime import time
from decimal import Decimal

from strategies.base import LONG, SHORT, Candle, Param, minutes, to_ticks
from strategies.library.bracket import BracketStrategy, Entry, ticks_to_price

UP = "open_drive_up"
DOWN = "open_drive_down"


class OpenDriveFollow(BracketStrategy):
    slug = "open_drive"
    title = "Open-drive follow"
    description = "Open Drive confirmed at the end of A: go with the drive, stop at the open."
    needs = frozenset({"auction"})

    target_ibr = Param("float", 1.5, min=0.5, max=3.0, help="Target distance from the open in IB ranges.")
    stop_at = Param(
        "choice", "open", choices=("open", "a_extreme"), help="Stop at the open or the A extreme."
    )
    confirm_by = Param("time", time(9, 45), min=time(9, 30), max=time(10, 15), help="Latest entry time.")

    def reset_session(self) -> None:
        super().reset_session()
        self._open_t = 0
        self._ib_target_set = False

    def _target(self, side: str, ibr_t: int) -> Decimal:
        k = Decimal(str(self.target_ibr))
        return self._open_t + k * ibr_t if side == LONG else self._open_t - k * ibr_t

    def find_entry(self, candle: Candle, state, minute: int) -> Entry | None:
        if state.open_type not in (UP, DOWN) or minute + 1 > minutes(self.confirm_by) or not state.periods:
            return None
        side = LONG if state.open_type == UP else SHORT
        self._open_t = to_ticks(state.open)
        _, a_low, a_high = state.periods[0]
        a_low_t, a_high_t = to_ticks(a_low), to_ticks(a_high)
        if self.stop_at == "open":
            stop = self._open_t
        else:
            stop = a_low_t if side == LONG else a_high_t
        close = to_ticks(candle.close)
        target = self._target(side, a_high_t - a_low_t)
        if side == LONG and not stop < close < target or side == SHORT and not target < close < stop:
            return None
        return Entry(
            side,
            close,
            Decimal(stop),
            target,
            f"Open Drive {'up' if side == LONG else 'down'} from {ticks_to_price(self._open_t)}",
            {"open": state.open, "open_type": state.open_type, "a_low": a_low, "a_high": a_high},
        )

    def manage(self, candle: Candle, state, minute: int) -> None:
        if self._ib_target_set or state is None or not state.ib_complete or not state.ibr:
            return
        self._ib_target_set = True
        assert self.position is not None
        self.position.move_target(self._target(self.position.side, to_ticks(state.ibr)))
