"""The runfeed pipeline: everything that happens to a tick after a source produced it.

`FeedPipeline` is the `TickSink` every source (sim, replay, Upstox) feeds. On one asyncio loop it

* packs each tick once on arrival (`feeds.ticks.pack_tick`'s bytes, for the streams) and encodes
  it as a `persistence.records` record (for the store); `put_packed` takes ticks a source already
  packed and encoded (the Upstox decoder process). The records go to the history store's writer at
  least every `flush_ms`, from a dedicated worker thread so a slow write never stalls the loop (runfeed's
  writer is `persistence.writer_process.HistoryWriterProcess`, the store's only writer, in a
  child process; an in-process `HistoryWriter` works the same; exactly one thread touches it);
* XADDs every tick, msgpack-packed, to a bounded Redis Stream per instrument
  (`feeds.groups.tick_stream_key`, MAXLEN ~ `stream_maxlen`) every `stream_ms` (~100 ms, the live
  path's latency), one server-side script call per few thousand ticks; the stream ids of each
  batch are what the `on_flush` hooks receive (strategy dispatch names those ranges). While Redis
  is unreachable the ticks wait (bounded) and go out in order when it answers again;
* sends conflated `market.snapshot` messages to the Channels group every `snapshot_ms` (the
  instruments that changed, plus everything every few seconds) and keeps the last full snapshot
  in Redis (`LAST_SNAPSHOT_KEY`) for pages that connect later;
* refreshes the feed status hash (`FEED_STATUS_KEY`) every second.

Never call `async_to_sync` here and never send a message per tick: one loop, awaited sends,
conflated state. Sources never touch Redis, Channels or the store; this module never decides
anything about markets.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import operator
import os
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import msgpack

from feeds.groups import FEED_STATUS_KEY, LAST_SNAPSHOT_KEY, MARKET_GROUP, tick_stream_key
from feeds.sources import OPEN, PRE_OPEN, TickSource
from feeds.ticks import Tick, tick_fields, unpack_tick
from persistence.records import encode_rows
from persistence.store import session_day_of

log = logging.getLogger(__name__)

FULL_SNAPSHOT_EVERY_S = 5.0
STATUS_EVERY_S = 1.0
# A source may run far ahead of Redis and the store (a flat-out simulation): past this many
# buffered ticks its `await sink.drain()` waits for a flush.
HIGH_WATER = 200_000
# While the session is open, this long without a tick raises the feed alert.
STALE_AFTER_S = 10.0
# How often ticks go to the Redis Streams (and the on_flush hooks run): the live path's latency.
STREAM_FLUSH_MS = 100
# Commands per Redis round trip: big enough to amortise it, small enough to keep the loop responsive.
XADD_CHUNK = 5_000
# Ticks kept for the streams while Redis is unreachable (the store still gets every tick).
STREAM_BACKLOG_MAX = 1_000_000
_instrument_key = operator.attrgetter("instrument_key")
_ts_ms = operator.attrgetter("ts_ms")
# One call per chunk of ticks, in four arguments whatever the chunk's size (a command of thousands
# of arguments cost the loop more to build and its reply more to parse than the XADDs themselves):
# KEYS are the chunk's distinct streams; ARGV[1] the approximate MAXLEN; ARGV[2] the ticks'
# payloads back to back; ARGV[3] per tick its stream's index into KEYS (uint16, little-endian);
# ARGV[4] per tick its payload's length (uint32, little-endian). Each tick is XADDed to its stream
# in order, as field `t`. Returns per stream the first and last id added: 2 * #KEYS values.
XADD_LUA = """
local maxlen, blob, index, lengths = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local first, last = {}, {}
local pos = 1
for i = 1, #index / 2 do
  local lo, hi = string.byte(index, 2 * i - 1, 2 * i)
  local k = lo + 256 * hi + 1
  local size = struct.unpack('<I4', lengths, 4 * i - 3)
  local id = redis.call('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', 't', string.sub(blob, pos, pos + size - 1))
  pos = pos + size
  if first[k] == nil then first[k] = id end
  last[k] = id
end
local out = {}
for k = 1, #KEYS do
  out[2 * k - 1] = first[k]
  out[2 * k] = last[k]
end
return out
"""


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What one stream batch wrote: per instrument, the first and last stream id.
    A strategy task reads `XRANGE stream first last` (a claim check, never the ticks themselves)."""

    ranges: dict[str, tuple[str, str]]
    ticks: int
    last_tick_ms: int
    cut_at: float = 0.0  # wall time (time.time()) the batch was taken from the buffer


FlushHook = Callable[[FlushReport], Awaitable[None] | None]


@dataclass(slots=True)
class _Columns:
    """Ticks on their way to the streams as parallel columns: instrument key, exchange time (ms)
    and payload (`feeds.ticks.pack_tick` bytes). Columns, not Tick objects, so that a source that
    already holds packed ticks (the Upstox decoder process) costs no Python step per tick here."""

    keys: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.payloads)

    def extend(self, keys: list[str], ts: list[int], payloads: list[bytes]) -> None:
        self.keys.extend(keys)
        self.ts.extend(ts)
        self.payloads.extend(payloads)

    def __add__(self, other: _Columns) -> _Columns:
        return _Columns(self.keys + other.keys, self.ts + other.ts, self.payloads + other.payloads)

    def slice(self, start: int | None, stop: int | None = None) -> _Columns:
        return _Columns(self.keys[start:stop], self.ts[start:stop], self.payloads[start:stop])


@dataclass(slots=True)
class _Records:
    """Ticks on their way to the history store as `persistence.records` parts, one per frame or
    `put`: joined only when they are sent to the writer."""

    keys: list[str] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    counts: list[bytes] = field(default_factory=list)
    levels: list[bytes] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # ticks per part

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, keys: list[str], heads: bytes, counts: bytes, levels: bytes) -> None:
        self.keys.extend(keys)
        self.heads.append(heads)
        self.counts.append(counts)
        self.levels.append(levels)
        self.sizes.append(len(keys))

    def take(self, limit: int) -> _Records:
        """Remove and return the oldest parts, up to `limit` ticks (at least one part)."""
        parts, ticks = 0, 0
        for size in self.sizes:
            if parts and ticks + size > limit:
                break
            parts, ticks = parts + 1, ticks + size
        if parts == len(self.sizes):
            taken = _Records(self.keys, self.heads, self.counts, self.levels, self.sizes)
            self.keys, self.heads, self.counts, self.levels, self.sizes = [], [], [], [], []
            return taken
        taken = _Records(
            self.keys[:ticks],
            self.heads[:parts],
            self.counts[:parts],
            self.levels[:parts],
            self.sizes[:parts],
        )
        del (
            self.keys[:ticks],
            self.heads[:parts],
            self.counts[:parts],
            self.levels[:parts],
            self.sizes[:parts],
        )
        return taken

    def put_back(self, batch: _Records) -> None:
        """Return a batch taken by `take` to the front (its write failed)."""
        self.keys[:0] = batch.keys
        self.heads[:0] = batch.heads
        self.counts[:0] = batch.counts
        self.levels[:0] = batch.levels
        self.sizes[:0] = batch.sizes

    def joined(self) -> tuple[list[str], bytes, bytes, bytes]:
        return self.keys, b"".join(self.heads), b"".join(self.counts), b"".join(self.levels)


@dataclass(frozen=True, slots=True)
class OptionInfo:
    """What the snapshot's options summary needs to know about an option instrument."""

    underlying_key: str  # the index key, e.g. NSE_INDEX|Nifty 50
    strike: float
    option_type: str  # CE | PE
    expiry: str  # ISO date


def option_infos(master: Iterable[dict], keys: Iterable[str] | None = None) -> dict[str, OptionInfo]:
    """OptionInfo for the options of an (Upstox-shaped) instrument master, optionally only `keys`."""
    from datetime import datetime

    from feeds.ticks import IST

    wanted = set(keys) if keys is not None else None
    out = {}
    for row in master:
        if row.get("instrument_type") not in ("CE", "PE"):
            continue
        if wanted is not None and row["instrument_key"] not in wanted:
            continue
        expiry = datetime.fromtimestamp(row["expiry"] / 1000, tz=IST).date().isoformat()
        out[row["instrument_key"]] = OptionInfo(
            row["underlying_key"], float(row["strike_price"]), row["instrument_type"], expiry
        )
    return out


@dataclass(slots=True)
class _Quote:
    """Conflated state of one instrument shown on the dashboard."""

    name: str
    ltp: float = 0.0
    prev_close: float = 0.0
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    volume: int = 0
    oi: float = 0.0
    ts_ms: int = 0

    def update(self, t: Tick) -> None:
        if not self.ts_ms:
            self.open = self.high = self.low = t.ltp
        elif t.ltp > self.high:
            self.high = t.ltp
        elif t.ltp < self.low:
            self.low = t.ltp
        self.ltp = t.ltp
        if t.close_prev:
            self.prev_close = t.close_prev
        self.volume = t.volume
        self.oi = t.oi
        self.ts_ms = t.ts_ms

    def as_dict(self) -> dict:
        change = round(self.ltp - self.prev_close, 2) if self.prev_close else 0.0
        pct = round(100.0 * change / self.prev_close, 2) if self.prev_close else 0.0
        return {
            "name": self.name,
            "ltp": self.ltp,
            "prev_close": self.prev_close,
            "change": change,
            "change_pct": pct,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "volume": self.volume,
            "oi": self.oi,
            "ts_ms": self.ts_ms,
        }


@dataclass(slots=True)
class PipelineStats:
    ticks_in: int = 0
    ticks_streamed: int = 0
    ticks_already_streamed: int = 0  # re-sent after a restart: in the stream already, not added again
    rows_written: int = 0
    flushes: int = 0  # store flushes with ticks
    stream_flushes: int = 0
    stream_errors: int = 0
    snapshots_sent: int = 0
    flush_ms: list[float] = field(default_factory=list)  # duration of each store flush with ticks
    stream_flush_ms: list[float] = field(default_factory=list)  # each XADD batch, hooks excluded

    def flush_summary(self) -> dict:
        return _summary(self.flush_ms)

    def stream_flush_summary(self) -> dict:
        return _summary(self.stream_flush_ms)


def _summary(durations: list[float]) -> dict:
    if not durations:
        return {"count": 0}
    ordered = sorted(durations)
    return {
        "count": len(ordered),
        "mean_ms": round(sum(ordered) / len(ordered), 2),
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max_ms": round(ordered[-1], 2),
    }


class FeedPipeline:
    """The sink of the runfeed loop (see module doc). Call `put`/`set_status` on the loop thread."""

    def __init__(
        self,
        *,
        source_name: str,
        writer,  # persistence.writer.HistoryWriter or HistoryWriterProcess (write_records, flush, close)
        redis,  # redis.asyncio.Redis, or None (no streams, status or last snapshot)
        channel_layer=None,  # Channels layer, or None (no snapshots sent)
        snapshot_keys: Iterable[str] = (),
        names: dict[str, str] | None = None,
        options: dict[str, OptionInfo] | None = None,
        flush_ms: int = 500,
        stream_ms: int = STREAM_FLUSH_MS,
        snapshot_ms: int = 100,
        stream_maxlen: int = 500_000,
        key_prefix: str = "",
        full_snapshot_every_s: float = FULL_SNAPSHOT_EVERY_S,
        high_water: int = HIGH_WATER,
        resume_streams: bool = True,
    ) -> None:
        self.source_name = source_name
        self.writer = writer
        self.redis = redis
        self.layer = channel_layer
        self.flush_s = min(max(flush_ms, 10), 1000) / 1000.0  # never less often than every second
        self.stream_s = max(stream_ms, 5) / 1000.0
        self.snapshot_s = max(snapshot_ms, 10) / 1000.0
        self.stream_maxlen = stream_maxlen
        # A prefix on every Redis key and the group name lets tests (and a second feed) run beside
        # a live one without touching its data.
        self.key_prefix = key_prefix
        self.status_key = key_prefix + FEED_STATUS_KEY
        self.last_snapshot_key = key_prefix + LAST_SNAPSHOT_KEY
        self.group = key_prefix + MARKET_GROUP
        self.full_every_s = full_snapshot_every_s
        self.high_water = high_water
        names = names or {}
        self.quotes = {k: _Quote(name=names.get(k, k)) for k in snapshot_keys}
        # Options whose last price and OI feed the compact per-underlying summary in full snapshots.
        self.options = dict(options or {})
        self._option_state: dict[str, tuple[float, float]] = {}
        # The instruments whose ticks update that state; every other tick costs no Python step.
        self._watched = frozenset(self.quotes) | frozenset(self.options)
        # Strategy dispatch hooks in here: each is called after every stream batch (~100 ms) with
        # the stream ranges it wrote ("send each enabled strategy a task naming the stream range").
        self.on_flush: list[FlushHook] = []
        self.stats = PipelineStats()
        self.status: dict[str, object] = {
            "source": source_name,
            "connected": False,
            "session_state": PRE_OPEN,
            "alert": "",
            "decode_errors": 0,
            "reconnects": 0,
        }
        self.last_tick_ms = 0
        self._last_tick_wall = time.monotonic()
        # Each tick is packed once, on arrival (`feeds.ticks.pack_tick`'s bytes): each stream entry
        # is those bytes. The history store is sent the ticks as `persistence.records`.
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._pending = _Records()  # for the history store
        self._stream_pending = _Columns()  # for the Redis Streams (when there is a Redis)
        self._changed: set[str] = set()
        self._stream_keys: dict[str, bytes] = {}
        # Resuming after a restart: per instrument, the exchange time of the last tick its stream
        # already held when this feed first saw it (same session day only). A restarted source that
        # re-sends the session (the sim) would otherwise stream those ticks twice under new ids,
        # which strategy checkpoints cannot recognise. Off for a replay, a deliberate re-send.
        self.resume_streams = resume_streams
        self._resume_mark: dict[str, int] = {}
        self._resume_checked: set[str] = set()
        self._xadd_script = None
        self._stream_backlog = _Columns()
        self._logged_failure: dict[str, float] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-writer")
        self._store_lock = asyncio.Lock()
        self._stream_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._source_task: asyncio.Task | None = None
        self._rate_mark = (time.monotonic(), 0)
        self._last_full = 0.0
        self.ticks_per_s = 0.0

    # --- TickSink ------------------------------------------------------------------------------
    def put(self, ticks: Iterable[Tick]) -> None:
        # Hot path (every frame, on the loop thread): each tick is packed once and the buffers grow
        # by C-level maps and extends; only the few instruments the dashboard shows (or whose
        # options it summarises) cost a Python step each.
        if not isinstance(ticks, list):
            ticks = list(ticks)
        if not ticks:
            return
        ts = list(map(_ts_ms, ticks))
        if self.writer is not None or self.redis is not None:
            rows = list(map(tick_fields, ticks))
            if self.writer is not None:
                self._pending.add(*encode_rows(rows))
            if self.redis is not None:
                self._stream_pending.extend(
                    list(map(_instrument_key, ticks)), ts, list(map(self._pack, rows))
                )
        watched = self._watched
        if watched:
            self._note(t for t in ticks if t.instrument_key in watched)
        self._arrived(len(ticks), max(ts))

    def put_packed(
        self,
        keys: list[str],
        ts: list[int],
        payloads: list[bytes],
        records: tuple[bytes, bytes, bytes],
    ) -> None:
        """`put` for ticks a source already holds packed: parallel lists of instrument key,
        exchange time (ms) and `feeds.ticks.pack_tick` bytes, in arrival order, and the same ticks
        as `persistence.records` (heads, counts, levels). No Tick is built
        but for the instruments the dashboard watches (the Upstox decoder process sends these)."""
        if not payloads:
            return
        if self.writer is not None:
            self._pending.add(keys, *records)
        if self.redis is not None:
            self._stream_pending.extend(keys, ts, payloads)
        watched = self._watched
        if watched and not watched.isdisjoint(keys):
            self._note(unpack_tick(p) for k, p in zip(keys, payloads, strict=True) if k in watched)
        self._arrived(len(payloads), max(ts))

    def _note(self, ticks: Iterable[Tick]) -> None:
        """Update the dashboard's conflated state from the ticks of watched instruments."""
        quotes = self.quotes
        for t in ticks:
            key = t.instrument_key
            quote = quotes.get(key)
            if quote is not None:
                quote.update(t)
                self._changed.add(key)
            else:
                self._option_state[key] = (t.ltp, t.oi)

    def _arrived(self, count: int, newest_ms: int) -> None:
        self.stats.ticks_in += count
        if newest_ms > self.last_tick_ms:
            self.last_tick_ms = newest_ms
        self._last_tick_wall = time.monotonic()

    def set_status(self, **fields: object) -> None:
        self.status.update(fields)

    async def drain(self) -> None:
        """Backpressure for fast sources: wait while too many ticks are buffered."""
        while (
            len(self._pending) >= self.high_water or len(self._stream_pending) >= self.high_water
        ) and not self._stopping.is_set():
            await asyncio.sleep(0.005)

    # --- running -------------------------------------------------------------------------------
    async def run(self, source: TickSource) -> None:
        """Run `source` into this pipeline until it ends or `stop()` is called, then flush
        everything, publish a last snapshot and status, and close the writer."""
        loops = [
            asyncio.create_task(self._every(self.stream_s, self.flush_streams), name="streams"),
            asyncio.create_task(self._every(self.flush_s, self.flush_store), name="store"),
            asyncio.create_task(self._every(self.snapshot_s, self.publish_snapshot), name="snapshot"),
            asyncio.create_task(self._every(STATUS_EVERY_S, self.write_status), name="status"),
        ]
        self._source_task = asyncio.create_task(source.run(self), name=f"source-{source.name}")
        if self._stopping.is_set():  # stop() came before the source started
            self._source_task.cancel()
        try:
            await self._source_task
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise  # cancelled from outside, not by stop(): propagate after cleanup below
        finally:
            self._stopping.set()
            # The loops finish the step they are in (a flush in flight completes), then return.
            _, stuck = await asyncio.wait(loops, timeout=30)
            for task in stuck:
                task.cancel()
            await self.close()

    def stop(self) -> None:
        """Stop the source (SIGTERM/SIGINT); `run` then flushes and returns."""
        self._stopping.set()
        if self._source_task is not None and not self._source_task.done():
            self._source_task.cancel()

    async def close(self) -> None:
        """Flush everything (the store first: it must get every tick even if Redis is away), then a
        last snapshot and status, and close the writer."""
        for _ in range(3):
            try:
                while self._pending:
                    await self.flush_store()
            except Exception:
                log.exception("final store flush failed")
            try:
                if self._stream_pending or self._stream_backlog:
                    await self.flush_streams()
            except Exception:
                log.exception("final stream flush failed")
            if not (self._pending or self._stream_pending or self._stream_backlog):
                break
            await asyncio.sleep(0.5)
        self.status["connected"] = False
        await self.publish_snapshot(full=True)
        await self.write_status()
        if self.writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.writer.close)
        self._executor.shutdown(wait=True)

    async def _every(self, period: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` every `period` until stop. Never cancelled mid-step: a flush that has taken
        its batch must finish, or those ticks would be lost."""
        next_at = time.monotonic()
        while not self._stopping.is_set():
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return
            else:
                next_at = time.monotonic()  # fell behind: do not try to catch up in a burst
                await asyncio.sleep(0)
            failing = f"{getattr(step, '__name__', 'step')} failing"
            try:
                await step()
            except Exception:
                # A Redis blip must not kill the feed: raise the alert, retry next period, and log
                # (at most every 30 s per step, not every 100 ms).
                now = time.monotonic()
                if now - self._logged_failure.get(failing, -1e9) > 30:
                    self._logged_failure[failing] = now
                    log.exception("feed pipeline: %s", failing)
                self.status["alert"] = failing
            else:
                if self.status.get("alert") == failing:
                    self.status["alert"] = ""

    # --- flush: streams + history store --------------------------------------------------------
    def _stream_key(self, instrument_key: str) -> bytes:
        """The instrument's stream key, encoded once (Redis takes the bytes as they are)."""
        key = self._stream_keys.get(instrument_key)
        if key is None:
            key = self._stream_keys[instrument_key] = (
                self.key_prefix + tick_stream_key(instrument_key)
            ).encode()
        return key

    async def flush(self) -> None:
        """Everything buffered, now: the streams, then the history store."""
        await self.flush_streams()
        while self._pending:
            await self.flush_store()

    async def flush_streams(self) -> None:
        """XADD what arrived since the last call (every `stream_ms`: the live path strategies wait
        on), then tell the `on_flush` hooks which stream ranges were written."""
        async with self._stream_lock:
            cut_at = time.time()
            batch, self._stream_pending = self._stream_pending, _Columns()
            if self._stream_backlog:
                # Ticks a failed XADD left behind go first, so each stream stays in order.
                batch, self._stream_backlog = self._stream_backlog + batch, _Columns()
            if not batch or self.redis is None:
                return
            started = time.perf_counter()
            try:
                ranges = await self._xadd(batch)
            except Exception:
                # Redis away: keep the ticks (bounded), retry next time; the store is unaffected.
                self.stats.stream_errors += 1
                self._stream_backlog = batch.slice(-STREAM_BACKLOG_MAX)
                raise
            self.stats.stream_flush_ms.append((time.perf_counter() - started) * 1000.0)
            self.stats.stream_flushes += 1
            report = FlushReport(ranges=ranges, ticks=len(batch), last_tick_ms=batch.ts[-1], cut_at=cut_at)
            for hook in list(self.on_flush):
                result = hook(report)
                if inspect.isawaitable(result):
                    await result

    async def flush_store(self) -> None:
        """Hand the buffered ticks to the history writer on its thread and publish them (at least
        every `flush_ms`). A failed write puts the batch back: the writer drops what it already had."""
        async with self._store_lock:
            if self.writer is None:
                self._pending = _Records()
                return
            loop = asyncio.get_running_loop()
            batch = self._pending.take(self.high_water)
            if not batch:
                # Lets the writer seal finished candles on a quiet feed.
                await loop.run_in_executor(self._executor, self.writer.flush)
                return
            started = time.perf_counter()
            try:
                rows = await loop.run_in_executor(self._executor, self._write_history, batch)
            except Exception:
                self._pending.put_back(batch)
                raise
            self.stats.flush_ms.append((time.perf_counter() - started) * 1000.0)
            self.stats.flushes += 1
            self.stats.rows_written += rows

    def _write_history(self, batch: _Records) -> int:
        keys, heads, counts, levels = batch.joined()
        return self.writer.write_records(keys, heads, counts, levels, flush=True)

    async def _xadd(self, batch: _Columns) -> dict[str, tuple[str, str]]:
        """XADD every tick to its instrument's stream, in order, and return each stream's id range.

        One Lua call per chunk does the XADDs server-side (see XADD_LUA), its arguments built by
        C-level maps and joins: no Python step per tick here."""
        if self._xadd_script is None or self._xadd_script.registered_client is not self.redis:
            self._xadd_script = self.redis.register_script(XADD_LUA)
        if self.resume_streams:
            batch = await self._skip_already_streamed(batch)
        ranges: dict[str, tuple[str, str]] = {}
        for start in range(0, len(batch), XADD_CHUNK):
            instruments = batch.keys[start : start + XADD_CHUNK]
            payloads = batch.payloads[start : start + XADD_CHUNK]
            distinct = list(dict.fromkeys(instruments))
            position = {key: i for i, key in enumerate(distinct)}
            index = array("H", map(position.__getitem__, instruments))
            lengths = array("I", map(len, payloads))
            if sys.byteorder != "little":
                index.byteswap()
                lengths.byteswap()
            ids = await self._xadd_script(
                keys=list(map(self._stream_key, distinct)),
                args=[self.stream_maxlen, b"".join(payloads), index.tobytes(), lengths.tobytes()],
            )
            self.stats.ticks_streamed += len(instruments)
            for key, first, last in zip(distinct, ids[0::2], ids[1::2], strict=True):
                first = first.decode() if isinstance(first, bytes) else first
                last = last.decode() if isinstance(last, bytes) else last
                earlier = ranges.get(key)
                ranges[key] = (earlier[0], last) if earlier is not None else (first, last)
        return ranges

    async def _skip_already_streamed(self, batch: _Columns) -> _Columns:
        """Drop the ticks a previous run of this feed already streamed (see `_resume_mark`)."""
        new = set(batch.keys) - self._resume_checked
        if new:
            keys = sorted(new)
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.xrevrange(self._stream_key(key), count=1)
            for key, last in zip(keys, await pipe.execute(), strict=True):
                self._resume_checked.add(key)
                if last:
                    self._resume_mark[key] = unpack_tick(last[0][1][b"t"]).ts_ms
        if not self._resume_mark:
            return batch
        kept = _Columns()
        for key, ts, payload in zip(batch.keys, batch.ts, batch.payloads, strict=True):
            mark = self._resume_mark.get(key)
            if mark is not None:
                if ts <= mark and session_day_of(ts) == session_day_of(mark):
                    self.stats.ticks_already_streamed += 1
                    continue
                del self._resume_mark[key]  # ticks come in order: caught up
            kept.keys.append(key)
            kept.ts.append(ts)
            kept.payloads.append(payload)
        return kept

    # --- snapshots and status ------------------------------------------------------------------
    def feed_status(self) -> dict:
        alert = str(self.status.get("alert") or "")
        idle = time.monotonic() - self._last_tick_wall
        if not alert and self.status.get("session_state") == OPEN and idle > STALE_AFTER_S:
            alert = f"no ticks for {int(idle)} s"
        return {
            "source": self.source_name,
            "connected": bool(self.status.get("connected")),
            "session_state": str(self.status.get("session_state")),
            "ticks_per_s": round(self.ticks_per_s, 1),
            "last_tick_ms": self.last_tick_ms,
            "alert": alert,
        }

    def snapshot_message(self, full: bool) -> dict | None:
        keys = list(self.quotes) if full else [k for k in self.quotes if k in self._changed]
        if not keys and not full:
            return None
        self._changed.clear()
        return {
            "type": "market.snapshot",
            "ts_ms": int(time.time() * 1000),
            "full": full,
            "instruments": {k: self.quotes[k].as_dict() for k in keys if self.quotes[k].ts_ms},
            **({"options": self.options_summary()} if full and self._option_state else {}),
            "feed": self.feed_status(),
        }

    def options_summary(self) -> dict[str, dict]:
        """Per underlying, for its nearest expiry with ticks: the strike nearest the underlying's
        last price, that strike's CE/PE last prices, and the put/call OI ratio of the strikes seen."""
        by_underlying: dict[str, dict[str, list]] = {}
        for key, (ltp, oi) in self._option_state.items():
            info = self.options[key]
            by_underlying.setdefault(info.underlying_key, {}).setdefault(info.expiry, []).append(
                (info, ltp, oi)
            )
        summary: dict[str, dict] = {}
        for underlying, expiries in by_underlying.items():
            expiry = min(expiries)
            rows = expiries[expiry]
            spot = self.quotes[underlying].ltp if underlying in self.quotes else 0.0
            atm = min({i.strike for i, _, _ in rows}, key=lambda k: (abs(k - spot), k))
            ce_oi = sum(oi for i, _, oi in rows if i.option_type == "CE")
            pe_oi = sum(oi for i, _, oi in rows if i.option_type == "PE")
            at = {i.option_type: ltp for i, ltp, _ in rows if i.strike == atm}
            summary[underlying] = {
                "expiry": expiry,
                "atm": atm,
                "ce": at.get("CE"),
                "pe": at.get("PE"),
                "pcr_oi": round(pe_oi / ce_oi, 3) if ce_oi else None,
            }
        return summary

    async def publish_snapshot(self, full: bool | None = None) -> None:
        now = time.monotonic()
        if full is None:
            full = now - self._last_full >= self.full_every_s
        message = self.snapshot_message(full)
        if message is None:
            return
        if full:
            self._last_full = now
        if self.layer is not None:
            await self.layer.group_send(self.group, message)
            self.stats.snapshots_sent += 1
        if self.redis is not None:
            # The last full state, for a page that connects between two full snapshots.
            quotes = {k: q.as_dict() for k, q in self.quotes.items() if q.ts_ms}
            full_state = {**message, "full": True, "instruments": quotes}
            await self.redis.set(self.last_snapshot_key, json.dumps(full_state, separators=(",", ":")))

    async def write_status(self) -> None:
        now = time.monotonic()
        mark_t, mark_n = self._rate_mark
        if now > mark_t:
            self.ticks_per_s = (self.stats.ticks_in - mark_n) / (now - mark_t)
        self._rate_mark = (now, self.stats.ticks_in)
        if self.redis is None:
            return
        feed = self.feed_status()
        mapping = {
            **{k: str(v) for k, v in feed.items()},
            "connected": "1" if feed["connected"] else "0",
            "heartbeat_ms": str(int(time.time() * 1000)),
            "decode_errors": str(self.status.get("decode_errors", 0)),
            "reconnects": str(self.status.get("reconnects", 0)),
            "pid": str(os.getpid()),
        }
        await self.redis.hset(self.status_key, mapping=mapping)
