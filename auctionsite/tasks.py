"""Site-wide housekeeping run by Celery beat on the `maintenance` queue.

- `trim_tick_streams`: after the session, drop tick stream entries from earlier days (the history
  store holds them; the streams only need to replay the current session).
- `prune_worker_heartbeats`: forget heartbeats of processes that died without a clean exit, so
  `/healthz` stops reporting workers that are gone for good.

Tasks stay thin and never touch the history store (the feed is its only writer).
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import redis
from celery import shared_task
from django.conf import settings

from feeds.groups import tick_stream_key

IST = ZoneInfo("Asia/Kolkata")


def session_day_start_ms(now: datetime | None = None) -> int:
    """Midnight IST of the exchange day containing `now`, in ms since the epoch."""
    now = (now or datetime.now(IST)).astimezone(IST)
    return int(datetime.combine(now.date(), time(0, 0), tzinfo=IST).timestamp() * 1000)


def trim_streams_before(client: redis.Redis, *, before_ms: int, pattern: str | None = None) -> dict[str, int]:
    """XTRIM every tick stream to entries at or after `before_ms`; delete streams left empty.

    Returns {stream key: entries removed} for the streams that changed.
    """
    removed: dict[str, int] = {}
    for raw_key in client.scan_iter(match=pattern or tick_stream_key("*"), count=500, _type="stream"):
        key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        count = client.xtrim(key, minid=f"{before_ms}-0", approximate=False)
        if client.xlen(key) == 0:
            client.delete(key)
        if count:
            removed[key] = count
    return removed


@shared_task(name="auctionsite.tasks.trim_tick_streams")
def trim_tick_streams() -> dict[str, int]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return trim_streams_before(client, before_ms=session_day_start_ms())
    finally:
        client.close()


@shared_task(name="auctionsite.tasks.prune_worker_heartbeats")
def prune_worker_heartbeats(max_age_s: int = 3600) -> list[str]:
    from auctionsite.heartbeats import prune_stale

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return prune_stale(client, max_age_ms=max_age_s * 1000)
    finally:
        client.close()
