"""Reads for the site-wide pages and consumers: the watchlist as shown, the latest market snapshot.

Only reads: the feed writes the snapshot and its status to Redis; nothing here changes them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import msgpack
import redis.asyncio as aioredis
from django.conf import settings

from feeds.groups import FEED_STATUS_KEY, LAST_SNAPSHOT_KEY

SNAPSHOT_TYPE = "market.snapshot"


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


async def latest_market_snapshot(
    redis_url: str | None = None,
    *,
    snapshot_key: str = LAST_SNAPSHOT_KEY,
    status_key: str = FEED_STATUS_KEY,
) -> dict | None:
    """The last full snapshot the feed published, with the feed status refreshed from its hash
    (which the feed rewrites every second, so it is fresher than the snapshot). None when the feed
    has never written either."""
    client = aioredis.Redis.from_url(
        redis_url or settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2
    )
    try:
        raw_snapshot, raw_status = await client.get(snapshot_key), await client.hgetall(status_key)
    finally:
        await client.aclose()
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
