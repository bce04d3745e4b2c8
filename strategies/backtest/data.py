"""1-minute candles as columns (fast to loop over), loaded from Parquet, CSV or a pyarrow Table with
the columns of /work/shared/data and the history store: instrument_key, ts, open, high, low, close
[, volume]. `ts` is a timestamp (any unit, tz-aware or UTC) or integer ms since the epoch, and
labels the candle's START. Never reads Django settings or the database.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from feeds.ticks import IST

REQUIRED = ("ts", "open", "high", "low", "close")
_UNIT_PER_MS = {"s": None, "ms": 1, "us": 1000, "ns": 1_000_000}


@dataclass(frozen=True, slots=True)
class CandleSeries:
    """Columns of one instrument's 1-minute candles, sorted by time."""

    instrument_key: str
    ts_ms: list[int]
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[int]

    def __len__(self) -> int:
        return len(self.ts_ms)

    def session_bounds(self) -> list[tuple[date, int, int]]:
        """(IST date, first index, end index) of each session, in order (ts_ms is sorted)."""
        out: list[tuple[date, int, int]] = []
        ts, n, i = self.ts_ms, len(self.ts_ms), 0
        while i < n:
            day = (ts[i] // 60_000 + 330) // 1440  # IST day number (fixed +05:30)
            next_day_ms = ((day + 1) * 1440 - 330) * 60_000
            j = bisect_left(ts, next_day_ms, i, n)
            out.append((_day_from_number(day), i, j))
            i = j
        return out


@dataclass(frozen=True, slots=True)
class TickSeries:
    """Columns of one instrument's ticks (trades or snapshots), sorted by time."""

    instrument_key: str
    ts_ms: list[int]
    price: list[float]
    qty: list[int]

    def __len__(self) -> int:
        return len(self.ts_ms)


def ticks_from_table(table: pa.Table, instrument_key: str | None = None) -> TickSeries:
    """Ticks from a table with `ts` and `ltp` (or `price`) and optionally `ltq`/`qty` columns."""
    if instrument_key is not None and "instrument_key" in table.column_names:
        table = table.filter(pc.equal(table["instrument_key"], instrument_key))
    price_col = "ltp" if "ltp" in table.column_names else "price"
    qty_col = next((c for c in ("ltq", "qty") if c in table.column_names), None)
    table = table.append_column("_ts_ms", pa.array(ms_column(table["ts"]), pa.int64())).sort_by("_ts_ms")
    qty = (
        pc.fill_null(pc.cast(table[qty_col], pa.int64()), 0).to_pylist() if qty_col else [0] * table.num_rows
    )
    return TickSeries(
        instrument_key or "",
        table["_ts_ms"].to_pylist(),
        pc.cast(table[price_col], pa.float64()).to_pylist(),
        qty,
    )


def _day_from_number(n: int) -> date:
    return date(1970, 1, 1) + timedelta(days=n)


def ms_column(column: pa.ChunkedArray | pa.Array) -> list[int]:
    """A ts column as int ms since the epoch."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        ints = pc.cast(column, pa.int64())
        if kind.unit == "s":
            return [v * 1000 for v in ints.to_pylist()]
        divisor = _UNIT_PER_MS[kind.unit]
        ints = pc.divide(ints, divisor) if divisor != 1 else ints
        return ints.to_pylist()
    if pa.types.is_integer(kind):
        return pc.cast(column, pa.int64()).to_pylist()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        out = []
        for text in column.to_pylist():
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=IST)  # naive times in candle files are exchange times
            out.append(int(dt.timestamp() * 1000))
        return out
    raise ValueError(f"cannot read candle times of type {kind}")


def read_table(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if path.suffix.lower() in (".csv", ".txt", ".gz"):
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path)
    raise ValueError(f"unknown candle file type {path.suffix!r} (Parquet or CSV)")


def series_from_table(
    table: pa.Table,
    instrument_key: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> CandleSeries:
    """One instrument's candles from a table, within [start, end] (IST dates, inclusive).

    Without `instrument_key` the table must hold exactly one instrument (or none named)."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"candle data lacks columns: {', '.join(missing)}")
    if "instrument_key" in table.column_names:
        keys = pc.unique(table["instrument_key"]).to_pylist()
        if instrument_key is None:
            if len(keys) > 1:
                raise ValueError(
                    f"the data holds several instruments ({', '.join(map(str, keys))}): name one"
                )
            instrument_key = keys[0] if keys else ""
        else:
            table = table.filter(pc.equal(table["instrument_key"], instrument_key))
    instrument_key = instrument_key or ""
    # Columnar work in Arrow (sort, range filter, casts); Python lists only at the end.
    table = table.append_column("_ts_ms", pa.array(ms_column(table["ts"]), pa.int64()))
    if start is not None:
        table = table.filter(pc.greater_equal(table["_ts_ms"], _ist_ms(start)))
    if end is not None:
        table = table.filter(pc.less(table["_ts_ms"], _ist_ms(end + timedelta(days=1))))
    table = table.sort_by("_ts_ms")

    def floats(name: str) -> list[float]:
        return pc.cast(table[name], pa.float64()).to_pylist()

    if "volume" in table.column_names:
        volume = pc.fill_null(pc.cast(table["volume"], pa.int64()), 0).to_pylist()
    else:
        volume = [0] * table.num_rows
    return CandleSeries(
        instrument_key,
        table["_ts_ms"].to_pylist(),
        floats("open"),
        floats("high"),
        floats("low"),
        floats("close"),
        volume,
    )


def _ist_ms(day: date) -> int:
    return int(datetime.combine(day, time(0, 0), IST).timestamp() * 1000)


def read_candles(
    path: str | Path, instrument_key: str | None = None, start: date | None = None, end: date | None = None
) -> CandleSeries:
    return series_from_table(read_table(path), instrument_key, start, end)
