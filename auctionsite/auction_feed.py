"""The live auction-state publisher: one `AuctionEngine` per watchlist index inside the feed process.

Plugged into runfeed through `settings.FEED_FLUSH_HOOKS` (`flush_hook`): after every stream batch
the pipeline names the stream id ranges it just wrote; the hook only notes the ranges of the
watched instruments (O(instruments), nothing per tick on the feed's loop). A background task on
the same loop then, every `publish_s` (~0.5 s):

1. reads those ranges back with one pipelined XRANGE per instrument (the claim-check pattern the
   strategy dispatch uses; the first read of an instrument starts where the stream's part of the
   current IST day begins, so a feed restarted mid-session rebuilds the day so far);
2. feeds each index's ticks to its engine (`on_tick`), its 1-minute candles, and the near-month
   future's traded quantities to a futures volume profile (the index itself has no volume);
3. sends one conflated `auction.state` message per instrument to the Channels group
   `AUCTION_GROUP` and keeps the last one in Redis (`auction_state_key`) for pages that connect
   later.

Each engine is seeded, when it meets its first session, with the prior sessions from the history
store (prior value area/POC/high/low, naked POCs, average IB and daily ranges).

Never send a message per tick, never block the loop on the history store (read in a thread), never
decide anything about trading: this module only describes the auction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import msgpack

from feeds.groups import tick_stream_key
from feeds.ticks import Tick, unpack_tick
from strategies.engine import (
    AuctionEngine,
    AuctionState,
    ProfileParams,
    SessionRolled,
    compute_sessions,
    params_for,
    session_date_of,
    shift_to_spot,
    state_to_dict,
)
from strategies.engine.params import DAY_MS, IST_OFFSET_MS, MINUTE_MS

log = logging.getLogger(__name__)

# Channels group of the conflated auction states, and the message type (handled by
# `MarketConsumer.auction_state`).
AUCTION_GROUP = "auction"
AUCTION_STATE_TYPE = "auction.state"
PUBLISH_EVERY_S = 0.5
# Live messages carry the whole day's candles only this often (and pages that connect get the
# whole day from Redis); in between, only the last CANDLES_TAIL candles (`candles_partial`).
FULL_CANDLES_EVERY_S = 5.0
CANDLES_TAIL = 2
PRIOR_DAYS = 40  # calendar days of stored candles read to seed an engine (≥ 20 sessions of averages)
AVERAGE_SESSIONS = 20
XRANGE_COUNT = 20_000  # per read: bounds the loop's time per step; a backlog takes several steps


def auction_state_key(instrument_key: str) -> str:
    """The Redis string holding an instrument's last `auction.state` message (JSON)."""
    return f"auction:last:{instrument_key}"


# --- history ------------------------------------------------------------------------------------


def stored_sessions(
    instrument_key: str, first_day: date, last_day: date, root: Path | str | None = None
) -> list[AuctionState]:
    """Every stored session of an instrument between two days, from its 1-minute candles in the
    history store, each with the one before as prior (final states, as the engine ends them)."""
    from persistence.readers import read_candles_1m
    from strategies.engine.loading import candles_from_arrow

    table = read_candles_1m(instrument_key, first_day, last_day, root)
    if table.num_rows == 0:
        return []
    return compute_sessions(
        candles_from_arrow(table), params_for(instrument_key), average_days=AVERAGE_SESSIONS
    )


def seeded_engine(
    instrument_key: str, day: date, root: Path | str | None = None, params: ProfileParams | None = None
) -> AuctionEngine:
    """A fresh engine for `day`, carrying the stored sessions before it: prior references, naked
    POCs and the averages the opening type and the day type need. No store: an unseeded engine."""
    params = params or params_for(instrument_key)
    try:
        states = stored_sessions(
            instrument_key, day - timedelta(days=PRIOR_DAYS), day - timedelta(days=1), root
        )
    except Exception as exc:  # a fresh install has no store yet; the engine still works without a prior
        log.info("auction: no stored sessions for %s before %s (%s)", instrument_key, day, type(exc).__name__)
        states = []
    states = [s for s in states if s.session_date is not None and s.session_date < day]
    if not states:
        return AuctionEngine(params)
    last = states[-1]
    naked = list(last.naked_pocs) + ([last.poc] if last.poc is not None else [])
    ibrs = [s.ibr for s in states[-AVERAGE_SESSIONS:] if s.ibr is not None and s.ib_complete]
    ranges = [s.high - s.low for s in states[-AVERAGE_SESSIONS:] if s.high is not None and s.low is not None]
    return AuctionEngine(
        params,
        last.to_prior(),
        naked,
        sum(ibrs) / len(ibrs) if ibrs else None,
        sum(ranges) / len(ranges) if ranges else None,
    )


# --- one instrument -------------------------------------------------------------------------------


@dataclass(slots=True)
class InstrumentAuction:
    """One watched index: its engine, the day's 1-minute candles and its future's volume profile."""

    instrument_key: str
    name: str
    params: ProfileParams
    future_key: str | None = None
    engine: AuctionEngine | None = None
    day: date | None = None
    candles: list[list[float]] = field(default_factory=list)  # [start_ms, open, high, low, close]
    future_volume: dict[int, int] = field(default_factory=dict)  # future's row (integer) -> quantity
    future_ltp: float = 0.0
    future_day: date | None = None
    last_ltp: float = 0.0
    changed: bool = False

    def start_day(self, engine: AuctionEngine, day: date) -> None:
        self.engine, self.day = engine, day
        self.candles = []
        self.changed = True

    def on_index_tick(self, ts_ms: int, ltp: float) -> None:
        """The hot path: one engine call and a candle update (no allocation unless a minute starts)."""
        try:
            self.engine.on_tick(ts_ms, ltp)
        except SessionRolled:
            return  # the caller starts the next day before feeding another day's ticks
        self.last_ltp = ltp
        minute = ts_ms - ts_ms % MINUTE_MS
        candles = self.candles
        if candles and candles[-1][0] == minute:
            c = candles[-1]
            if ltp > c[2]:
                c[2] = ltp
            elif ltp < c[3]:
                c[3] = ltp
            c[4] = ltp
        elif not candles or minute > candles[-1][0]:
            candles.append([minute, ltp, ltp, ltp, ltp])
        self.changed = True

    def on_future_tick(self, ts_ms: int, ltp: float, qty: int) -> None:
        day = session_date_of(ts_ms)
        if day != self.future_day:
            if self.future_day is not None and day < self.future_day:
                return
            self.future_day, self.future_volume = day, {}
        self.future_ltp = ltp
        if qty > 0:
            row = round(ltp * self.params.ticks_per_unit) // self.params.ticks_per_row
            self.future_volume[row] = self.future_volume.get(row, 0) + qty
            self.changed = True

    def volume_profile(self, state: AuctionState) -> tuple[str, dict[float, int]]:
        """The volume beside the TPO chart: the index's own when it has any, else its future's,
        moved onto the index's rows by the current basis (future − index)."""
        if any(state.volume_by_row.values()):
            return "index", dict(state.volume_by_row)
        if self.future_day != self.day or not self.future_volume or not self.last_ltp:
            return "none", {}
        row_size = self.params.row_size
        by_label = {round(row * row_size, 9): q for row, q in self.future_volume.items()}
        return "futures", shift_to_spot(by_label, self.future_ltp - self.last_ltp, self.params)

    def message(self, now_ms: int | None = None) -> dict | None:
        if self.engine is None:
            return None
        state = self.engine.state()
        if state.session_date is None:
            return None
        source, volume = self.volume_profile(state)
        return auction_message(
            self.instrument_key,
            self.name,
            state,
            self.params,
            candles=self.candles,
            volume_source=source,
            volume_by_row=volume,
            future_key=self.future_key,
            now_ms=now_ms,
        )


def auction_message(
    instrument_key: str,
    name: str,
    state: AuctionState,
    params: ProfileParams,
    *,
    candles: list[list[float]] = (),
    candles_partial: bool = False,
    volume_source: str = "index",
    volume_by_row: dict[float, int] | None = None,
    future_key: str | None = None,
    now_ms: int | None = None,
) -> dict:
    """The `auction.state` message (also what the history view returns for a past session):
    the engine's state (`state_to_dict`), the grid it lives on, candles and the volume profile."""
    from strategies.engine.serialize import price_key

    body = state_to_dict(state)
    if volume_by_row is not None:
        body["volume_by_row"] = {price_key(row): q for row, q in sorted(volume_by_row.items()) if q}
    return {
        "type": AUCTION_STATE_TYPE,
        "instrument_key": instrument_key,
        "name": name,
        "ts_ms": now_ms if now_ms is not None else int(time.time() * 1000),
        "tick_size": params.tick_size,
        "period_minutes": params.period_minutes,
        "volume_source": volume_source,
        "future_key": future_key,
        "state": body,
        "candles": [list(c) for c in candles],
        "candles_partial": candles_partial,
    }


def _wall_day_start(stream_id: str) -> str:
    """The first stream id of the IST calendar day (by the time the feed added it) holding
    `stream_id`: a publisher that starts mid-session rebuilds today from there, not from whatever
    older days the stream still holds."""
    ms = int(stream_id.split("-", 1)[0])
    return str(ms - (ms + IST_OFFSET_MS) % DAY_MS)


# --- the publisher --------------------------------------------------------------------------------


class AuctionPublisher:
    """Engines for the watched indices, fed from the tick streams the pipeline writes."""

    def __init__(
        self,
        *,
        redis,  # redis.asyncio.Redis
        channel_layer=None,
        instruments: dict[str, str],  # index key -> display name
        futures: dict[str, str] | None = None,  # index key -> its near-month future's key
        key_prefix: str = "",
        history_root: Path | str | None = None,
        publish_s: float = PUBLISH_EVERY_S,
        autostart: bool = True,  # start the publishing task on the first flush (off: call step())
    ) -> None:
        self.autostart = autostart
        self.redis = redis
        self.layer = channel_layer
        self.key_prefix = key_prefix
        self.group = key_prefix + AUCTION_GROUP
        self.history_root = history_root
        self.publish_s = publish_s
        self.auctions = {k: InstrumentAuction(k, name, params_for(k)) for k, name in instruments.items()}
        self.by_future: dict[str, InstrumentAuction] = {}
        for index_key, future_key in (futures or {}).items():
            if index_key in self.auctions and future_key:
                self.auctions[index_key].future_key = future_key
                self.by_future[future_key] = self.auctions[index_key]
        self._read_from: dict[str, str] = {}  # instrument -> last stream id read ("" = never)
        self._upto: dict[str, str] = {}  # instrument -> last stream id the pipeline reported
        self.messages_sent = 0
        self.ticks_read = 0
        self._task: asyncio.Task | None = None
        self._closing = False
        self._last_full = 0.0

    @property
    def watched(self) -> set[str]:
        return set(self.auctions) | set(self.by_future)

    def _stream(self, instrument_key: str) -> str:
        return self.key_prefix + tick_stream_key(instrument_key)

    # The pipeline's on_flush hook: note the ranges, nothing else.
    def on_flush(self, report) -> None:
        for key, (_, last) in report.ranges.items():
            if key in self.auctions or key in self.by_future:
                self._upto[key] = last
        if self._task is None and self.autostart and not self._closing:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="auction-publisher")

    async def run(self) -> None:
        """Read, feed and publish every `publish_s` until closed or cancelled (the feed ends)."""
        while not self._closing:
            started = time.monotonic()
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("auction publisher step failed")
            await asyncio.sleep(max(0.05, self.publish_s - (time.monotonic() - started)))

    async def step(self) -> int:
        """One read-feed-publish round; returns the number of messages sent."""
        await self.read_streams()
        return await self.publish()

    async def read_streams(self) -> int:
        """Read every watched stream from where it was last read up to the reported end."""
        keys = [k for k in self.watched if k in self._upto and self._read_from.get(k) != self._upto[k]]
        if not keys:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            start = self._read_from.get(key)
            pipe.xrange(
                self._stream(key),
                f"({start}" if start else _wall_day_start(self._upto[key]),
                self._upto[key],
                count=XRANGE_COUNT,
            )
        replies = await pipe.execute()
        n = 0
        for key, entries in zip(keys, replies, strict=True):
            if not entries:
                self._read_from[key] = self._upto[key]
                continue
            ticks = []
            for _, fields in entries:
                raw = fields.get(b"t")
                if raw is None:
                    continue
                try:
                    ticks.append(unpack_tick(raw))
                except (ValueError, TypeError, msgpack.UnpackException):
                    continue
            last_id = entries[-1][0]
            self._read_from[key] = last_id.decode() if isinstance(last_id, bytes) else last_id
            n += len(ticks)
            if key in self.auctions:
                await self.feed_index(self.auctions[key], ticks)
            else:
                auction = self.by_future[key]
                for t in ticks:
                    auction.on_future_tick(t.ts_ms, t.ltp, t.ltq)
        self.ticks_read += n
        return n

    async def feed_index(self, auction: InstrumentAuction, ticks: list[Tick]) -> None:
        on_tick = auction.on_index_tick
        for t in ticks:
            day = session_date_of(t.ts_ms)
            if day != auction.day:
                if auction.day is not None and day < auction.day:
                    continue  # an older session's tick met while rebuilding the day
                engine = await asyncio.to_thread(
                    seeded_engine, auction.instrument_key, day, self.history_root
                )
                auction.start_day(engine, day)
            on_tick(t.ts_ms, t.ltp)

    async def publish(self) -> int:
        """One conflated message per changed instrument: to the group (the whole day's candles
        every FULL_CANDLES_EVERY_S, else the last few) and, always whole, to Redis."""
        sent = 0
        now_ms = int(time.time() * 1000)
        now = time.monotonic()
        full = now - self._last_full >= FULL_CANDLES_EVERY_S
        if full:
            self._last_full = now
        for auction in self.auctions.values():
            if not auction.changed:
                continue
            message = auction.message(now_ms)
            auction.changed = False
            if message is None:
                continue
            if self.layer is not None:
                live = message
                if not full and len(message["candles"]) > CANDLES_TAIL:
                    live = {**message, "candles": message["candles"][-CANDLES_TAIL:], "candles_partial": True}
                await self.layer.group_send(self.group, live)
            if self.redis is not None:
                await self.redis.set(
                    self.key_prefix + auction_state_key(auction.instrument_key),
                    json.dumps(message, separators=(",", ":")),
                )
            sent += 1
        self.messages_sent += sent
        return sent

    async def close(self) -> None:
        """Stop the publishing task. A cancellation that lands inside a Redis or Channels call can
        be swallowed by the library (seen: the feed then hung at exit waiting for this task), so
        the loop also checks a flag, and the task is cancelled again until it has ended."""
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        deadline = time.monotonic() + 10.0
        while not task.done() and time.monotonic() < deadline:
            task.cancel()
            await asyncio.wait({task}, timeout=0.2)
        if not task.done():
            log.warning("auction publisher did not stop within 10 s; leaving it")
        elif not task.cancelled() and task.exception() is not None:
            log.warning("auction publisher ended with %r", task.exception())


def flush_hook(pipeline):
    """`FEED_FLUSH_HOOKS` factory: an AuctionPublisher over the pipeline's watched indices (those
    of the watchlist it snapshots) and their futures; its `on_flush` notes the stream ranges."""
    from django.conf import settings

    indices = [k for k in settings.WATCHLIST if k in pipeline.quotes]
    if not indices:
        return None
    names = {k: pipeline.quotes[k].name for k in indices}
    futures = {}
    for key in pipeline.quotes:
        if key in indices:
            continue
        underlying = _future_underlying(pipeline.quotes[key].name, indices, names)
        if underlying and underlying not in futures:
            futures[underlying] = key
    publisher = AuctionPublisher(
        redis=pipeline.redis,
        channel_layer=pipeline.layer,
        instruments=names,
        futures=futures,
        key_prefix=pipeline.key_prefix,
        history_root=getattr(settings, "HISTORY_DIR", None),
    )
    return publisher.on_flush


# A future's underlying symbol -> its index's name, compacted ("Nifty 50" -> "NIFTY50").
_UNDERLYING_INDEX = {"NIFTY": "NIFTY50", "BANKNIFTY": "NIFTYBANK", "FINNIFTY": "NIFTYFINSERVICE"}


def _future_underlying(name: str, indices: list[str], names: dict[str, str]) -> str | None:
    """Which watched index a snapshot instrument is the future of, from its trading symbol
    ("NIFTY FUT 29 DEC 26" -> Nifty 50, "BANKNIFTY25DECFUT" -> Nifty Bank)."""
    symbol = name.upper()
    if "FUT" not in symbol:
        return None
    head = re.match(r"[A-Z]+", symbol.replace(" ", ""))
    underlying = head.group(0).removesuffix("FUT") if head else ""
    underlying = re.sub(r"\d.*$", "", underlying)
    wanted = _UNDERLYING_INDEX.get(underlying)
    for key in indices:
        if re.sub(r"\s", "", names[key]).upper() == wanted:
            return key
    return None
