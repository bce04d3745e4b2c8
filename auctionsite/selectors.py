"""Reads for the site-wide pages and consumers: the watchlist as shown, the latest market snapshot,
and the session's price line sampled from the tick streams.

Only reads: the feed writes the snapshot, its status and the streams to Redis; nothing here
changes them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import msgpack
import redis.asyncio as aioredis
from django.conf import settings

from feeds.groups import FEED_STATUS_KEY, LAST_SNAPSHOT_KEY, tick_stream_key
from feeds.ticks import IST, unpack_tick

SNAPSHOT_TYPE = "market.snapshot"
HISTORY_TYPE = "market.history"
HISTORY_POINTS = 300  # per instrument: enough for a chart a few hundred pixels wide
HISTORY_MAX_INSTRUMENTS = 20


@dataclass(frozen=True, slots=True)
class WatchedInstrument:
    key: str  # the Upstox instrument key, "NSE_INDEX|Nifty 50"
    name: str  # what a trader calls it, "Nifty 50"


def instrument_display_name(key: str) -> str:
    """`NSE_INDEX|Nifty 50` → `Nifty 50`; a key without a segment is shown as is."""
    return key.split("|", 1)[1] if "|" in key else key


def watchlist() -> list[WatchedInstrument]:
    return [WatchedInstrument(key, instrument_display_name(key)) for key in settings.WATCHLIST]


def _parse_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _parse_number(value: str) -> float | int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else number


def feed_status_from_hash(fields: dict[str, str]) -> dict:
    """The feed status hash (all strings) as the snapshot's `feed` object."""
    feed: dict = {
        "source": fields.get("source", ""),
        "connected": _parse_bool(fields.get("connected", "")),
        "session_state": fields.get("session_state") or fields.get("state", ""),
        "alert": fields.get("alert", ""),
    }
    for name in ("ticks_per_s", "last_tick_ms", "heartbeat_ms"):
        if name in fields:
            feed[name] = _parse_number(fields[name])
    return feed


def decode_snapshot(raw: bytes) -> dict | None:
    """The stored snapshot: JSON as agreed; msgpack also accepted. None when unreadable."""
    try:
        if raw[:1] == b"{":
            value = json.loads(raw)
        else:
            value = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    return value if isinstance(value, dict) else None


def market_redis(redis_url: str | None = None) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        redis_url or settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2
    )


async def latest_market_snapshot(
    client: aioredis.Redis,
    *,
    snapshot_key: str = LAST_SNAPSHOT_KEY,
    status_key: str = FEED_STATUS_KEY,
) -> dict | None:
    """The last full snapshot the feed published, with the feed status refreshed from its hash
    (which the feed rewrites every second, so it is fresher than the snapshot). None when the feed
    has never written either."""
    raw_snapshot, raw_status = await client.get(snapshot_key), await client.hgetall(status_key)
    snapshot = decode_snapshot(raw_snapshot) if raw_snapshot else None
    if snapshot is None and not raw_status:
        return None
    message = {"type": SNAPSHOT_TYPE, "ts_ms": int(time.time() * 1000), "instruments": {}, "feed": {}}
    if snapshot:
        message.update({k: v for k, v in snapshot.items() if k in ("ts_ms", "instruments", "feed")})
        message["type"] = SNAPSHOT_TYPE
    if raw_status:
        status = {k.decode(): v.decode() for k, v in raw_status.items()}
        message["feed"] = {**(message.get("feed") or {}), **feed_status_from_hash(status)}
    return message


def _stream_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


async def price_history(
    client: aioredis.Redis, instrument_keys: list[str], *, points: int = HISTORY_POINTS
) -> dict[str, list[list[float]]]:
    """Each instrument's price line for its last session, as `[[ts_ms, ltp], ...]` in time order,
    sampled to about `points` ticks from its Redis Stream.

    Sampling asks Redis for the last entry at or before evenly spaced stream ids (the stream id is
    the time the feed added the tick), so the cost is `points` index lookups in three round trips,
    whatever the number of ticks. Only ticks of the newest tick's exchange day are kept.
    """
    keys = instrument_keys[:HISTORY_MAX_INSTRUMENTS]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.xrange(tick_stream_key(key), "-", "+", count=1)
        pipe.xrevrange(tick_stream_key(key), "+", "-", count=1)
    ends = await pipe.execute()

    # The last tick's exchange day starts at midnight IST; moved onto the stream's clock (the time
    # the feed added each tick) by the last tick's offset between the two, the first entry from
    # there is the day's first tick. Sampling then spans that day's ticks only.
    spans: dict[str, int] = {}
    pipe = client.pipeline(transaction=False)
    for i, key in enumerate(keys):
        first, last = ends[2 * i], ends[2 * i + 1]
        if not first or not last or b"t" not in last[0][1]:
            continue
        try:
            last_tick = unpack_tick(last[0][1][b"t"])
        except (ValueError, TypeError, msgpack.UnpackException):
            continue
        end = _stream_ms(last[0][0])
        day = _ist_day(last_tick.ts_ms)
        midnight_ms = int(datetime(day.year, day.month, day.day, tzinfo=IST).timestamp() * 1000)
        from_ms = max(_stream_ms(first[0][0]), min(end, midnight_ms + (end - last_tick.ts_ms)))
        pipe.xrange(tick_stream_key(key), str(from_ms), "+", count=1)
        spans[key] = end
    day_firsts = await pipe.execute() if spans else []

    sampled: list[str] = []
    pipe = client.pipeline(transaction=False)
    for (key, end), day_first in zip(spans.items(), day_firsts, strict=True):
        if not day_first:
            continue
        start = _stream_ms(day_first[0][0])
        pipe.xrange(tick_stream_key(key), day_first[0][0], "+", count=1)
        for j in range(1, points):
            pipe.xrevrange(tick_stream_key(key), str(start + (end - start) * j // (points - 1)), "-", count=1)
        sampled.append(key)
    replies = await pipe.execute() if sampled else []

    history: dict[str, list[list[float]]] = {}
    for n, key in enumerate(sampled):
        seen: set[bytes] = set()
        line: list[tuple[int, float]] = []
        for reply in replies[n * points : (n + 1) * points]:
            for entry_id, fields in reply:
                if entry_id in seen or b"t" not in fields:
                    continue
                seen.add(entry_id)
                try:
                    tick = unpack_tick(fields[b"t"])
                except (ValueError, TypeError, msgpack.UnpackException):
                    continue
                line.append((tick.ts_ms, tick.ltp))
        if not line:
            continue
        line.sort()
        day = _ist_day(line[-1][0])
        history[key] = [[ts, ltp] for ts, ltp in line if _ist_day(ts) == day]
    return history


def _ist_day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, tz=IST).date()


async def latest_auction_states(client: aioredis.Redis, instrument_keys: list[str]) -> list[dict]:
    """The last `auction.state` message the feed kept for each instrument (those it has)."""
    from auctionsite.auction_feed import auction_state_key

    if not instrument_keys:
        return []
    raws = await client.mget([auction_state_key(k) for k in instrument_keys])
    out = []
    for raw in raws:
        if not raw:
            continue
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if isinstance(message, dict):
            out.append(message)
    return out


# --- strategies and history for the dashboard ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StrategyStatus:
    """One strategy's row in the dashboard's strategies panel (its figures come live)."""

    slug: str
    name: str
    enabled: bool
    mode: str
    instruments: list[str]
    trading_state: str
    trading_reason: str
    heartbeat_ms: int | None
    open_positions: list[str]  # today's non-flat positions, "KEY +65 @ 120.50"
    realised: Decimal  # today's realised PnL net of charges, rupees


def strategy_statuses() -> list[StrategyStatus]:
    """Every configured strategy with its on/off switch, paper/live mode, trading state and the
    last heartbeat of its worker (None when it has none)."""
    import redis as sync_redis

    from feeds.groups import WORKER_HEARTBEATS_KEY
    from strategies.models import StrategyConfig

    try:
        from strategies import trading
    except ImportError:  # trading states not installed: the panel shows the configuration only
        trading = None

    beats: dict[str, int] = {}
    try:
        client = sync_redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            beats = {k.decode(): int(v) for k, v in client.hgetall(WORKER_HEARTBEATS_KEY).items()}
        finally:
            client.close()
    except Exception:  # the panel still shows the configuration without Redis
        beats = {}
    from strategies.models import Position

    today = datetime.now(IST).date()
    positions: dict[int, list[Position]] = {}
    for p in Position.objects.filter(trading_day=today).order_by("instrument_key"):
        positions.setdefault(p.strategy_id, []).append(p)
    out = []
    for config in StrategyConfig.objects.order_by("slug"):
        mine = positions.get(config.pk, [])
        state_name, reason = "", ""
        if trading is not None:
            state = trading.effective_state(config.slug)
            state_name, reason = str(state.state), state.reason
        # Its worker is `worker-<slug>@<host>` (`manage.py up`).
        beat = max(
            (ms for name, ms in beats.items() if name.split("@", 1)[0] == f"worker-{config.slug}"),
            default=None,
        )
        out.append(
            StrategyStatus(
                slug=config.slug,
                name=config.strategy_class,
                enabled=config.enabled,
                mode=config.mode,
                instruments=list(config.instruments or []),
                trading_state=state_name,
                trading_reason=reason,
                heartbeat_ms=beat,
                open_positions=[
                    f"{p.instrument_key} {p.net_quantity:+d} @ {p.average_price}"
                    for p in mine
                    if p.net_quantity
                ],
                realised=sum((p.realised_pnl - p.charges for p in mine), Decimal("0")),
            )
        )
    return out


def todays_signals(limit: int = 200) -> list[dict]:
    """Today's stored signals (oldest first) in the `strategy.update` signal shape, so the chart's
    markers survive a page reload."""
    from datetime import timedelta

    from strategies.models import Signal

    now = datetime.now(IST)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rows = (
        Signal.objects.filter(ts__gte=start, ts__lt=start + timedelta(days=1))
        .select_related("strategy")
        .order_by("-ts")[:limit]
    )
    return [
        {
            "id": s.pk,
            "slug": s.strategy.slug,
            "ts": s.ts.astimezone(IST).isoformat(),
            "instrument_key": s.instrument_key,
            "side": s.side,
            "kind": s.kind,
            "price": None if s.price is None else f"{s.price:.2f}",
            "reason": s.reason,
        }
        for s in reversed(rows)
    ]


def history_days(instrument_key: str) -> list[date]:
    """Session days the history store holds for an instrument, newest first (empty without a store)."""
    from persistence.readers import session_days

    try:
        return sorted(session_days(instrument_key, settings.HISTORY_DIR), reverse=True)
    except Exception:
        return []


def session_profile(instrument_key: str, day: date) -> dict | None:
    """A past session's final profile from the history store, as an `auction.state` message
    (None when the store has no candles for that day)."""
    from datetime import timedelta

    from auctionsite.auction_feed import PRIOR_DAYS, auction_message, stored_sessions
    from persistence.readers import read_candles_1m
    from strategies.engine import params_for

    states = stored_sessions(instrument_key, day - timedelta(days=PRIOR_DAYS), day, settings.HISTORY_DIR)
    for state in states:
        if state.session_date == day:
            # The day's own candles, so the candle chart shows that session with its levels.
            table = read_candles_1m(instrument_key, day, day, settings.HISTORY_DIR)
            ts = table["ts"].cast("int64").to_pylist()
            columns = [table[name].to_pylist() for name in ("open", "high", "low", "close")]
            candles = [[t, *ohlc] for t, *ohlc in zip(ts, *columns, strict=True)]
            return auction_message(
                instrument_key,
                instrument_display_name(instrument_key),
                state,
                params_for(instrument_key),
                candles=candles,
            )
    return None


def composite(instrument_key: str, last_day: date, sessions: int) -> dict | None:
    """The TPO composite of the last `sessions` stored sessions up to `last_day`: counts by row,
    POC and value area (None without stored sessions)."""
    from datetime import timedelta

    from auctionsite.auction_feed import stored_sessions
    from strategies.engine import composite_of
    from strategies.engine.serialize import price_key

    span = max(sessions * 2 + 10, 14)  # calendar days covering that many sessions over weekends
    states = stored_sessions(instrument_key, last_day - timedelta(days=span), last_day, settings.HISTORY_DIR)
    states = [s for s in states if s.session_date is not None][-sessions:]
    if not states:
        return None
    comp = composite_of(states, "tpo")
    return {
        "type": "auction.composite",
        "instrument_key": instrument_key,
        "sessions": [s.session_date.isoformat() for s in states],
        "row_size": states[0].row_size,
        "tpo_counts": {price_key(row): n for row, n in comp.counts.items()},
        "poc": comp.poc,
        "vah": comp.vah,
        "val": comp.val,
    }
