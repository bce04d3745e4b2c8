"""`manage.py backtest SLUG --from D --to D ...`: run one strategy over recorded 1-minute candles
and print its metrics and trades (a table, or one JSON object with --json).

Thin: parses arguments, loads candles (a Parquet/CSV file, or the history store through
`persistence.readers.read_candles_1m`), and calls the pure runner in `strategies.backtest`.
Every bad input is a one-line CommandError (non-zero exit), never a traceback.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

DEFAULT_INSTRUMENT = "NSE_INDEX|Nifty 50"


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"not a date (YYYY-MM-DD): {text!r}") from None


class Command(BaseCommand):
    help = "Backtest a strategy over recorded 1-minute candles."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="strategy slug (see strategies.library.REGISTRY)")
        parser.add_argument("--from", dest="start", required=True, help="first session, YYYY-MM-DD")
        parser.add_argument("--to", dest="end", required=True, help="last session, YYYY-MM-DD")
        parser.add_argument(
            "--instrument", default=None, help=f"instrument key (default {DEFAULT_INSTRUMENT})"
        )
        parser.add_argument("--input", default=None, help="Parquet or CSV of 1-minute candles")
        parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
        parser.add_argument("--fill", choices=("underlying", "modelled"), default="underlying")
        parser.add_argument("--lots", type=int, default=1, help="option lots per signal (modelled fill)")
        parser.add_argument("--iv", type=float, default=0.14, help="implied volatility (modelled fill)")
        parser.add_argument("--strike-offset", type=int, default=0, help="0 ATM, +n ITM, -n OTM")
        parser.add_argument("--slippage", default="0.05", help="option slippage in rupees (modelled fill)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **opts):
        from strategies.backtest.data import read_candles, series_from_table
        from strategies.backtest.runner import OptionFillConfig, run_backtest
        from strategies.library import REGISTRY

        slug = opts["slug"]
        if slug not in REGISTRY:
            raise CommandError(f"unknown strategy {slug!r}; known: {', '.join(sorted(REGISTRY))}")
        strategy_cls = REGISTRY[slug]
        start, end = _date(opts["start"]), _date(opts["end"])
        if end < start:
            raise CommandError(f"empty range: --to {end} is before --from {start}")
        params: dict[str, str] = {}
        for item in opts["param"]:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise CommandError(f"--param takes NAME=VALUE, got {item!r}")
            params[name.strip()] = value
        _, errors = strategy_cls.validate_params(params)
        if errors:
            raise CommandError("bad parameters: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        if opts["lots"] < 1 or opts["iv"] <= 0:
            raise CommandError("--lots must be ≥ 1 and --iv > 0")
        try:
            slippage = Decimal(opts["slippage"])
        except InvalidOperation:
            raise CommandError(f"--slippage is not a number: {opts['slippage']!r}") from None

        instrument = opts["instrument"]
        try:
            if opts["input"]:
                series = read_candles(opts["input"], instrument, start, end)
            else:
                from persistence.readers import read_candles_1m

                instrument = instrument or DEFAULT_INSTRUMENT
                series = series_from_table(read_candles_1m(instrument, start, end), instrument, start, end)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read candles: {exc}") from None
        if not len(series):
            where = opts["input"] or "the history store"
            raise CommandError(
                f"no candles for {instrument or 'the instrument'} from {start} to {end} in {where}"
            )

        config = OptionFillConfig(
            lots=opts["lots"], iv=opts["iv"], strike_offset=opts["strike_offset"], slippage=slippage
        )
        try:
            result = run_backtest(strategy_cls, series, params, fill=opts["fill"], options=config)
        except (ValueError, LookupError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None

        out = result.as_dict()
        if opts["json"]:
            self.stdout.write(json.dumps(out, default=str))
            return
        m = out["metrics"]
        self.stdout.write(
            f"{slug} on {series.instrument_key} {out['from']}..{out['to']}: {out['sessions']} sessions, "
            f"fill {out['fill']} ({out['pnl_unit']})"
        )
        for t in out["trades"]:
            leg = t.get("option")
            extra = (
                f"  {leg['contract']['trading_symbol']} x{leg['quantity']} net {leg['net_pnl']}"
                if leg
                else ""
            )
            self.stdout.write(
                f"{t['entry_ts'][:16]} {t['side']:5} {t['entry_price']:>10} -> {t['exit_ts'][11:16]} "
                f"{t['exit_price']:>10} {t['pnl_points']:>8} pts  {t['exit_reason']}{extra}"
            )
        self.stdout.write(" ".join(f"{k}={v}" for k, v in m.items()))
