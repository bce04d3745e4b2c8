"""Importing recorded history (CSV or Parquet files) into the history store.

Three shapes are recognised by their columns (extra columns are ignored):

* 1-minute candles: `instrument_key, ts, open, high, low, close[, volume][, oi]` (ts = candle
  start; volume may be empty, as for an index).
* ticks: `instrument_key, ts, ltp[, ltq, volume, oi, bid, bid_qty, ask, ask_qty]` (e.g. the 1-second
  index snapshots; missing numbers are 0).
* F&O trades: `symbol, underlying, instrument_type, strike, expiry, ts, price, qty, oi`. Each trade
  becomes a tick of instrument `NSE_FO|<symbol>` (e.g. `NSE_FO|NIFTY22NOV18000CE`) with ltp=price,
  ltq=qty, oi, and volume = the running sum of qty for that symbol over the session day in the file
  (trades ordered by ts, then file order). Upstox keys F&O by exchange token (`NSE_FO|43919`); the
  trades files carry no token, so the symbol stands in for it.

Timestamps: Parquet timestamps (with a zone, or naive meaning IST), ISO-8601 text (`2024-01-02
09:15:00+05:30`; without an offset it is IST), or integers (ms since the epoch).

Every row of every file is validated before anything is written; a bad row (missing key, bad
timestamp, a price that is not a positive number, inconsistent OHLC, negative quantity) is reported
with its CSV line number or Parquet row index and nothing at all is imported. The rows then go
through the one HistoryWriter (the same dedupe, candles and compaction as the feed) and appear for
readers in a single manifest replace. Where a file's candles and candles the writer built from
imported ticks cover the same minute, the imported candle wins. Re-importing a file adds nothing: its ticks are all at or
behind the high-water mark, and candles are keyed by (instrument, minute). Because of that mark, a
tick file for a day the store already holds later ticks of the same instrument is skipped as
already present.

Never imports Django; the management command is a thin shell around `import_history`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feeds.ticks import IST
from persistence.store import DAY_MS, IST_OFFSET_MS
from persistence.writer import TICK_COLUMNS, HistoryWriter

CANDLE_COLUMNS = ("instrument_key", "ts", "open", "high", "low", "close")
TICK_FILE_COLUMNS = ("instrument_key", "ts", "ltp")
TRADE_COLUMNS = ("symbol", "underlying", "instrument_type", "strike", "expiry", "ts", "price", "qty", "oi")
FO_PREFIX = "NSE_FO|"
MAX_REPORTED = 20
EARLIEST_MS = 946_684_800_000  # 2000-01-01 UTC
LATEST_MS = 4_102_444_800_000  # 2100-01-01 UTC
WRITE_CHUNK = 200_000


class ImportRejected(Exception):
    """The files cannot be imported; the message says why (one line, or one line per bad row)."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    files: int
    ticks_read: int
    ticks_written: int
    candles: int


@dataclass(slots=True)
class _Source:
    """One file's columns as Arrow arrays, and how to name its row i in an error."""

    path: Path
    table: pa.Table
    lines: list[int] | None  # CSV line numbers; None for Parquet (row index)
    bad: dict[int, str] = field(default_factory=dict)  # rows already known to be malformed

    def where(self, i: int) -> str:
        return (
            f"{self.path.name} line {self.lines[i]}"
            if self.lines is not None
            else f"{self.path.name} row {i}"
        )


def _read(path: Path) -> _Source:
    if not path.exists():
        raise ImportRejected(f"{path}: no such file")
    if path.suffix.lower() == ".parquet":
        try:
            return _Source(path, pq.read_table(path), None)
        except (pa.ArrowException, OSError) as exc:
            raise ImportRejected(f"{path}: not a readable Parquet file ({exc})") from None
    if path.suffix.lower() != ".csv":
        raise ImportRejected(f"{path}: expected a .csv or .parquet file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader, [])]
        columns: list[list[str | None]] = [[] for _ in header]
        lines, bad = [], {}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                bad[len(lines)] = f"{len(row)} fields, the header has {len(header)}"
            lines.append(reader.line_num)
            row = row + [""] * (len(header) - len(row))
            for col, cell in zip(columns, row, strict=False):
                cell = cell.strip()
                col.append(cell if cell else None)
    if not header:
        raise ImportRejected(f"{path}: empty file")
    table = pa.table({name: pa.array(col, pa.string()) for name, col in zip(header, columns, strict=True)})
    return _Source(path, table, lines, bad)


def _shape(source: _Source) -> str:
    names = set(source.table.column_names)
    if set(CANDLE_COLUMNS) <= names:
        return "candles"
    if set(TRADE_COLUMNS) <= names:
        return "trades"
    if set(TICK_FILE_COLUMNS) <= names:
        return "ticks"
    raise ImportRejected(
        f"{source.path}: wrong columns {sorted(names)}; expected candles ({', '.join(CANDLE_COLUMNS)}), "
        f"ticks ({', '.join(TICK_FILE_COLUMNS)}) or F&O trades ({', '.join(TRADE_COLUMNS)})"
    )


# --- column parsing: typed array + the rows that failed ------------------------------------------
Bad = dict[int, str]


def _python_values(array: pa.ChunkedArray, parse: Callable[[str], object]) -> tuple[list, list[int]]:
    values, failed = [], []
    for i, raw in enumerate(array.to_pylist()):
        if raw is None:
            values.append(None)
            continue
        try:
            values.append(parse(raw) if isinstance(raw, str) else raw)
        except (ValueError, OverflowError):
            values.append(None)
            failed.append(i)
    return values, failed


def _number(
    source: _Source, name: str, bad: Bad, *, integer: bool, positive: bool, required: bool
) -> pa.Array:
    """Column `name` as float64/int64; rows that are not a finite number (>0 if positive, >=0
    otherwise; whole if integer; present if required) are recorded in `bad`."""
    type_ = pa.int64() if integer else pa.float64()
    column = source.table[name]
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        values, failed = _python_values(column, float)
        for i in failed:
            bad.setdefault(i, f"bad {name} {column[i].as_py()!r}")
        array = pa.array(values, pa.float64())
    else:
        array = pc.cast(column, pa.float64()).combine_chunks()
    finite = pc.is_finite(array)
    ok = pc.and_kleene(finite, pc.greater(array, 0) if positive else pc.greater_equal(array, 0))
    if integer:
        ok = pc.and_kleene(ok, pc.equal(pc.floor(array), array))
    ok = pc.fill_null(ok, not required)
    for i in pc.indices_nonzero(pc.invert(ok)).to_pylist():
        bad.setdefault(i, f"bad {name} {source.table[name][i].as_py()!r}")
    if not integer:
        return pc.if_else(ok, array, None) if not required else array
    safe = pc.if_else(ok, array, None)
    return pc.cast(safe, type_)


def _parse_ts_text(text: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=IST)
    return round(moment.timestamp() * 1000)


def _timestamps(source: _Source, bad: Bad) -> pa.Array:
    """Column `ts` as ms since the epoch (int64); unparseable or missing rows go to `bad`."""
    column = source.table["ts"]
    if pa.types.is_timestamp(column.type):
        ms = pc.cast(pc.cast(column, pa.timestamp("ms", tz=column.type.tz), safe=False), pa.int64())
        ms = ms.combine_chunks()
        if column.type.tz is None:  # naive: exchange wall-clock time
            ms = pc.subtract(ms, IST_OFFSET_MS)
    elif pa.types.is_integer(column.type):
        ms = pc.cast(column, pa.int64()).combine_chunks()
    elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        values, failed = _python_values(column, _parse_ts_text)
        for i in failed:
            bad.setdefault(i, f"bad timestamp {column[i].as_py()!r}")
        ms = pa.array(values, pa.int64())
    else:
        raise ImportRejected(f"{source.path}: column ts has type {column.type}, expected timestamps")
    for i in pc.indices_nonzero(pc.is_null(ms)).to_pylist():
        bad.setdefault(i, "missing timestamp")
    # Catches seconds given where milliseconds are meant, and other garbage.
    plausible = pc.and_(pc.greater_equal(ms, EARLIEST_MS), pc.less(ms, LATEST_MS))
    for i in pc.indices_nonzero(pc.invert(pc.fill_null(plausible, True))).to_pylist():
        bad.setdefault(i, f"timestamp {column[i].as_py()!r} is not between 2000 and 2100")
    return ms


def _keys(source: _Source, name: str, bad: Bad, prefix: str = "") -> pa.Array:
    column = pc.cast(source.table[name], pa.string()).combine_chunks()
    column = pc.utf8_trim_whitespace(column)
    missing = pc.fill_null(pc.equal(pc.utf8_length(column), 0), True)
    for i in pc.indices_nonzero(missing).to_pylist():
        bad.setdefault(i, f"missing {name}")
    return pc.binary_join_element_wise(prefix, column, "") if prefix else column


# --- shapes -----------------------------------------------------------------------------------
def _candles(source: _Source, bad: Bad) -> pa.Table:
    cols = source.table.column_names
    key = _keys(source, "instrument_key", bad)
    ts = _timestamps(source, bad)
    prices = {
        name: _number(source, name, bad, integer=False, positive=True, required=True)
        for name in ("open", "high", "low", "close")
    }
    volume = (
        _number(source, "volume", bad, integer=True, positive=False, required=False)
        if "volume" in cols
        else pa.nulls(len(ts), pa.int64())
    )
    oi = (
        _number(source, "oi", bad, integer=False, positive=False, required=False)
        if "oi" in cols
        else pa.nulls(len(ts), pa.float64())
    )
    o, h, low, c = (prices[n] for n in ("open", "high", "low", "close"))
    consistent = pc.and_kleene(
        pc.and_kleene(
            pc.less_equal(low, pc.min_element_wise(o, c)), pc.greater_equal(h, pc.max_element_wise(o, c))
        ),
        pc.less_equal(low, h),
    )
    for i in pc.indices_nonzero(pc.invert(pc.fill_null(consistent, True))).to_pylist():
        bad.setdefault(i, f"inconsistent OHLC {o[i].as_py()}/{h[i].as_py()}/{low[i].as_py()}/{c[i].as_py()}")
    minute_aligned = pc.equal(pc.multiply(pc.divide(ts, 60_000), 60_000), ts)
    for i in pc.indices_nonzero(pc.invert(pc.fill_null(minute_aligned, True))).to_pylist():
        bad.setdefault(i, "candle ts is not the start of a minute")
    return pa.table(
        {
            "instrument_key": key,
            "ts_ms": ts,
            "open": o,
            "high": h,
            "low": low,
            "close": c,
            "volume": volume,
            "oi": pc.fill_null(oi, 0.0),
        }
    )


def _ticks(source: _Source, bad: Bad) -> pa.Table:
    cols = source.table.column_names
    n = source.table.num_rows
    out = {
        "instrument_key": _keys(source, "instrument_key", bad),
        "ts_ms": _timestamps(source, bad),
        "ltp": _number(source, "ltp", bad, integer=False, positive=True, required=True),
    }
    for name in TICK_COLUMNS[3:]:
        integer = name in ("ltq", "volume", "bid_qty", "ask_qty")
        if name in cols:
            array = _number(source, name, bad, integer=integer, positive=False, required=False)
            out[name] = pc.fill_null(array, 0 if integer else 0.0)
        else:
            out[name] = pa.array([0] * n, pa.int64() if integer else pa.float64())
    return pa.table(out)


def _trades(source: _Source, bad: Bad) -> pa.Table:
    n = source.table.num_rows
    table = pa.table(
        {
            "instrument_key": _keys(source, "symbol", bad, prefix=FO_PREFIX),
            "ts_ms": _timestamps(source, bad),
            "ltp": _number(source, "price", bad, integer=False, positive=True, required=True),
            "ltq": _number(source, "qty", bad, integer=True, positive=True, required=True),
            "oi": pc.fill_null(
                _number(source, "oi", bad, integer=False, positive=False, required=False), 0.0
            ),
            "row": pa.array(range(n), pa.int64()),
        }
    )
    if bad:
        return table
    # Cumulative volume per symbol and session day, in (ts, file order).
    table = table.sort_by([("instrument_key", "ascending"), ("ts_ms", "ascending"), ("row", "ascending")])
    keys = table["instrument_key"].to_pylist()
    days = [(ts + IST_OFFSET_MS) // DAY_MS for ts in table["ts_ms"].to_pylist()]
    volume, running, last = [], 0, None
    for key, day, qty in zip(keys, days, table["ltq"].to_pylist(), strict=True):
        if (key, day) != last:
            running, last = 0, (key, day)
        running += qty
        volume.append(running)
    zeros_f, zeros_i = pa.array([0.0] * n, pa.float64()), pa.array([0] * n, pa.int64())
    return pa.table(
        {
            "instrument_key": table["instrument_key"],
            "ts_ms": table["ts_ms"],
            "ltp": table["ltp"],
            "ltq": table["ltq"],
            "volume": pa.array(volume, pa.int64()),
            "oi": table["oi"],
            "bid": zeros_f,
            "bid_qty": zeros_i,
            "ask": zeros_f,
            "ask_qty": zeros_i,
        }
    )


def validate(paths: Sequence[Path]) -> tuple[list[pa.Table], list[pa.Table]]:
    """Read and check every file; returns (tick tables, candle tables) or raises ImportRejected
    naming every bad row (the first MAX_REPORTED of them, and how many in all)."""
    tick_tables, candle_tables, problems, total_bad = [], [], [], 0
    for path in paths:
        source = _read(Path(path))
        shape = _shape(source)
        bad: Bad = dict(source.bad)
        table = {"candles": _candles, "ticks": _ticks, "trades": _trades}[shape](source, bad)
        if bad:
            total_bad += len(bad)
            problems.extend(f"{source.where(i)}: {bad[i]}" for i in sorted(bad))
        elif shape == "candles":
            candle_tables.append(table)
        else:
            tick_tables.append(table)
    if problems:
        shown = problems[:MAX_REPORTED]
        more = f"\n… and {total_bad - len(shown)} more bad rows" if total_bad > len(shown) else ""
        raise ImportRejected(f"{total_bad} bad rows, nothing imported:\n" + "\n".join(shown) + more)
    return tick_tables, candle_tables


def import_history(paths: Sequence[Path], root: Path | None = None) -> ImportResult:
    """Validate all `paths`, then write them through one HistoryWriter and publish them at close.
    Raises ImportRejected (nothing written) or persistence.store.StoreLocked (a feed is writing)."""
    writer = HistoryWriter(root, flush_interval=None)  # fail fast if the feed holds the store
    try:
        tick_tables, candle_tables = validate(paths)
        ticks_read = ticks_written = candles = 0
        if tick_tables:
            # Exchange-time order per instrument, which the writer's high-water mark relies on.
            ticks = pa.concat_tables(tick_tables).sort_by(
                [("instrument_key", "ascending"), ("ts_ms", "ascending")]
            )
            ticks_read = ticks.num_rows
            for offset in range(0, ticks.num_rows, WRITE_CHUNK):
                chunk = ticks.slice(offset, WRITE_CHUNK)
                ticks_written += writer.write_tick_columns(
                    {name: chunk[name].to_pylist() for name in TICK_COLUMNS}
                )
        writer.seal_candles()  # imported candles win over candles built from imported ticks
        for table in candle_tables:
            candles += writer.write_candles(table)
    except BaseException:
        writer.abandon()
        raise
    writer.close()
    return ImportResult(files=len(paths), ticks_read=ticks_read, ticks_written=ticks_written, candles=candles)
