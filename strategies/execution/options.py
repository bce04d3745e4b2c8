"""From a signal on the underlying to an option contract and its (modelled) premium.

- Contract selection: a long signal buys a CE, a short signal buys a PE, of the nearest eligible
  expiry, on the listed ATM strike (the listed strike nearest to the underlying; on an exact tie the
  lower one) or an ITM/OTM offset that walks the sorted list of listed strikes (never
  `round(spot / step) * step`: that can name a contract that does not exist). Strikes, expiries and
  lots come from the instrument master rows (Upstox's shape, as `feeds.universe` makes them); the
  lot falls back to `feeds.contracts.lot_size` when a row has none.
- Premiums: Black-Scholes (no dividends) with a configurable implied volatility and rate, time to
  expiry from the real expiry calendar (`feeds.contracts.time_to_expiry_years`, to 15:30 IST of the
  expiry day), snapped to the 0.05 tick and never below one tick. These premiums are MODELLED, not
  traded prices: label every result that uses them so.

Pure Python: no Django, Celery or Redis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from feeds import contracts
from feeds.ticks import IST
from strategies.base import LONG, SHORT

CE = "CE"
PE = "PE"
OPTION_TICK = Decimal("0.05")


@dataclass(frozen=True, slots=True)
class OptionContract:
    instrument_key: str
    underlying: str  # F&O symbol: NIFTY, BANKNIFTY
    option_type: str  # CE | PE
    strike: Decimal
    expiry: date
    lot_size: int
    trading_symbol: str = ""

    @classmethod
    def from_master_row(cls, row: Mapping[str, Any]) -> OptionContract:
        expiry = row["expiry"]
        if isinstance(expiry, int | float):
            expiry = datetime.fromtimestamp(expiry / 1000, tz=IST).date()
        elif isinstance(expiry, str):
            expiry = date.fromisoformat(expiry[:10])
        underlying = contracts.symbol_of(row.get("underlying_symbol") or row["name"])
        lot = int(row.get("lot_size") or contracts.lot_size(underlying, expiry))
        return cls(
            instrument_key=row["instrument_key"],
            underlying=underlying,
            option_type=row["instrument_type"],
            strike=Decimal(str(row["strike_price"])),
            expiry=expiry,
            lot_size=lot,
            trading_symbol=row.get("trading_symbol", ""),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "instrument_key": self.instrument_key,
            "trading_symbol": self.trading_symbol,
            "underlying": self.underlying,
            "option_type": self.option_type,
            "strike": str(self.strike),
            "expiry": self.expiry.isoformat(),
            "lot_size": self.lot_size,
        }


def option_type_for(side: str) -> str:
    """A long signal on the underlying buys a call, a short one buys a put."""
    if side == LONG:
        return CE
    if side == SHORT:
        return PE
    raise ValueError(f"side must be {LONG!r} or {SHORT!r}")


def select_contract(
    master: Iterable[Mapping[str, Any]],
    underlying: str,
    side: str,
    spot: float,
    on: date,
    offset: int = 0,
    min_days_to_expiry: int = 0,
) -> OptionContract:
    """The option to buy for a `side` signal with the underlying at `spot` on day `on`.

    `offset`: 0 = ATM, +n = n listed strikes in the money, -n = n listed strikes out of the money.
    `min_days_to_expiry`: skip expiries closer than this many calendar days (0 trades expiry day).
    LookupError when the master lists no such contract.
    """
    symbol = contracts.symbol_of(underlying)
    option_type = option_type_for(side)
    chain = [
        OptionContract.from_master_row(row)
        for row in master
        if row.get("instrument_type") == option_type
        and contracts.symbol_of(row.get("underlying_symbol") or row.get("name", "")) == symbol
    ]
    eligible = sorted({c.expiry for c in chain if (c.expiry - on).days >= min_days_to_expiry})
    if not eligible:
        raise LookupError(f"no listed {symbol} {option_type} expiring on or after {on.isoformat()}")
    expiry = eligible[0]
    listed = sorted((c for c in chain if c.expiry == expiry), key=lambda c: c.strike)
    spot_d = Decimal(str(spot))
    atm = min(range(len(listed)), key=lambda i: (abs(listed[i].strike - spot_d), listed[i].strike))
    # In the money: lower strikes for a call, higher for a put.
    index = atm - offset if option_type == CE else atm + offset
    if not 0 <= index < len(listed):
        raise LookupError(f"offset {offset} walks off the listed {symbol} {option_type} strikes for {expiry}")
    return listed[index]


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black_scholes(
    option_type: str, spot: float, strike: float, years: float, iv: float, rate: float = 0.0
) -> float:
    """The Black-Scholes price of a European call/put (no dividends); intrinsic value at expiry."""
    if years <= 0 or iv <= 0:
        intrinsic = spot - strike if option_type == CE else strike - spot
        return max(intrinsic, 0.0)
    sqrt_t = math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate + 0.5 * iv * iv) * years) / (iv * sqrt_t)
    d2 = d1 - iv * sqrt_t
    discount = math.exp(-rate * years)
    if option_type == CE:
        return spot * _norm_cdf(d1) - strike * discount * _norm_cdf(d2)
    return strike * discount * _norm_cdf(-d2) - spot * _norm_cdf(-d1)


def to_option_tick(value: float) -> Decimal:
    """A premium on the 0.05 grid, at least one tick (a listed option never trades at zero)."""
    ticks = max(round(value * 20), 1)
    return Decimal(ticks) * OPTION_TICK


@dataclass(frozen=True, slots=True)
class PremiumModel:
    """Modelled option premiums: Black-Scholes at a fixed implied volatility and rate."""

    iv: float = 0.14
    rate: float = 0.065

    def premium(self, contract: OptionContract, spot: float, ts_ms: int) -> Decimal:
        years = contracts.time_to_expiry_years(ts_ms, contract.expiry)
        value = black_scholes(contract.option_type, spot, float(contract.strike), years, self.iv, self.rate)
        return to_option_tick(value)
