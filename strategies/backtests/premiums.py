"""Option premiums recorded in the history store, for backtests that fill options on traded prices
instead of modelled ones (the runner's `OptionFillConfig.premiums`).

The price of an order at `ts_ms` is the open of the contract's 1-minute candle of that minute (the
first trade at or after it), else the close of its latest earlier candle that day. A contract with
no candle by then that day raises LookupError naming it: a run never mixes in modelled prices.
Reads the history store only; never writes.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import date
from decimal import Decimal

from strategies.base import session_date_of
from strategies.execution.options import OptionContract, to_option_tick


class RecordedPremiums:
    """Premiums of traded prices; one history-store read per contract and session day."""

    modelled = False

    def __init__(self, root=None) -> None:
        self.root = root
        self._days: dict[tuple[str, date], tuple[list[int], list[float], list[float]]] = {}

    def _candles(self, instrument_key: str, day: date) -> tuple[list[int], list[float], list[float]]:
        key = (instrument_key, day)
        if key not in self._days:
            from persistence.readers import read_candles_1m
            from strategies.backtest.data import ms_column

            table = read_candles_1m(instrument_key, day, day, self.root)
            self._days[key] = (
                ms_column(table["ts"]),
                table["open"].to_pylist(),
                table["close"].to_pylist(),
            )
        return self._days[key]

    def premium(self, contract: OptionContract, spot: float, ts_ms: int) -> Decimal:
        day = session_date_of(ts_ms)
        ts, opens, closes = self._candles(contract.instrument_key, day)
        minute = ts_ms - ts_ms % 60_000
        i = bisect_right(ts, minute) - 1
        if i >= 0 and ts[i] == minute and opens[i] is not None:
            return to_option_tick(opens[i])
        if i >= 0 and closes[i] is not None:
            return to_option_tick(closes[i])
        raise LookupError(
            f"no recorded price of {contract.trading_symbol or contract.instrument_key} "
            f"({contract.instrument_key}) by {minute_text(ts_ms)} on {day}"
        )


def minute_text(ts_ms: int) -> str:
    minute = ((ts_ms // 60_000) + 330) % 1440
    return f"{minute // 60:02d}:{minute % 60:02d}"
