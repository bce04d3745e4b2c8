"""The history store's only writer: batches of ticks in, immutable Parquet files and a manifest out.

How the store stays consistent with one writer and any number of readers in other processes
(the simplest scheme that meets the feed's needs; see persistence/store.py for the layout):

* Single writer. `HistoryWriter` takes an exclusive flock on HISTORY_DIR/writer.lock for its whole
  life (the feed, or `importhistory`); a second writer fails at once with `StoreLocked`. The kernel
  drops the lock when the process dies, even on SIGKILL. The writer never opens a DuckDB database
  file: Parquet files plus a JSON manifest are the store, so no reader can ever meet a lock.
* Flush. `write_ticks` only validates, dedupes and buffers (Arrow tables). `flush()` — called by the
  pipeline at least every second, and by `write_ticks` itself when a second has passed — writes one
  level-0 Parquet file per (table, session day) to tmp/, renames each into place, and then publishes
  them all at once by atomically replacing manifest.json. A SIGKILL therefore loses at most the
  ticks buffered since the last flush; files written but not yet in the manifest are orphans that
  the next writer deletes when it starts.
* Dedupe. A tick's identity is (instrument_key, ts_ms, ltp, ltq, volume, oi, bid, bid_qty, ask,
  ask_qty): a source that re-sends (a restarted replay, Upstox's snapshot after a reconnect) sends
  identical values. Per instrument and session day the writer keeps a high-water mark (the latest
  ts_ms written) and the identities of the ticks at that very millisecond. A tick older than the
  mark is taken as already written and dropped (counted in `stats["late"]`), a tick at the mark is
  dropped if its identity was seen, a newer one is written. The first time a restarted writer meets
  a day it loads these marks from the day's files, so re-fed ticks are not stored twice. Sources
  deliver each instrument's ticks in exchange-time order, so only out-of-order stragglers older than
  an already written tick would be lost; that is the price of keeping no per-tick index.
* Candles. 1-minute candles are built from accepted ticks (OHLC from ltp, volume from the change in
  cumulative volume, or the sum of ltq when the source has no cumulative volume, NULL for an index;
  oi last) and
  written when the minute is complete: a later minute arrived for the instrument, or the newest tick
  seen on any instrument is 2 s past the minute's end, or at close. Candles and profile summaries
  are versioned rows: the row with the highest `seq` for a key wins, so a late tick that amends a
  written candle, or an imported candle for the same minute, simply supersedes it; readers and
  compaction keep only the winner. Days a writer stored ticks for are listed as `unsealed` in the
  manifest until it closes cleanly; a writer starting after a crash reloads those days at once,
  so the last candles its predecessor held unwritten are rebuilt from the stored ticks and written
  (unless a candle for that minute is already stored).
* Compaction. When a day has `compact_after` (30) level-0 files they are merged into one level-1
  file; when it has `merge_levels_after` (10) files of a level n ≥ 1, those merge into one file of
  level n + 1 (tiered: no merge rewrites the whole live day, so each row is rewritten about once
  per level), so a live day is at most ~30 + 10 per level files; at close every day touched is
  merged into a single file. Merges run on a background thread at idle priority (flush never waits
  for one) and only write a new file; the writer's own thread then swaps it for its inputs with
  one manifest replace, so a reader sees either the inputs or the merged file, never both. Inputs
  are deleted `grace_s` later; a reader
  whose file vanished anyway re-reads the manifest and retries (persistence.readers).
* Close (the pipeline calls it on SIGTERM) publishes everything first and only then merges each day
  touched into one file, which can take a few seconds on a big day: killing it then loses nothing.

Not thread-safe: call it from one thread (the feed's loop, or a worker thread it owns). It never
touches Redis, Channels or the Django database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feeds.ticks import Tick, tick_fields
from persistence import records
from persistence.store import (
    CANDLE_SCHEMA,
    CANDLES_1M,
    DAY_MS,
    DEPTH,
    DEPTH_LEVEL,
    DEPTH_SCHEMA,
    EPOCH,
    IST_OFFSET_MS,
    PROFILE_SCHEMA,
    PROFILES,
    SORT_KEYS,
    TABLES,
    TICK_SCHEMA,
    TICKS,
    VERSIONED_KEYS,
    PartFile,
    WriterLock,
    default_root,
    read_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
SEAL_GRACE_MS = 2_000
TICK_COLUMNS = ("instrument_key", "ts_ms", "ltp", "ltq", "volume", "oi", "bid", "bid_qty", "ask", "ask_qty")
# What makes two ticks at the same millisecond the same tick (with the instrument and the time).
IDENTITY = ("ltp", "ltq", "volume", "oi", "bid", "bid_qty", "ask", "ask_qty")


def _day_name(daynum: int) -> str:
    return date.fromordinal(EPOCH.toordinal() + daynum).isoformat()


def _background_priority() -> None:
    """Run this thread (the compactor) at the lowest CPU priority: a merge can wait, the feed's
    decoding and streaming cannot (a merge of a day's files took a core for a second or more, and
    the feed's lag tail grew with it). Linux gives threads their own nice value."""
    tid = threading.get_native_id()
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, tid, 19)
    with contextlib.suppress(AttributeError, OSError):  # only when a core is otherwise idle
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))


def _merge_files(con: duckdb.DuckDBPyConnection, root: Path, table: str, rel: str, paths: list[str]) -> int:
    """Merge Parquet files into `rel` (sorted, superseded versions dropped); runs on the compactor
    thread with its own connection and touches nothing but files. Returns the row count."""
    tmp = root / "tmp" / (rel.replace("/", "_") + ".tmp")
    dedupe = ""
    if table in VERSIONED_KEYS:
        dedupe = f"QUALIFY row_number() OVER (PARTITION BY {VERSIONED_KEYS[table]} ORDER BY seq DESC) = 1"
    con.execute(
        f"COPY (SELECT * FROM read_parquet(?) {dedupe} ORDER BY {SORT_KEYS[table]}) "
        "TO '{}' (FORMAT parquet, COMPRESSION zstd)".format(str(tmp).replace("'", "''")),
        [[str(root / p) for p in paths]],
    )
    rows = pq.read_metadata(tmp).num_rows
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root / rel)
    return rows


class _Series:
    """What the writer remembers about one instrument on one session day: its high-water mark and
    the candle of the latest minute."""

    __slots__ = (
        "at_mark",
        "base_volume",
        "close",
        "dirty",
        "high",
        "last_volume",
        "low",
        "mark",
        "minute",
        "oi",
        "open",
        "sum_ltq",
    )

    def __init__(self) -> None:
        self.mark = -1  # latest ts_ms written
        self.at_mark: set[tuple] = set()  # identities of the ticks at `mark`
        self.minute = -1  # start of the candle being built
        self.open = self.high = self.low = self.close = 0.0
        self.base_volume: int | None = None  # cumulative volume before this minute, if known
        self.last_volume = 0
        self.sum_ltq = 0
        self.oi = 0.0
        self.dirty = False  # candle changed since last written

    def candle_volume(self) -> int | None:
        if self.last_volume > 0:
            return max(self.last_volume - (self.base_volume or 0), 0)
        # No cumulative volume: count last-trade quantities; an index has neither (NULL, as in
        # imported index candles).
        return self.sum_ltq or None


class HistoryWriter:
    """Writes ticks, candles, depth and profile summaries into the history store (see module doc)."""

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        flush_interval: float | None = 1.0,
        compact_after: int = 30,
        merge_levels_after: int = 10,
        grace_s: float = 30.0,
    ) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.root)
        self.flush_interval = flush_interval
        self.compact_after = compact_after
        self.merge_levels_after = merge_levels_after
        self.grace_s = grace_s
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(exist_ok=True)
        self._manifest = read_manifest(self.root)
        self._remove_orphans()
        self._duck = duckdb.connect()
        # Merges run on their own thread and connection, limited to one DuckDB thread so the
        # feed keeps a core; flush() never waits for them.
        self._merge_duck = duckdb.connect(config={"threads": 1})
        self._compactor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="history-compactor", initializer=_background_priority
        )
        self._merging: tuple | None = None
        self._series: dict[tuple[str, int], _Series] = {}
        self._loaded_days: set[int] = set()
        self._pending: dict[str, dict[int, list[pa.Table]]] = {t: {} for t in TABLES}
        self._pending_candles: dict[int, list[tuple]] = {}
        self._new_instruments: dict[int, set[str]] = {}
        self._touched: set[tuple[str, str]] = set()  # (table, day) written in this session
        self._graveyard: list[tuple[float, Path]] = []
        self._watermark = -1  # newest ts_ms accepted on any instrument
        self._last_flush = time.monotonic()
        self._closed = False
        self.stats = {"written": 0, "duplicates": 0, "late": 0, "flushes": 0, "compactions": 0}
        self._late_reported = 0
        for day in self._manifest.unsealed:
            self._load_day((date.fromisoformat(day) - EPOCH).days)

    # --- ticks ---------------------------------------------------------------------------------
    def write_ticks(self, ticks: list[Tick]) -> int:
        """Buffer a batch of ticks; returns how many were new (not duplicates or late)."""
        self._check_open()
        if not ticks:
            self._maybe_flush()
            return 0
        written = self._write_rows(list(map(tick_fields, ticks)))
        self._maybe_flush()
        return written

    def write_records(
        self, keys: list[str], heads: bytes, counts: bytes, levels: bytes, *, flush: bool = False
    ) -> int:
        """Like write_ticks for ticks as `persistence.records` (what the feed sends its writer):
        columns come straight out of the bytes. `flush=True` then flushes. Raises RecordError
        (nothing buffered) when the parts do not fit together."""
        self._check_open()
        columns, depth = records.decode(len(keys), heads, counts, levels)
        written = self._accept(keys, columns, depth) if keys else 0
        self._finish_write(flush)
        return written

    def write_tick_columns(self, columns: Mapping[str, Sequence]) -> int:
        """Like write_ticks for columns (TICK_COLUMNS, close_prev optional); used by imports."""
        self._check_open()
        keys = columns["instrument_key"]
        n = len(keys)
        cols = {
            name: np.asarray(columns[name], dtype=np.int64 if name in records.INT_FIELDS else np.float64)
            for name in TICK_COLUMNS[1:]
        }
        close_prev = columns.get("close_prev")
        cols["close_prev"] = np.zeros(n) if close_prev is None else np.asarray(close_prev, np.float64)
        written = self._accept(keys, cols, None) if n else 0
        self._maybe_flush()
        return written

    def _write_rows(self, rows: list[tuple]) -> int:
        keys, heads, counts, levels = records.encode_rows(rows)
        columns, depth = records.decode(len(keys), heads, counts, levels)
        return self._accept(keys, columns, depth)

    def _finish_write(self, flush: bool) -> None:
        if flush:
            self.flush()
        else:
            self._maybe_flush()

    def _accept(
        self,
        keys: Sequence[str] | pa.Array,
        cols: dict[str, np.ndarray],
        depth: tuple[np.ndarray, np.ndarray] | None,
    ) -> int:
        """Dedupe a batch against each series' high-water mark (module doc), fold the accepted
        ticks into candles and buffer them. Vectorised: numpy does the per-tick work; Python
        steps only per series, per candle minute, and per tick sharing its millisecond with
        another of its series (whose identities must be compared)."""
        ts = cols["ts_ms"]
        n = len(ts)
        encoded = (keys if isinstance(keys, pa.Array) else pa.array(keys, pa.string())).dictionary_encode()
        names = encoded.dictionary.to_pylist()
        key_idx = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        daynums = (ts + IST_OFFSET_MS) // DAY_MS
        first_day = int(daynums[0])
        one_day = bool((daynums == first_day).all())
        if one_day:
            sid, series_keys = key_idx, [(name, first_day) for name in names]
        else:
            days, day_idx = np.unique(daynums, return_inverse=True)
            codes, sid = np.unique(key_idx * len(days) + day_idx.reshape(-1), return_inverse=True)
            sid = sid.reshape(-1)
            series_keys = [(names[c // len(days)], int(days[c % len(days)])) for c in codes.tolist()]
        # The state of each series in the batch (loading a day from disk the first time it is met).
        states: list[_Series] = []
        for key, daynum in series_keys:
            s = self._series.get((key, daynum))
            if s is None:
                if daynum not in self._loaded_days:
                    self._load_day(daynum)
                    s = self._series.get((key, daynum))
                if s is None:
                    s = self._series[(key, daynum)] = _Series()
                    self._new_instruments.setdefault(daynum, set()).add(key)
            states.append(s)
        mark0 = np.fromiter((s.mark for s in states), np.int64, len(states))

        # Arrival order within each series; rows of a series next to each other.
        order = np.argsort(sid, kind="stable")
        s_sorted, t_sorted = sid[order], ts[order]
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
        # The mark each tick meets: the series' stored mark or its latest earlier tick, whichever
        # is later (a running maximum per series, by offsetting each series above the one before).
        base = int(t_sorted.min())
        span = int(t_sorted.max()) - base + 2
        rank = np.zeros(n, np.int64)
        rank[starts] = 1
        rank = np.cumsum(rank) - 1
        running = np.maximum.accumulate(rank * span + (t_sorted - base + 1))
        before = np.empty(n, np.int64)
        before[0] = -1
        before[1:] = running[:-1] - rank[1:] * span + base - 1
        before[starts] = -1
        before = np.maximum(before, mark0[s_sorted])
        late_sorted = t_sorted < before
        # Ticks at the mark are duplicates when an identical tick is already there. Non-late ticks
        # of a series never go back in time, so the ticks sharing a millisecond are adjacent.
        keep = np.flatnonzero(~late_sorted)
        ks, kt = s_sorted[keep], t_sorted[keep]
        same = (ks[1:] == ks[:-1]) & (kt[1:] == kt[:-1])
        tied = np.zeros(len(keep), bool)
        tied[1:] |= same
        tied[:-1] |= same
        tied |= kt == mark0[ks]
        dup_sorted = np.zeros(n, bool)
        at_ts: dict[tuple[int, int], set] = {}
        if tied.any():
            positions = keep[tied]
            rows = order[positions]
            for pos, s_i, t_i, ident in zip(
                positions.tolist(),
                s_sorted[positions].tolist(),
                t_sorted[positions].tolist(),
                self._identities(cols, rows),
                strict=True,
            ):
                seen = at_ts.get((s_i, t_i))
                if seen is None:
                    s = states[s_i]
                    seen = at_ts[(s_i, t_i)] = set(s.at_mark) if t_i == s.mark else set()
                if ident in seen:
                    dup_sorted[pos] = True
                else:
                    seen.add(ident)
        accepted_sorted = ~late_sorted & ~dup_sorted
        late, duplicates = int(late_sorted.sum()), int(dup_sorted.sum())
        n_accepted = n - late - duplicates
        self.stats["duplicates"] += duplicates
        self.stats["late"] += late
        self.stats["written"] += n_accepted
        if not n_accepted:
            return 0

        acc = order[accepted_sorted]  # accepted rows, by series then arrival
        acc_sid = sid[acc]
        self._update_marks(states, cols, acc, acc_sid, at_ts)
        self._fold_candles(states, series_keys, cols, acc, acc_sid)

        seq0 = self._manifest.next_seq
        self._manifest.next_seq += n
        arrays = [pa.array(keys, pa.string()) if not isinstance(keys, pa.Array) else keys]
        arrays += [pa.array(cols[f.name]) for f in TICK_SCHEMA if f.name not in ("instrument_key", "seq")]
        arrays.append(pa.arange(seq0, seq0 + n).cast(pa.int64()))
        batch = pa.Table.from_arrays(arrays, schema=TICK_SCHEMA)
        depth_batch = self._depth_table(arrays[0], arrays[1], depth, seq0) if depth is not None else None
        accepted = np.zeros(n, bool)
        accepted[acc] = True
        for daynum in np.unique(daynums[acc]).tolist():
            whole = n_accepted == n and one_day
            take = None if whole else pa.array(np.flatnonzero(accepted & (daynums == daynum)))
            self._pending[TICKS].setdefault(daynum, []).append(batch if whole else batch.take(take))
            if depth_batch is not None:
                part = depth_batch if whole else depth_batch.take(take)
                part = part.filter(pc.greater(pc.list_value_length(part["levels"]), 0))
                if part.num_rows:
                    self._pending[DEPTH].setdefault(daynum, []).append(part)
        watermark = int(ts[acc].max())
        if watermark > self._watermark:
            self._watermark = watermark
        return n_accepted

    @staticmethod
    def _identities(cols: dict[str, np.ndarray], rows: np.ndarray) -> Iterable[tuple]:
        """The identity (module doc) of each of `rows`, as Python tuples."""
        return zip(*(cols[name][rows].tolist() for name in IDENTITY), strict=True)

    @staticmethod
    def _update_marks(
        states: list[_Series],
        cols: dict[str, np.ndarray],
        acc: np.ndarray,
        acc_sid: np.ndarray,
        at_ts: dict[tuple[int, int], set],
    ) -> None:
        """Each series' new mark: its last accepted tick, and the identities at that millisecond."""
        last = np.flatnonzero(np.r_[acc_sid[1:] != acc_sid[:-1], True])
        rows = acc[last]
        for s_i, t_i, ident in zip(
            acc_sid[last].tolist(),
            cols["ts_ms"][rows].tolist(),
            HistoryWriter._identities(cols, rows),
            strict=True,
        ):
            s = states[s_i]
            # A millisecond shared with other ticks (of the batch, or the stored mark's) has all
            # their identities in `at_ts`; one the tick had to itself has its identity alone.
            seen = at_ts.get((s_i, t_i))
            s.at_mark = seen if seen is not None else {ident}
            s.mark = t_i

    def _fold_candles(
        self,
        states: list[_Series],
        series_keys: list[tuple[str, int]],
        cols: dict[str, np.ndarray],
        acc: np.ndarray,
        acc_sid: np.ndarray,
    ) -> None:
        """`_candle_add` for every accepted tick, one Python step per (series, minute) instead."""
        ts = cols["ts_ms"][acc]
        minute = ts - ts % MINUTE_MS
        ltp, ltq, vol, oi = (cols[name][acc] for name in ("ltp", "ltq", "volume", "oi"))
        starts = np.flatnonzero(np.r_[True, (acc_sid[1:] != acc_sid[:-1]) | (minute[1:] != minute[:-1])])
        ends = np.r_[starts[1:], len(acc)] - 1
        high = np.maximum.reduceat(ltp, starts)
        low = np.minimum.reduceat(ltp, starts)
        sum_ltq = np.add.reduceat(ltq, starts)
        traded = np.where(vol != 0, np.arange(len(acc)), -1)
        last_traded = np.maximum.reduceat(traded, starts)
        last_volume = np.where(last_traded >= starts, vol[np.maximum(last_traded, 0)], 0)
        fold = self._fold_minute
        for s_i, m, o, h, lo, c, q, v, last_oi, v0, q0 in zip(
            acc_sid[starts].tolist(),
            minute[starts].tolist(),
            ltp[starts].tolist(),
            high.tolist(),
            low.tolist(),
            ltp[ends].tolist(),
            sum_ltq.tolist(),
            last_volume.tolist(),
            oi[ends].tolist(),
            vol[starts].tolist(),
            ltq[starts].tolist(),
            strict=True,
        ):
            fold(series_keys[s_i], states[s_i], m, o, h, lo, c, q, v, last_oi, v0, q0)

    @staticmethod
    def _depth_table(
        keys: pa.Array, ts: pa.Array, depth: tuple[np.ndarray, np.ndarray], seq0: int
    ) -> pa.Table:
        counts, levels = depth
        offsets = np.zeros(len(counts) + 1, np.int32)
        np.cumsum(counts, out=offsets[1:])
        values = pa.StructArray.from_arrays(
            [
                pa.array(levels[:, 0]),
                pa.array(levels[:, 1].astype(np.int64)),
                pa.array(levels[:, 2]),
                pa.array(levels[:, 3].astype(np.int64)),
            ],
            fields=list(DEPTH_LEVEL),
        )
        return pa.Table.from_arrays(
            [
                keys,
                ts,
                pa.ListArray.from_arrays(pa.array(offsets), values, type=DEPTH_SCHEMA.field("levels").type),
                pa.arange(seq0, seq0 + len(counts)).cast(pa.int64()),
            ],
            schema=DEPTH_SCHEMA,
        )

    # --- candles -------------------------------------------------------------------------------
    def _candle_add(
        self, key: str, daynum: int, s: _Series, ts: int, ltp: float, ltq: int, vol: int, oi: float
    ) -> None:
        """One accepted tick into its series' candle (restart rebuilds; batches use _fold_candles)."""
        self._fold_minute((key, daynum), s, ts - ts % MINUTE_MS, ltp, ltp, ltp, ltp, ltq, vol, oi, vol, ltq)

    def _fold_minute(
        self,
        series: tuple[str, int],
        s: _Series,
        minute: int,
        open_: float,
        high: float,
        low: float,
        close: float,
        sum_ltq: int,
        volume: int,
        oi: float,
        first_volume: int,
        first_ltq: int,
    ) -> None:
        """Accepted ticks of one series and one minute, in order, into its candle: their first and
        last price, high and low, summed last-trade quantities, last non-zero cumulative volume
        (0: none), last OI, and the first tick's volume and quantity. A new minute writes the
        previous candle if it changed."""
        if minute == s.minute:
            if high > s.high:
                s.high = high
            if low < s.low:
                s.low = low
            s.close = close
            s.sum_ltq += sum_ltq
        else:
            if s.minute >= 0:
                if s.dirty:
                    self._emit_candle(series[0], series[1], s)
                s.base_volume = s.last_volume
            elif s.base_volume is None:
                # First tick of the day seen: the volume before it is what this trade did not add.
                s.base_volume = max(first_volume - first_ltq, 0) if first_volume else 0
            s.minute = minute
            s.open, s.high, s.low, s.close = open_, high, low, close
            s.sum_ltq = sum_ltq
        if volume:
            s.last_volume = volume
        s.oi = oi
        s.dirty = True

    def _emit_candle(self, key: str, daynum: int, s: _Series) -> None:
        seq = self._manifest.next_seq
        self._manifest.next_seq += 1
        self._pending_candles.setdefault(daynum, []).append(
            (key, s.minute, s.open, s.high, s.low, s.close, s.candle_volume(), s.oi, seq)
        )
        s.dirty = False

    def _seal_completed_candles(self, everything: bool = False) -> None:
        for (key, daynum), s in self._series.items():
            if s.dirty and (everything or s.minute + MINUTE_MS + SEAL_GRACE_MS <= self._watermark):
                self._emit_candle(key, daynum, s)
        for daynum, rows in self._pending_candles.items():
            columns = list(zip(*rows, strict=True))
            table = pa.Table.from_arrays(
                [pa.array(col, type=f.type) for col, f in zip(columns, CANDLE_SCHEMA, strict=True)],
                schema=CANDLE_SCHEMA,
            )
            self._pending[CANDLES_1M].setdefault(daynum, []).append(table)
        self._pending_candles = {}

    def seal_candles(self) -> None:
        """Emit every candle still being built, as if its minute were over. An import calls this
        before writing finished candles, so that those supersede candles built from its ticks."""
        self._seal_completed_candles(everything=True)

    def write_candles(self, table_or_rows: pa.Table | Iterable[Mapping]) -> int:
        """Store finished 1-minute candles (imports): columns instrument_key, ts (datetime/timestamp,
        candle start) or ts_ms, open, high, low, close, and optionally volume and oi. A candle
        for a minute already stored replaces it. Returns the number of rows buffered."""
        table = (
            table_or_rows
            if isinstance(table_or_rows, pa.Table)
            else pa.Table.from_pylist(list(table_or_rows))
        )
        if table.num_rows == 0:
            return 0
        if "ts_ms" in table.column_names:
            ts_ms = table["ts_ms"].cast(pa.int64())
        else:
            ts = table["ts"]
            if not pa.types.is_timestamp(ts.type):
                raise ValueError("candle ts must be a timestamp (or give ts_ms)")
            if ts.type.tz is None:
                raise ValueError("candle ts must be timezone-aware")
            ts_ms = pc.cast(ts, pa.timestamp("ms", tz=ts.type.tz)).cast(pa.int64())
        n = table.num_rows
        seq0 = self._manifest.next_seq
        self._manifest.next_seq += n

        def column(name: str, type_: pa.DataType, default: object) -> pa.Array:
            if name in table.column_names:
                return table[name].cast(type_)
            return pa.array([default] * n, type=type_)

        out = pa.Table.from_arrays(
            [
                table["instrument_key"].cast(pa.string()),
                ts_ms,
                column("open", pa.float64(), None),
                column("high", pa.float64(), None),
                column("low", pa.float64(), None),
                column("close", pa.float64(), None),
                column("volume", pa.int64(), None),
                column("oi", pa.float64(), 0.0),
                pa.arange(seq0, seq0 + n).cast(pa.int64()),
            ],
            schema=CANDLE_SCHEMA,
        )
        daynums = pc.divide(
            pc.add(out["ts_ms"], IST_OFFSET_MS), DAY_MS
        )  # timestamps after 1970: truncation is floor
        for daynum in pc.unique(daynums).to_pylist():
            part = out.filter(pc.equal(daynums, daynum))
            self._pending[CANDLES_1M].setdefault(daynum, []).append(part)
            names = self._new_instruments.setdefault(daynum, set())
            names.update(pc.unique(part["instrument_key"]).to_pylist())
        self._maybe_flush()
        return n

    # --- profiles ------------------------------------------------------------------------------
    def write_profile_summary(
        self, instrument_key: str, session_day: date, summary: Mapping[str, object]
    ) -> None:
        """Store (or replace) the day's profile summary for an instrument: a JSON-able mapping
        (POC, value area, IB, day type …; Decimals and dates are stored as strings)."""
        seq = self._manifest.next_seq
        self._manifest.next_seq += 1
        daynum = (session_day - EPOCH).days
        row = pa.Table.from_pylist(
            [
                {
                    "instrument_key": instrument_key,
                    "session_day": session_day,
                    "summary": json.dumps(dict(summary), default=str, sort_keys=True),
                    "seq": seq,
                }
            ],
            schema=PROFILE_SCHEMA,
        )
        self._pending[PROFILES].setdefault(daynum, []).append(row)
        self._new_instruments.setdefault(daynum, set()).add(instrument_key)

    # --- flush, compaction, close --------------------------------------------------------------
    def _maybe_flush(self) -> None:
        if self.flush_interval is not None and time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Publish everything buffered: one Parquet file per (table, day), then one manifest replace."""
        self._check_open()
        if self.stats["late"] > self._late_reported:
            # Not an error (a source re-sending history looks the same), but a live source whose
            # ticks arrive out of order would lose them: say so.
            log.info(
                "history: %d ticks older than already stored ones were skipped",
                self.stats["late"] - self._late_reported,
            )
            self._late_reported = self.stats["late"]
        self._seal_completed_candles()
        self._last_flush = time.monotonic()
        if self._write_pending():
            self.stats["flushes"] += 1
        self._compact(force=False)
        self._bury_expired()
        self._forget_old_days()

    def close(self) -> None:
        """Seal open candles, publish, compact every day touched into one file, release the lock."""
        if self._closed:
            return
        self._seal_completed_candles(everything=True)
        self._write_pending()
        # Every candle is written now; nothing is left for a successor to rebuild.
        self._manifest.unsealed = []
        write_manifest(self.root, self._manifest)
        self._compact(force=True)
        self._bury_expired(now=float("inf"))
        self._release()

    def detach(self) -> None:
        """Publish what is buffered and release the store without the close-time work (sealing
        the open candles, merging the day): for a writer whose feed died. The days stay listed as
        unsealed, so the next writer rebuilds their last candles from the stored ticks, as after
        a crash, but no tick is lost."""
        if self._closed:
            return
        self._write_pending()
        self._release()

    def _release(self) -> None:
        self._compactor.shutdown(wait=True)
        self._merge_duck.close()
        self._duck.close()
        self._lock.release()
        self._closed = True

    def abandon(self) -> None:
        """Release the store without publishing what was buffered since the last flush (an import
        that failed half-way leaves the store as it was)."""
        if self._closed:
            return
        self._pending = {t: {} for t in TABLES}
        self._pending_candles = {}
        self._new_instruments = {}
        if self._merging is not None:
            self._merging[-1].cancel()
        self._release()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("HistoryWriter is closed")

    def _write_pending(self) -> bool:
        manifest = self._manifest
        wrote = False
        for table in TABLES:
            for daynum, parts in self._pending[table].items():
                data = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
                day = _day_name(daynum)
                rel = self._write_file(table, day, 0, data)
                manifest.files[table].setdefault(day, []).append(PartFile(rel, 0, data.num_rows))
                self._touched.add((table, day))
                if table == TICKS and day not in manifest.unsealed:
                    manifest.unsealed = sorted([*manifest.unsealed, day])
                wrote = True
            self._pending[table] = {}
        for daynum, names in self._new_instruments.items():
            day = _day_name(daynum)
            manifest.instruments[day] = sorted(set(manifest.instruments.get(day, ())) | names)
        if self._new_instruments:
            manifest.instruments = dict(sorted(manifest.instruments.items()))
            self._new_instruments = {}
            wrote = True
        if wrote:
            write_manifest(self.root, manifest)
        return wrote

    def _file_name(self, table: str, day: str, level: int) -> str:
        number = self._manifest.next_file
        self._manifest.next_file += 1
        return f"{table}/{day}/L{level}-{number:012d}-{uuid.uuid4().hex[:6]}.parquet"

    def _write_file(self, table: str, day: str, level: int, data: pa.Table) -> str:
        rel = self._file_name(table, day, level)
        tmp = self._tmp / (rel.replace("/", "_") + ".tmp")
        with open(tmp, "wb") as f:
            pq.write_table(data, f, compression="zstd" if level else "snappy")
            f.flush()
            os.fsync(f.fileno())  # on disk before a manifest names it, so a power cut loses no more
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        return rel

    def _compact(self, *, force: bool) -> None:
        """Swap in a finished background merge and start the next one (flush), or, at close, merge
        every day touched into one file in the foreground."""
        changed = self._finish_merge(wait=force)
        if force:
            for table in TABLES:
                for day, parts in list(self._manifest.files[table].items()):
                    # One flush file may still hold superseded candle versions: merge it too.
                    if (table, day) in self._touched and (len(parts) > 1 or parts[0].level == 0):
                        self._start_merge(table, day, parts, max(2, *(p.level for p in parts)))
                        changed |= self._finish_merge(wait=True)
        elif self._merging is None:
            for table, day in sorted(self._touched):  # only days this writer added files to
                job = self._due_merge(self._manifest.files[table][day])
                if job is not None:
                    self._start_merge(table, day, *job)
                    break
        if changed:
            write_manifest(self.root, self._manifest)

    def _due_merge(self, parts: list[PartFile]) -> tuple[list[PartFile], int] | None:
        """The next merge a live day needs, tiered so that no merge rewrites the whole day: the
        level-0 files once there are `compact_after` of them, else the files of the lowest level
        that has `merge_levels_after` of them, into one file a level up. Each row is rewritten
        about once per level (a log of the day's size), and a day has at most ~compact_after +
        merge_levels_after per level files."""
        level0 = [p for p in parts if p.level == 0]
        if len(level0) >= self.compact_after:
            return level0, 1
        for level in sorted({p.level for p in parts} - {0}):
            same = [p for p in parts if p.level == level]
            if len(same) >= self.merge_levels_after:
                return same, level + 1
        return None

    def _start_merge(self, table: str, day: str, inputs: list[PartFile], level: int) -> None:
        rel = self._file_name(table, day, level)
        future = self._compactor.submit(
            _merge_files, self._merge_duck, self.root, table, rel, [p.path for p in inputs]
        )
        self._merging = (table, day, level, {p.path for p in inputs}, rel, future)

    def _finish_merge(self, *, wait: bool) -> bool:
        """Replace a finished merge's inputs by its output in the manifest (not yet written)."""
        if self._merging is None:
            return False
        table, day, level, inputs, rel, future = self._merging
        if not wait and not future.done():
            return False
        self._merging = None
        try:
            rows = future.result()
        except Exception:
            # The inputs stay as they are, readers see no difference; the next flush tries again.
            log.exception("merging %s %s into %s failed", table, day, rel)
            (self.root / rel).unlink(missing_ok=True)
            return False
        parts = self._manifest.files[table][day]
        self._manifest.files[table][day] = [p for p in parts if p.path not in inputs] + [
            PartFile(rel, level, rows)
        ]
        deadline = time.monotonic() + self.grace_s
        self._graveyard.extend((deadline, self.root / p) for p in inputs)
        self.stats["compactions"] += 1
        return True

    def _bury_expired(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        keep = []
        for deadline, path in self._graveyard:
            if deadline <= now:
                path.unlink(missing_ok=True)
            else:
                keep.append((deadline, path))
        self._graveyard = keep

    def _remove_orphans(self) -> None:
        """Delete files no manifest names: leftovers of a writer killed between rename and publish,
        or compaction inputs whose deletion was pending."""
        named = {p.path for days in self._manifest.files.values() for parts in days.values() for p in parts}
        for path in self._tmp.iterdir():
            path.unlink(missing_ok=True)
        for table in TABLES:
            for path in (self.root / table).glob("*/*.parquet"):
                if path.relative_to(self.root).as_posix() not in named:
                    path.unlink(missing_ok=True)

    # --- restart state -------------------------------------------------------------------------
    def _load_day(self, daynum: int) -> None:
        """Rebuild each instrument's high-water mark and latest-minute candle for a day already on
        disk, so a restarted writer neither duplicates re-sent ticks nor loses a minute's OHLC."""
        self._loaded_days.add(daynum)
        day = _day_name(daynum)
        the_day = date.fromisoformat(day)
        paths = [str(self.root / p) for p in self._manifest.paths(TICKS, the_day, the_day)]
        if not paths:
            return
        rows = self._duck.execute(
            """
            WITH t AS (SELECT * FROM read_parquet(?)),
                 last AS (SELECT instrument_key, max(ts_ms) - max(ts_ms) % 60000 AS minute
                          FROM t GROUP BY instrument_key),
                 base AS (SELECT t.instrument_key, max(t.volume) AS base_volume
                          FROM t JOIN last USING (instrument_key) WHERE t.ts_ms < last.minute
                          GROUP BY t.instrument_key)
            SELECT t.instrument_key, t.ts_ms, t.ltp, t.ltq, t.volume, t.oi, t.bid, t.bid_qty, t.ask,
                   t.ask_qty, base.base_volume
            FROM t JOIN last USING (instrument_key) LEFT JOIN base USING (instrument_key)
            WHERE t.ts_ms >= last.minute
            ORDER BY t.instrument_key, t.ts_ms, t.seq
            """,
            [paths],
        ).fetchall()
        rebuilt = []
        for key, ts, ltp, ltq, vol, oi, bid, bid_qty, ask, ask_qty, base_volume in rows:
            s = self._series.get((key, daynum))
            if s is None:
                s = self._series[(key, daynum)] = _Series()
                s.base_volume = base_volume  # None when the minute is the day's first
                rebuilt.append((key, s))
            ident = (ltp, ltq, vol, oi, bid, bid_qty, ask, ask_qty)
            if ts == s.mark:
                s.at_mark.add(ident)
            else:
                s.mark, s.at_mark = ts, {ident}
            self._candle_add(key, daynum, s, ts, ltp, ltq, vol, oi)
        # A candle already stored for that minute (sealed before a clean close, or imported) stays
        # as it is unless a new tick amends it; one a killed writer never wrote is written later.
        stored = set()
        candle_paths = [str(self.root / p) for p in self._manifest.paths(CANDLES_1M, the_day, the_day)]
        if candle_paths and rebuilt:
            stored = set(
                self._duck.execute(
                    "SELECT DISTINCT instrument_key, ts_ms FROM read_parquet(?) WHERE ts_ms >= ?",
                    [candle_paths, min(s.minute for _, s in rebuilt)],
                ).fetchall()
            )
        for key, s in rebuilt:
            s.dirty = (key, s.minute) not in stored
            self._watermark = max(self._watermark, s.mark)

    def _forget_old_days(self) -> None:
        """Drop restart state for days before the newest tick's day once their candles are written;
        they are reloaded from disk if ticks for them ever come again."""
        if self._watermark < 0:
            return
        today = (self._watermark + IST_OFFSET_MS) // DAY_MS
        old = {d for (_, d), s in self._series.items() if d < today}
        for daynum in old:
            if any(s.dirty for (_, d), s in self._series.items() if d == daynum):
                continue
            for k in [k for k in self._series if k[1] == daynum]:
                del self._series[k]
            self._loaded_days.discard(daynum)
            # Its candles are all published (flush wrote them before this runs).
            name = _day_name(daynum)
            self._manifest.unsealed = [d for d in self._manifest.unsealed if d != name]


__all__ = ["HistoryWriter"]
