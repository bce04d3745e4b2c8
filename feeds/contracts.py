"""Effective-dated facts about NSE index derivatives: lot sizes, strike steps, freeze quantities,
expiry calendars and the exchange holiday calendar.

The numbers live in `configs/contracts.json` and `configs/holidays.json` (data with effective
dates, easy to correct); this module only interprets them. Pure Python: no Django, Celery or Redis
imports, so strategies, brokers, the simulator and tests can all use it. It must never hard-code a
lot size or an expiry weekday. Where the broker's instrument master gives a value, the master wins.

Underlyings are named by their F&O symbol (`NIFTY`, `BANKNIFTY`); index keys and display names
(`NSE_INDEX|Nifty 50`, `Nifty Bank`) are accepted everywhere too.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from pathlib import Path

from feeds.ticks import IST

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

SESSION_OPEN = time(9, 15)
SESSION_CLOSE = time(15, 30)

WEEKLY = "weekly"
MONTHLY = "monthly"
ALL = "all"


@dataclass(frozen=True, slots=True)
class Underlying:
    symbol: str  # F&O symbol: NIFTY, BANKNIFTY
    name: str  # index name as in the instrument key: Nifty 50, Nifty Bank
    index_key: str
    strike_step: int
    tick_size: float


@cache
def _contracts() -> dict:
    return json.loads((CONFIG_DIR / "contracts.json").read_text())


@cache
def _holidays() -> tuple[frozenset[date], frozenset[date]]:
    data = json.loads((CONFIG_DIR / "holidays.json").read_text())
    holidays = frozenset(date.fromisoformat(d) for d in data["holidays"])
    special = frozenset(date.fromisoformat(d) for d in data.get("special_sessions", {}))
    return holidays, special


@cache
def _aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for symbol, spec in _contracts()["underlyings"].items():
        for alias in [symbol, spec["name"], spec["index_key"], *spec.get("aliases", [])]:
            out[alias.upper()] = symbol
    return out


def symbol_of(underlying: str) -> str:
    """The F&O symbol for an underlying given as symbol, index name or index key."""
    try:
        return _aliases()[underlying.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown underlying {underlying!r}") from None


def _spec(underlying: str) -> dict:
    return _contracts()["underlyings"][symbol_of(underlying)]


def underlyings() -> list[Underlying]:
    """Every underlying the configuration knows, in configuration order."""
    return [underlying_info(symbol) for symbol in _contracts()["underlyings"]]


def underlying_info(underlying: str) -> Underlying:
    symbol = symbol_of(underlying)
    spec = _contracts()["underlyings"][symbol]
    return Underlying(
        symbol=symbol,
        name=spec["name"],
        index_key=spec["index_key"],
        strike_step=int(spec["strike_step"]),
        tick_size=float(spec["tick_size"]),
    )


def _effective(rows: list[dict], key: str, on: date) -> dict:
    """The last row whose `key` date is on or before `on` (rows are in date order)."""
    chosen = None
    for row in rows:
        if date.fromisoformat(row[key]) <= on:
            chosen = row
    if chosen is None:
        raise ValueError(f"no contract data effective on {on}")
    return chosen


def lot_size(underlying: str, expiry: date) -> int:
    """Lot size of a contract, by its expiry date (a contract keeps the lot it was listed with)."""
    return int(_effective(_spec(underlying)["lot_sizes"], "from_expiry", expiry)["lot"])


def strike_step(underlying: str) -> int:
    """Strike interval near the money. ATM must still come from the listed strikes."""
    return int(_spec(underlying)["strike_step"])


def tick_size(underlying: str) -> float:
    return float(_spec(underlying)["tick_size"])


def freeze_qty(underlying: str, on: date) -> int:
    """Largest quantity one order may carry on trading date `on`; larger orders must be split."""
    return int(_effective(_spec(underlying)["freeze_qty"], "from", on)["qty"])


def is_trading_day(d: date) -> bool:
    """A regular NSE session is held on `d` (weekday, not a holiday, or a special full session)."""
    holidays, special = _holidays()
    if d in special:
        return True
    return d.weekday() < 5 and d not in holidays


def previous_trading_day(d: date) -> date:
    """The last trading day strictly before `d`."""
    d -= timedelta(days=1)
    while not is_trading_day(d):
        d -= timedelta(days=1)
    return d


def trading_day_on_or_before(d: date) -> date:
    return d if is_trading_day(d) else previous_trading_day(d)


def next_trading_day(d: date) -> date:
    """The first trading day strictly after `d`."""
    d += timedelta(days=1)
    while not is_trading_day(d):
        d += timedelta(days=1)
    return d


def session_bounds(d: date) -> tuple[datetime, datetime]:
    """The regular session's open and close on `d`, tz-aware in IST."""
    return datetime.combine(d, SESSION_OPEN, IST), datetime.combine(d, SESSION_CLOSE, IST)


def _weekday(rules: list[dict], nominal: date) -> int | None:
    return _effective(rules, "from", nominal)["weekday"]


def _monthly_expiry(underlying: str, year: int, month: int) -> date:
    """Last <rule weekday> of the month, moved to the previous trading day on a holiday.

    The rule in force is chosen by the nominal expiry date itself ("contracts expiring on or after
    1 Sep 2025 expire on Tuesday"), so walk the rules newest first and take the first that applies.
    """
    rules = _spec(underlying)["monthly"]
    last_day = date(year, month, calendar.monthrange(year, month)[1])
    for rule in reversed(rules):
        weekday = rule["weekday"]
        nominal = last_day - timedelta(days=(last_day.weekday() - weekday) % 7)
        if nominal >= date.fromisoformat(rule["from"]):
            return trading_day_on_or_before(nominal)
    raise ValueError(f"no monthly expiry rule for {underlying} in {year}-{month:02d}")


def monthly_expiries(underlying: str, on_date: date, count: int | None = None) -> list[date]:
    """The next `count` monthly expiries on or after `on_date` (an expiry day still counts)."""
    count = count or int(_contracts()["listing"]["monthly_count"])
    out: list[date] = []
    year, month = on_date.year, on_date.month
    while len(out) < count:
        expiry = _monthly_expiry(underlying, year, month)
        if expiry >= on_date:
            out.append(expiry)
        month += 1
        if month == 13:
            year, month = year + 1, 1
    return out


def weekly_expiries(underlying: str, on_date: date, count: int | None = None) -> list[date]:
    """The next `count` weekly-series expiries on or after `on_date` that are not also a monthly
    expiry (the monthly contract covers that date). Empty when the underlying has no weeklies."""
    count = count or int(_contracts()["listing"]["weekly_count"])
    rules = _spec(underlying)["weekly"]
    if _weekday(rules, on_date) is None and rules[-1]["weekday"] is None:
        return []
    monthlies = set(monthly_expiries(underlying, on_date, count=count // 4 + 3))
    out: list[date] = []
    nominal = on_date
    horizon = on_date + timedelta(days=7 * (count + 2))
    while len(out) < count and nominal <= horizon:
        weekday = _weekday(rules, nominal)
        if weekday is not None and nominal.weekday() == weekday:
            expiry = trading_day_on_or_before(nominal)
            if expiry >= on_date and expiry not in monthlies and expiry not in out:
                out.append(expiry)
        nominal += timedelta(days=1)
    return out


def expiries(underlying: str, on_date: date, kind: str = ALL) -> list[date]:
    """Listed expiries on or after `on_date`: `weekly` (weekly contracts that are not monthly),
    `monthly`, or `all` (both, sorted)."""
    if kind == WEEKLY:
        return weekly_expiries(underlying, on_date)
    if kind == MONTHLY:
        return monthly_expiries(underlying, on_date)
    if kind == ALL:
        return sorted(set(weekly_expiries(underlying, on_date)) | set(monthly_expiries(underlying, on_date)))
    raise ValueError(f"unknown expiry kind {kind!r} (weekly, monthly or all)")


def nearest_expiry(underlying: str, on_date: date, weekly: bool = True) -> date:
    """The nearest expiry on or after `on_date`; `weekly=False` (or no weeklies) gives the monthly."""
    if weekly:
        return expiries(underlying, on_date, ALL)[0]
    return monthly_expiries(underlying, on_date, count=1)[0]


def is_monthly_expiry(underlying: str, expiry: date) -> bool:
    return _monthly_expiry(underlying, expiry.year, expiry.month) == expiry


def time_to_expiry_years(now_ms: int, expiry: date) -> float:
    """Calendar time from `now_ms` to 15:30 IST on `expiry`, in years (365-day), floored at 0."""
    close = datetime.combine(expiry, SESSION_CLOSE, IST)
    seconds = close.timestamp() - now_ms / 1000
    return max(seconds, 0.0) / (365.0 * 86400.0)
