"""`manage.py profile`: one session's market profile from a file or the history store, as a classic
TPO letter chart or as JSON.

A thin shell: loading is strategies.engine.loading (or persistence.readers for the store) and every
number comes from strategies.engine. Errors are one line (CommandError), never a traceback.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.core.management.base import BaseCommand, CommandError

from strategies.engine import AuctionState, compute_sessions, params_for
from strategies.engine.loading import MarketDataError, candles_from_arrow, load_file
from strategies.engine.serialize import price_key, state_to_dict

IST = ZoneInfo("Asia/Kolkata")
# Enough calendar days before the date for the prior session and the 20-session averages.
LOOKBACK_DAYS = 45


class Command(BaseCommand):
    help = "Print one session's market profile (TPO chart, or --json) from --input or the history store."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--input", help="Parquet or CSV of 1-minute candles or ticks (default: history store)"
        )
        parser.add_argument("--instrument", required=True, help="instrument key, e.g. 'NSE_INDEX|Nifty 50'")
        parser.add_argument("--date", required=True, help="session date, YYYY-MM-DD")
        parser.add_argument("--row-size", type=float, help="row height in points (default: per instrument)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options) -> None:
        try:
            day = date.fromisoformat(options["date"])
        except ValueError:
            raise CommandError(f"--date must be YYYY-MM-DD, not {options['date']!r}") from None
        key = options["instrument"]
        params = params_for(key)
        if options["row_size"] is not None:
            try:
                params = params.with_row_size(options["row_size"])
            except ValueError as exc:
                raise CommandError(f"--row-size {options['row_size']}: {exc}") from None
        data, source = self._load(options["input"], key, day)
        if len(data) == 0:
            raise CommandError(
                f"no session on {day} for {key} in {source} (no rows in the {LOOKBACK_DAYS} days up to it)"
            )
        today = datetime.now(IST).date()
        states = compute_sessions(data, params, final=True if day < today else None)
        state = next((s for s in states if s.session_date == day), None)
        if state is None:
            known = ", ".join(str(s.session_date) for s in states[-5:]) or "none"
            raise CommandError(f"no session on {day} for {key} in {source} (latest sessions: {known})")
        if state.poc is None:
            raise CommandError(f"the session on {day} for {key} is empty")
        if options["json"]:
            self.stdout.write(json.dumps(as_json(state, key)))
        else:
            self.stdout.write(tpo_chart(state, key))

    def _load(self, path: str | None, key: str, day: date):
        start = day - timedelta(days=LOOKBACK_DAYS)
        if path:
            try:
                return load_file(path, key, start, day), path
            except MarketDataError as exc:
                raise CommandError(str(exc)) from None
        try:
            from persistence.readers import read_candles_1m
        except ImportError as exc:
            raise CommandError(f"the history store reader is not available ({exc}); pass --input") from None
        try:
            table = read_candles_1m(key, start, day)
            return candles_from_arrow(table), "the history store"
        except (MarketDataError, OSError, ValueError) as exc:
            raise CommandError(f"cannot read the history store: {exc}") from None


def as_json(state: AuctionState, instrument_key: str) -> dict:
    return {"instrument_key": instrument_key, **state_to_dict(state)}


def tpo_chart(state: AuctionState, instrument_key: str) -> str:
    """Rows highest first: price, marks (P = POC, V = value area, I = initial balance), letters."""
    row = state.row_size
    letters: dict[float, list[str]] = {r: [] for r in state.tpo_counts}
    for letter, lo, hi in state.periods:
        for r in state.tpo_counts:
            if r <= hi and r + row > lo:
                letters[r].append(letter)
    width = max(len(price_key(r)) for r in state.tpo_counts)
    lines = [f"{instrument_key}  {state.session_date}  rows of {price_key(row)}  (P POC, V value area, I IB)"]
    for r in sorted(state.tpo_counts, reverse=True):
        poc = "P" if r == state.poc else " "
        va = "V" if state.val is not None and state.val <= r <= state.vah else " "
        ib = "I" if state.ibl is not None and r + row > state.ibl and r <= state.ibh else " "
        lines.append(f"{price_key(r):>{width}} {poc}{va}{ib} {''.join(letters[r])}")
    sp = ", ".join(f"{price_key(a)}-{price_key(b)}" for a, b in state.single_prints) or "none"

    def extreme(poor: bool, excess: bool, weak: bool) -> str:
        return "poor" if poor else "excess" if excess else "weak" if weak else "-"

    lines += [
        "",
        f"open {price_key(state.open)}  high {price_key(state.high)}  low {price_key(state.low)}  "
        f"close {price_key(state.last)}",
        f"POC {price_key(state.poc)}  VAH {price_key(state.vah)}  VAL {price_key(state.val)}"
        + (f"  VPOC {price_key(state.volume_poc)}" if state.volume_poc is not None else ""),
        f"IB {price_key(state.ibl)}-{price_key(state.ibh)} (IBR {price_key(state.ibr)})  "
        f"extension up {'yes' if state.extension_up else 'no'}, down {'yes' if state.extension_down else 'no'}",
        f"open location {state.open_location or '-'}  open type {state.open_type}",
        f"day type {state.day_type} ({'final' if state.day_type_final else 'provisional'})  "
        f"shape {state.shape}  {state.balance}  rotation factor {state.rotation_factor:+d}",
        f"single prints {sp}  high {extreme(state.poor_high, state.excess_high, state.weak_high)}  "
        f"low {extreme(state.poor_low, state.excess_low, state.weak_low)}",
        f"value vs prior {state.value_relation or '-'}  naked POCs "
        + (", ".join(price_key(p) for p in state.naked_pocs) or "none"),
    ]
    return "\n".join(lines)
