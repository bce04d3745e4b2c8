"""Look above and fail (amt.md §8), and its mirror, look below and fail: price trades beyond a
reference high (prior high, prior VAH, today's IBH once the IB is complete) but finds no acceptance
there -> fade it.

Rule as coded, for the upside (the downside mirrors it): a probe starts when a candle's high is
above the reference; it is accepted once a complete 30-minute period that started at or after the
probe keeps its low above the reference, and then it is never faded. An unaccepted probe fails when
a candle closes back below the reference: short at that close, stop one row above the probe's high,
target the nearest POC (today's developing or the prior one) at least one row below the entry, else
the nearest value-area low (today's or the prior) at least one row below, else no trade.
Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from strategies.base import LONG, SHORT, Candle, Param, to_ticks
from strategies.library.bracket import BracketStrategy, Entry, completed_periods, period_of, ticks_to_price


@dataclass(slots=True)
class _Probe:
    start_period: int
    extreme: int  # ticks: the highest high (upside) / lowest low (downside) of the probe


class LookAboveAndFail(BracketStrategy):
    slug = "look_above_fail"
    title = "Look above / below and fail"
    description = (
        "A probe beyond prior high/VAH/IBH (or low/VAL/IBL) without a period of acceptance: fade it."
    )
    needs = frozenset({"auction"})

    row_size = Param("float", 5.0, min=0.05, max=1000.0, help="One row, in index points (stop buffer).")
    sides = Param("choice", "both", choices=("both", "above", "below"), help="Which failures to fade.")

    def reset_session(self) -> None:
        super().reset_session()
        self._probes: dict[tuple[str, str], _Probe | None] = {}
        self._accepted: set[tuple[str, str]] = set()

    def _references(self, state) -> list[tuple[str, str, int]]:
        prior = state.prior
        refs = []
        if self.sides in ("both", "above"):
            if prior is not None:
                refs.append(("above", "prior high", to_ticks(prior.high)))
                if prior.vah is not None:
                    refs.append(("above", "prior VAH", to_ticks(prior.vah)))
            if state.ib_complete and state.ibh is not None:
                refs.append(("above", "IBH", to_ticks(state.ibh)))
        if self.sides in ("both", "below"):
            if prior is not None:
                refs.append(("below", "prior low", to_ticks(prior.low)))
                if prior.val is not None:
                    refs.append(("below", "prior VAL", to_ticks(prior.val)))
            if state.ib_complete and state.ibl is not None:
                refs.append(("below", "IBL", to_ticks(state.ibl)))
        return refs

    def find_entry(self, candle: Candle, state, minute: int) -> Entry | None:
        high, low, close = to_ticks(candle.high), to_ticks(candle.low), to_ticks(candle.close)
        k = period_of(minute)
        done = completed_periods(state, minute)
        row = to_ticks(self.row_size)
        for direction, name, ref in self._references(state):
            key = (direction, name)
            if key in self._accepted:
                continue
            up = direction == "above"
            probe = self._probes.get(key)
            beyond = high > ref if up else low < ref
            if beyond:
                if probe is None:
                    probe = self._probes[key] = _Probe(k, high if up else low)
                else:
                    probe.extreme = max(probe.extreme, high) if up else min(probe.extreme, low)
            if probe is None:
                continue
            held = [p for p in done if p[0] >= probe.start_period and (p[1] > ref if up else p[2] < ref)]
            if held:
                self._accepted.add(key)
                self._probes[key] = None
                continue
            failed = close < ref if up else close > ref
            if not failed:
                continue
            self._probes[key] = None
            entry = self._entry(state, up, name, ref, probe, close, row)
            if entry is not None:
                return entry
        return None

    def _entry(
        self, state, up: bool, name: str, ref: int, probe: _Probe, close: int, row: int
    ) -> Entry | None:
        prior = state.prior
        pocs = [p for p in (state.poc, prior.poc if prior else None) if p is not None]
        edges = [
            e
            for e in (
                (state.val, prior.val if prior else None) if up else (state.vah, prior.vah if prior else None)
            )
            if e is not None
        ]
        if up:
            side, stop = SHORT, Decimal(probe.extreme + row)
            pick = [to_ticks(p) for p in pocs if to_ticks(p) <= close - row] or [
                to_ticks(e) for e in edges if to_ticks(e) <= close - row
            ]
            target = max(pick) if pick else None
        else:
            side, stop = LONG, Decimal(probe.extreme - row)
            pick = [to_ticks(p) for p in pocs if to_ticks(p) >= close + row] or [
                to_ticks(e) for e in edges if to_ticks(e) >= close + row
            ]
            target = min(pick) if pick else None
        if target is None:
            return None
        word = "above" if up else "below"
        return Entry(
            side,
            close,
            stop,
            Decimal(target),
            f"look {word} {name} {ticks_to_price(ref)} failed (extreme {ticks_to_price(probe.extreme)})",
            {
                "reference": name,
                "level": float(ticks_to_price(ref)),
                "extreme": float(ticks_to_price(probe.extreme)),
            },
        )
