"""A generated instrument master for the simulated market and the local fake Upstox server.

`generate_master(on_date, spot=...)` returns the day's instruments in the shape of Upstox's daily
JSON master (`NSE.json.gz`): the two indices, their near- and next-month futures, and option chains
(Nifty weekly + monthly, Bank Nifty monthly) around the given spot levels. Contract facts (lot
sizes, expiries, freeze quantities, strike steps) come from `feeds.contracts`; nothing is invented
here. Exchange tokens are deterministic functions of the contract (underlying, expiry, type, strike),
so the same contract has the same `NSE_FO|<token>` key on every day it is listed and in every process.

Units follow Upstox's master: `expiry` is epoch milliseconds at 23:59:59 IST of the expiry day,
`tick_size` is in paise (5.0 = ₹0.05), `strike_price` in rupees. Pure Python (no Django, Redis).
"""

from __future__ import annotations

from datetime import date, datetime, time

from feeds import contracts
from feeds.ticks import IST

# Index levels used when the caller gives none (round numbers near late-2025 levels).
DEFAULT_SPOT = {"NIFTY": 25_000.0, "BANKNIFTY": 56_000.0}
# Strikes listed on each side of the at-the-money strike, per expiry.
STRIKES_EACH_SIDE = 30

# Exchange tokens of the indices as published (NSE index tokens).
_INDEX_TOKENS = {"NIFTY": "26000", "BANKNIFTY": "26009"}
_TOKEN_EPOCH = date(2020, 1, 1)
_TYPE_CODE = {"FUT": 0, "CE": 1, "PE": 2}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def exchange_token(symbol: str, expiry: date, instrument_type: str, strike: float = 0.0) -> int:
    """A deterministic numeric token for a derivative contract.

    Packs (days since 2020, underlying, type, strike / step) into one integer so that two distinct
    contracts can never collide and a contract keeps its token across days.
    """
    days = (expiry - _TOKEN_EPOCH).days
    underlying = list(DEFAULT_SPOT).index(symbol) if symbol in DEFAULT_SPOT else 0
    strike_index = round(strike / contracts.strike_step(symbol)) if instrument_type != "FUT" else 0
    if not 0 <= strike_index < 4096 or days < 0:
        raise ValueError(f"cannot make a token for {symbol} {expiry} {instrument_type} {strike}")
    return 100_000 + (((days * 2 + underlying) * 3 + _TYPE_CODE[instrument_type]) << 12) + strike_index


def expiry_epoch_ms(expiry: date) -> int:
    return int(datetime.combine(expiry, time(23, 59, 59), IST).timestamp() * 1000)


def _symbol_date(expiry: date) -> str:
    return f"{expiry.day:02d} {_MONTHS[expiry.month - 1]} {expiry.year % 100:02d}"


def _index_row(u: contracts.Underlying) -> dict:
    return {
        "segment": "NSE_INDEX",
        "exchange": "NSE",
        "name": u.name,
        "trading_symbol": u.symbol,
        "instrument_key": u.index_key,
        "exchange_token": _INDEX_TOKENS.get(u.symbol, "0"),
        "instrument_type": "INDEX",
        "strike_price": 0.0,
        "expiry": None,
        "lot_size": 1,
        "tick_size": round(u.tick_size * 100, 2),
        "freeze_quantity": 0.0,
        "underlying_symbol": u.symbol,
        "underlying_key": u.index_key,
        "weekly": False,
    }


def _derivative_row(
    u: contracts.Underlying,
    on_date: date,
    expiry: date,
    instrument_type: str,
    strike: float = 0.0,
    weekly: bool = False,
) -> dict:
    token = exchange_token(u.symbol, expiry, instrument_type, strike)
    lot = contracts.lot_size(u.symbol, expiry)
    if instrument_type == "FUT":
        trading_symbol = f"{u.symbol} FUT {_symbol_date(expiry)}"
    else:
        trading_symbol = f"{u.symbol} {int(strike)} {instrument_type} {_symbol_date(expiry)}"
    return {
        "segment": "NSE_FO",
        "exchange": "NSE",
        "name": u.symbol,
        "trading_symbol": trading_symbol,
        "instrument_key": f"NSE_FO|{token}",
        "exchange_token": str(token),
        "instrument_type": instrument_type,
        "strike_price": float(strike),
        "expiry": expiry_epoch_ms(expiry),
        "lot_size": lot,
        "minimum_lot": lot,
        "tick_size": round(u.tick_size * 100, 2),
        "freeze_quantity": float(contracts.freeze_qty(u.symbol, on_date)),
        "qty_multiplier": 1.0,
        "underlying_symbol": u.symbol,
        "underlying_key": u.index_key,
        "underlying_type": "INDEX",
        "weekly": weekly,
    }


def atm_strike(symbol: str, spot: float) -> float:
    step = contracts.strike_step(symbol)
    return float(round(spot / step) * step)


def generate_master(
    on_date: date,
    spot: dict[str, float] | None = None,
    strikes_each_side: int = STRIKES_EACH_SIDE,
) -> list[dict]:
    """The instrument master for `on_date`: indices, near/next-month futures, option chains.

    `spot` maps an underlying (symbol, name or index key) to the level the strike ladder centres
    on (normally the previous close); missing ones use `DEFAULT_SPOT`.
    """
    levels = dict(DEFAULT_SPOT)
    for name, level in (spot or {}).items():
        levels[contracts.symbol_of(name)] = float(level)
    rows: list[dict] = []
    for u in contracts.underlyings():
        rows.append(_index_row(u))
        monthly = contracts.expiries(u.symbol, on_date, contracts.MONTHLY)
        for expiry in monthly[:2]:
            rows.append(_derivative_row(u, on_date, expiry, "FUT"))
        weekly = set(contracts.expiries(u.symbol, on_date, contracts.WEEKLY))
        centre = atm_strike(u.symbol, levels[u.symbol])
        step = u.strike_step
        for expiry in sorted(weekly | set(monthly)):
            for i in range(-strikes_each_side, strikes_each_side + 1):
                strike = centre + i * step
                for option_type in ("CE", "PE"):
                    rows.append(_derivative_row(u, on_date, expiry, option_type, strike, expiry in weekly))
    return rows


def near_future(master: list[dict], underlying: str) -> dict:
    """The near-month future of an underlying in a master."""
    symbol = contracts.symbol_of(underlying)
    futures = [r for r in master if r["instrument_type"] == "FUT" and r["underlying_symbol"] == symbol]
    if not futures:
        raise LookupError(f"no future for {underlying} in the master")
    return min(futures, key=lambda r: r["expiry"])


def expiry_date(row: dict) -> date:
    """The expiry date (IST) of a master row."""
    return datetime.fromtimestamp(row["expiry"] / 1000, tz=IST).date()


def by_key(master: list[dict]) -> dict[str, dict]:
    return {r["instrument_key"]: r for r in master}
