"""Layout of the history store on disk: tables, Parquet schemas, the manifest and the writer lock.

The store is a directory (settings.HISTORY_DIR) of immutable Parquet files plus one small JSON
manifest naming, per table and session day, the files that currently make up that day::

    HISTORY_DIR/
      manifest.json            replaced atomically (write manifest.json.tmp, fsync, os.replace)
      writer.lock              flock()ed by the one HistoryWriter (the feed or importhistory)
      tmp/                     files being written; never read
      ticks/2024-01-02/L0-000000000017-ab12cd.parquet
      candles_1m/…  depth/…  profiles/…

A file is only ever visible to readers through the manifest, and a manifest only ever names files
that are complete (they were renamed into place before the manifest that names them was written).
This module holds no policy: the writer decides what to write, the readers what to read. It must
never import Django, so benchmarks and backtest workers can use it directly.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa

IST_OFFSET_MS = 19_800_000  # Asia/Kolkata has been UTC+05:30 without DST since 1945.
DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)

TICKS = "ticks"
CANDLES_1M = "candles_1m"
DEPTH = "depth"
PROFILES = "profiles"
TABLES = (TICKS, CANDLES_1M, DEPTH, PROFILES)

MANIFEST = "manifest.json"
LOCK = "writer.lock"
FORMAT_VERSION = 1

# `seq` is the writer's arrival order (ticks) or write version (candles, profiles: the highest
# version of a key wins). Readers never return it.
TICK_SCHEMA = pa.schema(
    [
        ("instrument_key", pa.string()),
        ("ts_ms", pa.int64()),
        ("ltp", pa.float64()),
        ("ltq", pa.int64()),
        ("volume", pa.int64()),
        ("oi", pa.float64()),
        ("bid", pa.float64()),
        ("bid_qty", pa.int64()),
        ("ask", pa.float64()),
        ("ask_qty", pa.int64()),
        ("close_prev", pa.float64()),
        ("seq", pa.int64()),
    ]
)
DEPTH_LEVEL = pa.struct(
    [("bid", pa.float64()), ("bid_qty", pa.int64()), ("ask", pa.float64()), ("ask_qty", pa.int64())]
)
DEPTH_SCHEMA = pa.schema(
    [
        ("instrument_key", pa.string()),
        ("ts_ms", pa.int64()),
        ("levels", pa.list_(DEPTH_LEVEL)),
        ("seq", pa.int64()),
    ]
)
CANDLE_SCHEMA = pa.schema(
    [
        ("instrument_key", pa.string()),
        ("ts_ms", pa.int64()),  # candle start
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.int64()),  # NULL when the source has none (imported index candles)
        ("oi", pa.float64()),
        ("seq", pa.int64()),
    ]
)
PROFILE_SCHEMA = pa.schema(
    [
        ("instrument_key", pa.string()),
        ("session_day", pa.date32()),
        ("summary", pa.string()),  # JSON object
        ("seq", pa.int64()),
    ]
)
SCHEMAS = {TICKS: TICK_SCHEMA, CANDLES_1M: CANDLE_SCHEMA, DEPTH: DEPTH_SCHEMA, PROFILES: PROFILE_SCHEMA}
# Order of rows inside a compacted file, so DuckDB can skip row groups of other instruments.
SORT_KEYS = {
    TICKS: "instrument_key, ts_ms, seq",
    DEPTH: "instrument_key, ts_ms, seq",
    CANDLES_1M: "instrument_key, ts_ms",
    PROFILES: "instrument_key, session_day",
}
# Tables where several versions of a key may exist until compaction; the highest seq wins.
VERSIONED_KEYS = {CANDLES_1M: "instrument_key, ts_ms", PROFILES: "instrument_key, session_day"}


def session_day_of(ts_ms: int) -> date:
    """The IST calendar day of an exchange timestamp."""
    return EPOCH + timedelta(days=(ts_ms + IST_OFFSET_MS) // DAY_MS)


def day_start_ms(day: date) -> int:
    return (day - EPOCH).days * DAY_MS - IST_OFFSET_MS


def default_root() -> Path:
    from django.conf import settings  # only when no root is given, so non-Django callers work

    return Path(settings.HISTORY_DIR)


@dataclass(frozen=True, slots=True)
class PartFile:
    path: str  # relative to the store root
    level: int  # 0 = one flush; higher = compacted
    rows: int


@dataclass(slots=True)
class Manifest:
    """Which files make up each (table, day), which instruments each day holds, and counters."""

    next_seq: int = 0
    next_file: int = 0
    files: dict[str, dict[str, list[PartFile]]] = field(default_factory=lambda: {t: {} for t in TABLES})
    instruments: dict[str, list[str]] = field(default_factory=dict)  # day → sorted keys
    # Days a writer stored ticks for and has not closed cleanly since: a writer that was killed
    # may have held their last candles unwritten; the next one rebuilds them from the ticks.
    unsealed: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_VERSION,
                "next_seq": self.next_seq,
                "next_file": self.next_file,
                "files": {
                    table: {day: [[p.path, p.level, p.rows] for p in parts] for day, parts in days.items()}
                    for table, days in self.files.items()
                },
                "instruments": self.instruments,
                "unsealed": self.unsealed,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        if raw.get("format") != FORMAT_VERSION:
            raise ValueError(f"unknown history manifest format {raw.get('format')!r}")
        files = {t: {} for t in TABLES}
        for table, days in raw["files"].items():
            files[table] = {day: [PartFile(*p) for p in parts] for day, parts in days.items()}
        return cls(
            next_seq=raw["next_seq"],
            next_file=raw["next_file"],
            files=files,
            instruments=raw["instruments"],
            unsealed=raw.get("unsealed", []),
        )

    def paths(self, table: str, start: date | None = None, end: date | None = None) -> list[str]:
        lo, hi = (start.isoformat() if start else ""), (end.isoformat() if end else "9999")
        return [p.path for day, parts in self.files[table].items() if lo <= day <= hi for p in parts]


def read_manifest(root: Path) -> Manifest:
    try:
        return Manifest.from_json((root / MANIFEST).read_text())
    except FileNotFoundError:
        return Manifest()


def write_manifest(root: Path, manifest: Manifest) -> None:
    tmp = root / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)


class StoreLocked(Exception):
    """Another process holds the history store's writer lock."""


class WriterLock:
    """An exclusive flock on HISTORY_DIR/writer.lock, released when the process dies (even SIGKILL)."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StoreLocked(
                f"the history store {root} is held by another writer (pid {holder}); stop the feed first"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
