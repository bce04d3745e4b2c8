"""Reading the history store from any process (backtests, dashboard history, CLI, the feed itself).

Each call reads manifest.json (replaced atomically by the writer), picks the Parquet files of the
requested session days and queries them through this process's own in-memory DuckDB connection.
Readers never open a DuckDB database file and never take the writer lock, so they cannot meet a
lock error and cannot slow the writer down. Because a manifest names exactly the files that make up
each day, a reader sees a compaction either before or after, never both halves (no double counts).
If compaction deleted a file between reading the manifest and opening the file, the query fails as
a whole and is retried with the fresh manifest.

Times come back as `timestamp[ms, tz=Asia/Kolkata]`; `ts_ms` is kept alongside for exact maths.
Never write here.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from persistence.store import (
    CANDLES_1M,
    DEPTH,
    DEPTH_SCHEMA,
    PROFILES,
    TICKS,
    VERSIONED_KEYS,
    default_root,
    read_manifest,
)

IST_TS = pa.timestamp("ms", tz="Asia/Kolkata")
TICK_FIELDS = ("ltp", "ltq", "volume", "oi", "bid", "bid_qty", "ask", "ask_qty")
TICK_RESULT = pa.schema(
    [
        ("instrument_key", pa.string()),
        ("ts", IST_TS),
        ("ts_ms", pa.int64()),
        ("ltp", pa.float64()),
        ("ltq", pa.int64()),
        ("volume", pa.int64()),
        ("oi", pa.float64()),
        ("bid", pa.float64()),
        ("bid_qty", pa.int64()),
        ("ask", pa.float64()),
        ("ask_qty", pa.int64()),
    ]
)
CANDLE_RESULT = pa.schema(
    [
        ("instrument_key", pa.string()),
        ("ts", IST_TS),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.int64()),
        ("oi", pa.float64()),
    ]
)
DEPTH_RESULT = pa.schema(
    [("instrument_key", pa.string()), ("ts", IST_TS), ("ts_ms", pa.int64()), DEPTH_SCHEMA.field("levels")]
)
ATTEMPTS = 6

_local = threading.local()


def _connection() -> duckdb.DuckDBPyConnection:
    """One in-memory connection per thread and process (a forked child must not share its parent's)."""
    con = getattr(_local, "con", None)
    if con is None or _local.pid != os.getpid():
        con = duckdb.connect()
        _local.con, _local.pid = con, os.getpid()
    return con


def _root(root: Path | str | None) -> Path:
    return Path(root) if root is not None else default_root()


def _query(
    root: Path, table: str, start: date | None, end: date | None, sql: str, params: list
) -> pa.Table | None:
    """Run `sql` (whose first parameter is the file list) over the table's files for [start, end];
    None when no file covers the range."""
    for attempt in range(ATTEMPTS):
        paths = [str(root / p) for p in read_manifest(root).paths(table, start, end)]
        if not paths:
            return None
        try:
            return _connection().sql(sql, params=[paths, *params]).to_arrow_table()
        except duckdb.IOException:
            # A compaction removed a file after we read the manifest; the new manifest names its
            # replacement.
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


def _with_ts(table: pa.Table, position: int, drop_ts_ms: bool) -> pa.Table:
    ts = table["ts_ms"].cast(IST_TS)
    table = table.add_column(position, "ts", ts)
    return table.drop_columns(["ts_ms"]) if drop_ts_ms else table


def read_ticks(instrument_key: str, start: date, end: date, root: Path | str | None = None) -> pa.Table:
    """An instrument's ticks for the session days start..end (inclusive), in arrival order."""
    result = _query(
        _root(root),
        TICKS,
        start,
        end,
        f"SELECT instrument_key, ts_ms, {', '.join(TICK_FIELDS)} FROM read_parquet(?) "
        "WHERE instrument_key = ? ORDER BY ts_ms, seq",
        [instrument_key],
    )
    if result is None:
        return TICK_RESULT.empty_table()
    return _with_ts(result, 1, drop_ts_ms=False).cast(TICK_RESULT)


def read_candles_1m(instrument_key: str, start: date, end: date, root: Path | str | None = None) -> pa.Table:
    """An instrument's 1-minute candles (ts = candle start) for the session days start..end."""
    result = _query(
        _root(root),
        CANDLES_1M,
        start,
        end,
        "SELECT instrument_key, ts_ms, open, high, low, close, volume, oi FROM read_parquet(?) "
        f"WHERE instrument_key = ? QUALIFY row_number() OVER (PARTITION BY {VERSIONED_KEYS[CANDLES_1M]} "
        "ORDER BY seq DESC) = 1 ORDER BY ts_ms",
        [instrument_key],
    )
    if result is None:
        return CANDLE_RESULT.empty_table()
    return _with_ts(result, 1, drop_ts_ms=True).cast(CANDLE_RESULT)


def read_depth(instrument_key: str, start: date, end: date, root: Path | str | None = None) -> pa.Table:
    """An instrument's depth snapshots (levels best first) for the session days start..end."""
    result = _query(
        _root(root),
        DEPTH,
        start,
        end,
        "SELECT instrument_key, ts_ms, levels FROM read_parquet(?) WHERE instrument_key = ? ORDER BY ts_ms, seq",
        [instrument_key],
    )
    if result is None:
        return DEPTH_RESULT.empty_table()
    return _with_ts(result, 1, drop_ts_ms=False).cast(DEPTH_RESULT)


def read_profile_summaries(
    instrument_key: str, start: date, end: date, root: Path | str | None = None
) -> list[dict]:
    """The stored daily profile summaries, oldest first: {"session_day": date, **summary}."""
    result = _query(
        _root(root),
        PROFILES,
        start,
        end,
        "SELECT session_day, summary FROM read_parquet(?) WHERE instrument_key = ? "
        f"QUALIFY row_number() OVER (PARTITION BY {VERSIONED_KEYS[PROFILES]} ORDER BY seq DESC) = 1 "
        "ORDER BY session_day",
        [instrument_key],
    )
    if result is None:
        return []
    return [
        {"session_day": day, **json.loads(summary)}
        for day, summary in zip(result["session_day"].to_pylist(), result["summary"].to_pylist(), strict=True)
    ]


def session_days(instrument_key: str | None = None, root: Path | str | None = None) -> list[date]:
    """Session days with any stored data (for one instrument, or for any)."""
    days = read_manifest(_root(root)).instruments
    return sorted(
        date.fromisoformat(day)
        for day, keys in days.items()
        if instrument_key is None or instrument_key in keys
    )


def instruments(root: Path | str | None = None) -> list[str]:
    """Every instrument key with stored data, sorted."""
    return sorted({key for keys in read_manifest(_root(root)).instruments.values() for key in keys})
