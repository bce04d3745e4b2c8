"""The Upstox instrument master: load it (gzipped JSON from a file or URL) into `Instrument`, and
select from it (near-month future, option contracts of an expiry).

Keys are `instrument_key` (exchange tokens are reused after expiry). Master units: `expiry` in epoch
ms, `tick_size` in paise, `strike_price` in rupees. Loading replaces the table's contents in one
transaction, so readers never see half a master.
"""

from __future__ import annotations

import gzip
import json
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from django.db import transaction

from feeds.models import Instrument
from feeds.ticks import IST

# Segments the bot trades or watches; the full master also lists equities, currencies, commodities.
SEGMENTS = ("NSE_INDEX", "NSE_FO")
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class LoadResult:
    loaded: int
    skipped: int
    source: str


def read_master(source: str) -> list[dict]:
    """The master's rows from a path or an http(s) URL; gzipped or plain JSON."""
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=DOWNLOAD_TIMEOUT_S) as response:
            raw = response.read()
    else:
        raw = Path(source).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    rows = json.loads(raw)
    if not isinstance(rows, list):
        raise ValueError("the instrument master must be a JSON list")
    return rows


def _expiry(value) -> date | None:
    if value in (None, "", 0):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=IST).date()
    return date.fromisoformat(str(value)[:10])


def instrument_from_row(row: dict) -> Instrument:
    kind = row.get("instrument_type", "")
    strike = row.get("strike_price")
    return Instrument(
        instrument_key=row["instrument_key"],
        exchange_token=str(row.get("exchange_token", "")),
        segment=row.get("segment", ""),
        name=row.get("name", "") or "",
        trading_symbol=row.get("trading_symbol", "") or "",
        instrument_type=kind,
        underlying_key=row.get("underlying_key") or (row["instrument_key"] if kind == "INDEX" else ""),
        strike=Decimal(str(strike)).quantize(Decimal("0.01"))
        if kind in ("CE", "PE") and strike is not None
        else None,
        expiry=_expiry(row.get("expiry")),
        lot_size=int(row.get("lot_size") or 1),
        # The master gives paise (5.0 = ₹0.05).
        tick_size=(Decimal(str(row.get("tick_size") or 5)) / 100).quantize(Decimal("0.01")),
        freeze_quantity=int(float(row.get("freeze_quantity") or 0)),
        weekly=bool(row.get("weekly", False)),
    )


def load_master(rows: list[dict], *, segments: tuple[str, ...] = SEGMENTS) -> tuple[int, int]:
    """Replace the Instrument table with the master's rows in `segments`. Returns (loaded, skipped)."""
    instruments = []
    skipped = 0
    for row in rows:
        if row.get("segment") not in segments or not row.get("instrument_key"):
            skipped += 1
            continue
        instruments.append(instrument_from_row(row))
    with transaction.atomic():
        Instrument.objects.all().delete()
        Instrument.objects.bulk_create(instruments, batch_size=2000)
    return len(instruments), skipped


def load_instruments(source: str) -> LoadResult:
    """Load the master from a path or URL (`loadinstruments`, the morning beat task)."""
    loaded, skipped = load_master(read_master(source))
    return LoadResult(loaded=loaded, skipped=skipped, source=source)


# --- selectors ---------------------------------------------------------------------------------
def near_month_future(underlying_key: str, on_date: date) -> str | None:
    """The instrument key of the underlying's nearest unexpired future."""
    future = (
        Instrument.objects.filter(underlying_key=underlying_key, instrument_type="FUT", expiry__gte=on_date)
        .order_by("expiry")
        .first()
    )
    return future.instrument_key if future else None


def option_contracts(underlying_key: str, on_date: date, *, weekly: bool) -> list[Instrument]:
    """The options of one expiry: the nearest (any, if `weekly`) or the nearest monthly one."""
    options = Instrument.objects.filter(
        underlying_key=underlying_key, instrument_type__in=("CE", "PE"), expiry__gte=on_date
    )
    if not weekly:
        options = options.filter(weekly=False)
    first = options.order_by("expiry").values_list("expiry", flat=True).first()
    if first is None:
        return []
    return list(options.filter(expiry=first).order_by("strike", "instrument_type"))
