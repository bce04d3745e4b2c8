"""Per-instrument parameters of the auction engine and the session clock.

Pure Python: no Django, Celery or Redis imports here. Everything that decides something works on
integer ticks (`round(price * ticks_per_unit)`), never on float comparisons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, timedelta

# India has had no daylight saving since 1945: a fixed offset keeps the per-tick clock arithmetic
# integer-only and fast. Callers that show times use zoneinfo("Asia/Kolkata").
IST_OFFSET_MS = 19_800_000
DAY_MS = 86_400_000
MINUTE_MS = 60_000


def _hhmm_to_minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True, slots=True)
class ProfileParams:
    """How one instrument's auction is measured.

    Open-type thresholds are in rows (ε, τ) and in percent of the 20-day average daily range (D);
    `open_drive_min_rows` stands in for D when no average is known yet.
    """

    tick_size: float = 0.05
    row_size: float = 5.0
    period_minutes: int = 30
    session_open: str = "09:15"
    session_close: str = "15:30"
    ib_periods: int = 2
    va_percent: int = 70
    va_method: str = "two_row"
    open_adverse_rows: int = 1  # ε: largest adverse move an Open Drive tolerates
    open_test_rows: int = 3  # τ: largest test an Open Test Drive makes before driving
    open_drive_pct_of_adr: int = 20  # D as a percentage of the 20-day average daily range
    open_drive_min_rows: int = 4  # D when no average daily range is known
    non_trend_ibr_pct: int = 60  # IBR below this % of the average IBR → Non-trend
    single_print_min_rows: int = 2
    double_distribution_min_rows: int = 3
    node_sensitivity_rows: int = 2  # HVN/LVN: a node beats its neighbours this many rows each side

    def __post_init__(self) -> None:
        if self.va_method not in ("two_row", "one_row"):
            raise ValueError(f"va_method must be 'two_row' or 'one_row', not {self.va_method!r}")
        if not 0 < self.va_percent <= 100:
            raise ValueError("va_percent must be in (0, 100]")
        if self.ticks_per_unit <= 0 or abs(self.ticks_per_unit * self.tick_size - 1) > 1e-9:
            raise ValueError("tick_size must divide 1 (0.05, 0.01, 0.1 …)")
        if self.ticks_per_row < 1 or abs(self.ticks_per_row * self.tick_size - self.row_size) > 1e-9:
            raise ValueError("row_size must be a whole number of ticks")
        if self.period_minutes <= 0 or self.close_minute <= self.open_minute:
            raise ValueError("bad session clock")

    # Derived integers (properties, so the dataclass stays a plain value).
    @property
    def ticks_per_unit(self) -> int:
        return round(1 / self.tick_size)

    @property
    def ticks_per_row(self) -> int:
        return round(self.row_size / self.tick_size)

    @property
    def open_minute(self) -> int:
        return _hhmm_to_minutes(self.session_open)

    @property
    def close_minute(self) -> int:
        return _hhmm_to_minutes(self.session_close)

    @property
    def period_ms(self) -> int:
        return self.period_minutes * MINUTE_MS

    @property
    def periods_per_session(self) -> int:
        span = self.close_minute - self.open_minute
        return -(-span // self.period_minutes)

    def with_row_size(self, row_size: float) -> ProfileParams:
        return replace(self, row_size=row_size)


NIFTY50 = ProfileParams(row_size=5.0)
NIFTY_BANK = ProfileParams(row_size=10.0)
DEFAULT = ProfileParams()

_BANK = re.compile(r"^(BANKNIFTY|NIFTYBANK)")
# "NIFTY", "NIFTY50", or NIFTY followed by an expiry/strike ("NIFTY24APRFUT", "NIFTY 22000 CE 25 APR 24").
_NIFTY = re.compile(r"^NIFTY(50)?(\d.*|FUT.*)?$")


def params_for(instrument_key: str) -> ProfileParams:
    """Parameters for an Upstox instrument key or trading symbol.

    Futures and options follow their underlying when the key names it (`NSE_FO|NIFTY24APRFUT`,
    `BANKNIFTY24APR48000CE`); numeric-only F&O keys (`NSE_FO|43919`) cannot be recognised without the
    instrument master and get the defaults.
    """
    name = re.sub(r"[\s_-]", "", instrument_key.split("|", 1)[-1]).upper()
    if _BANK.match(name):
        return NIFTY_BANK
    if _NIFTY.match(name):
        return NIFTY50
    return DEFAULT


# Period letters: A–Z then a–z.
def period_letter(index: int) -> str:
    if 0 <= index < 26:
        return chr(65 + index)
    if 26 <= index < 52:
        return chr(97 + index - 26)
    raise ValueError(f"no letter for period {index}")


def session_date_of(ts_ms: int) -> date:
    """The IST calendar date of an instant."""
    return date(1970, 1, 1) + timedelta(days=(ts_ms + IST_OFFSET_MS) // DAY_MS)


def day_start_ms(day: date) -> int:
    """Epoch ms of IST midnight starting `day`."""
    return (day - date(1970, 1, 1)).days * DAY_MS - IST_OFFSET_MS


def session_bounds_ms(day: date, params: ProfileParams) -> tuple[int, int]:
    start = day_start_ms(day)
    return start + params.open_minute * MINUTE_MS, start + params.close_minute * MINUTE_MS


def period_index_at(ts_ms: int, params: ProfileParams) -> int | None:
    """`floor((t − open) / period)` within the session, None outside it."""
    day_ms = (ts_ms + IST_OFFSET_MS) % DAY_MS
    minute_ms = day_ms - params.open_minute * MINUTE_MS
    if minute_ms < 0 or day_ms >= params.close_minute * MINUTE_MS:
        return None
    return minute_ms // params.period_ms


def price_to_tick(price: float, params: ProfileParams) -> int:
    return round(price * params.ticks_per_unit)


def row_of(price: float, params: ProfileParams) -> float:
    """The lower bound of the row holding `price` on the absolute grid."""
    row = price_to_tick(price, params) // params.ticks_per_row
    return round(row * params.row_size, 9)
