"""The 80% rule (amt.md §8): the market opens outside the prior session's value area, then trades
inside it in two consecutive 30-minute periods -> trade toward the opposite value-area edge.

Rule as coded: the open is above the prior VAH (short setup) or below the prior VAL (long setup);
a period "trades inside" when any of its candles reaches into [VAL, VAH]; the signal fires at the
close of the first candle of a period that trades inside when the period before it did too. Entry
at that close, target the opposite VA edge, stop one row beyond the re-entry edge (VAH + row for a
short, VAL - row for a long). Skipped when the entry is not strictly between stop and target.
With `setup=open_or_move`, a market that opened inside value arms the same setup once a whole
completed period trades outside it (every price above VAH, or below VAL); the two periods back
inside must come after that one.
Vector (amt.md): prior VA 100-120, open 125; A trades 119-126, B 112-121 -> short in B, target 100.
Pure Python.
"""

from __future__ import annotations

from decimal import Decimal

from strategies.base import LONG, SHORT, Candle, Param, to_ticks
from strategies.library.bracket import BracketStrategy, Entry, completed_periods, period_of, ticks_to_price


class EightyPercentRule(BracketStrategy):
    slug = "eighty_percent"
    title = "80% rule"
    description = "Opened outside prior value, then two consecutive periods inside: go for the other edge."
    needs = frozenset({"auction"})

    row_size = Param("float", 5.0, min=0.05, max=1000.0, help="One row, in index points (stop buffer).")
    setup = Param(
        "choice",
        "open",
        choices=("open", "open_or_move"),
        help="open: only an open outside value; open_or_move: also a whole period spent outside later.",
    )

    def reset_session(self) -> None:
        super().reset_session()
        self._setup: str | None = None  # SHORT when outside above value, LONG below, "" for neither
        self._inside: set[int] = set()

    def find_entry(self, candle: Candle, state, minute: int) -> Entry | None:
        prior = state.prior
        if prior is None or prior.vah is None or prior.val is None or state.open is None:
            return None
        vah, val = to_ticks(prior.vah), to_ticks(prior.val)
        if self._setup is None:
            opened = to_ticks(state.open)
            self._setup = SHORT if opened > vah else LONG if opened < val else ""
        if not self._setup and self.setup == "open_or_move":
            # Moved outside: a completed period entirely above/below value arms the setup; only
            # periods after it count as trading back inside.
            for _, low, high in completed_periods(state, minute):
                if low > vah or high < val:
                    self._setup = SHORT if low > vah else LONG
                    self._inside.clear()
                    return None
        if not self._setup:
            return None
        if not (to_ticks(candle.low) <= vah and to_ticks(candle.high) >= val):
            return None
        k = period_of(minute)
        first_inside_this_period = k not in self._inside
        self._inside.add(k)
        if not (first_inside_this_period and k - 1 in self._inside):
            return None
        row = to_ticks(self.row_size)
        close = to_ticks(candle.close)
        if self._setup == SHORT:
            stop, target = vah + row, val
            if not target < close < stop:
                return None
        else:
            stop, target = val - row, vah
            if not stop < close < target:
                return None
        return Entry(
            self._setup,
            close,
            Decimal(stop),
            Decimal(target),
            f"opened {'above' if self._setup == SHORT else 'below'} prior value "
            f"{ticks_to_price(val)}–{ticks_to_price(vah)}, two periods back inside",
            {
                "prior_vah": prior.vah,
                "prior_val": prior.val,
                "open": state.open,
                "period": state.period_letter,
            },
        )
