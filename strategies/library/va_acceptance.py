"""Value-area acceptance (amt.md §8): the market opens outside the prior value area and holds there
for the first two periods (A and B) -> go with it.

Rule as coded: the open is above the prior VAH (long setup) or below the prior VAL (short); A and
B each stay entirely outside value on that side (every low above VAH, or every high below VAL).
Entry at the close of B (the IB's last candle). Target: the next reference level beyond the entry by
at least one row, among the prior high/low, POC, VAH/VAL and the naked POCs; with none,
entry ± `fallback_ibr` x IBR. Stop: one row back inside value (VAH - row for a long, VAL + row for
a short). Pure Python.
"""

from __future__ import annotations

from decimal import Decimal

from strategies.base import LONG, SHORT, Candle, Param, to_ticks
from strategies.library.bracket import BracketStrategy, Entry, closes_period, completed_periods


class ValueAreaAcceptance(BracketStrategy):
    slug = "va_acceptance"
    title = "Value-area acceptance"
    description = "Opened outside prior value and held there for A and B: go with it."
    needs = frozenset({"auction"})

    row_size = Param("float", 5.0, min=0.05, max=1000.0, help="One row, in index points.")
    fallback_ibr = Param(
        "float", 1.0, min=0.1, max=5.0, help="Target in IB ranges when no reference lies ahead."
    )

    def find_entry(self, candle: Candle, state, minute: int) -> Entry | None:
        prior = state.prior
        if prior is None or prior.vah is None or prior.val is None or state.open is None:
            return None
        done = completed_periods(state, minute)
        if [k for k, _, _ in done] != [0, 1] or not closes_period(minute):
            return None  # decide exactly once: at the close of B
        vah, val, opened = to_ticks(prior.vah), to_ticks(prior.val), to_ticks(state.open)
        row = to_ticks(self.row_size)
        close = to_ticks(candle.close)
        refs = [prior.high, prior.low, prior.poc, prior.vah, prior.val, *state.naked_pocs]
        refs_t = [to_ticks(r) for r in refs if r is not None]
        ibr = to_ticks(state.ibr or 0)
        k = Decimal(str(self.fallback_ibr))
        if opened > vah and all(low > vah for _, low, _ in done):
            side, stop = LONG, Decimal(vah - row)
            ahead = [r for r in refs_t if r >= close + row]
            target = Decimal(min(ahead)) if ahead else close + k * ibr
        elif opened < val and all(high < val for _, _, high in done):
            side, stop = SHORT, Decimal(val + row)
            ahead = [r for r in refs_t if r <= close - row]
            target = Decimal(max(ahead)) if ahead else close - k * ibr
        else:
            return None
        if side == LONG and not stop < close < target or side == SHORT and not target < close < stop:
            return None
        return Entry(
            side,
            close,
            stop,
            target,
            f"opened {'above' if side == LONG else 'below'} prior value and held outside it through A and B",
            {"prior_vah": prior.vah, "prior_val": prior.val, "open": state.open, "ibr": state.ibr},
        )
