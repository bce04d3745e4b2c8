"""Dashboard costs: the price line a page gets on connect, and snapshot fan-out to open pages.

Prints one JSON object. On the real Redis (REDIS_URL's server, database TEST_REDIS_DB or 9), with
unique stream keys and a unique channel prefix (nothing of a running system is touched):
* `history_ms_p50/max`: `selectors.price_history` for `instruments` instruments whose streams
  hold `stream_ticks` ticks each (what MarketConsumer does on every connect);
* `fanout_ms_p50/p95/max`: one `market.snapshot` group send until every one of `pages` open
  MarketConsumer instances has sent it on to its page (through the real pub/sub layer).
Usage: python bench/bench_dashboard.py [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auctionsite.settings")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from django.conf import settings  # noqa: E402

from auctionsite import selectors  # noqa: E402
from auctionsite.consumers import MarketConsumer  # noqa: E402
from feeds.groups import MARKET_GROUP, tick_stream_key  # noqa: E402
from feeds.ticks import Tick, pack_tick  # noqa: E402


class _Trader:
    is_authenticated = True


def bench_url() -> str:
    base = settings.REDIS_URL.rsplit("/", 1)[0]
    return f"{base}/{int(os.environ.get('TEST_REDIS_DB', '9'))}"


def fill_streams(client: redis.Redis, keys: list[str], ticks: int) -> None:
    start_ms = int(time.time() * 1000) - ticks * 100
    for key in keys:
        for offset in range(0, ticks, 10_000):
            pipe = client.pipeline(transaction=False)
            for i in range(offset, min(ticks, offset + 10_000)):
                ts = start_ms + i * 100
                pipe.xadd(
                    tick_stream_key(key),
                    {"t": pack_tick(Tick(key, ts, 22_000 + i % 400 * 0.05))},
                    id=f"{ts}-0",
                )
            pipe.execute()


async def time_history(url: str, keys: list[str], runs: int) -> list[float]:
    client = selectors.market_redis(url)
    times = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            history = await selectors.price_history(client, keys)
            times.append((time.perf_counter() - t0) * 1000)
            assert len(history) == len(keys)
    finally:
        await client.aclose()
    return times


async def time_fanout(pages: int, sends: int) -> list[float]:
    communicators = []
    for _ in range(pages):
        ws = WebsocketCommunicator(MarketConsumer.as_asgi(), "/ws/market/")
        ws.scope["user"] = _Trader()
        connected, _ = await ws.connect()
        assert connected
        communicators.append(ws)
    layer = get_channel_layer()
    await asyncio.sleep(0.2)  # subscriptions settle
    times = []
    try:
        for n in range(sends):
            message = {"type": "market.snapshot", "ts_ms": n, "instruments": {"X": {"ltp": n}}, "feed": {}}
            t0 = time.perf_counter()
            await layer.group_send(MARKET_GROUP, message)
            for ws in communicators:
                while (await ws.receive_json_from(timeout=10))["ts_ms"] != n:
                    pass
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        for ws in communicators:
            await ws.disconnect()
        await layer.flush()
    return times


def main(quick: bool) -> dict:
    url = bench_url()
    settings.REDIS_URL = url
    settings.WATCHLIST = []
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"bench-{uuid.uuid4().hex[:8]}"
    stream_ticks = 20_000 if quick else 200_000
    keys = [f"BENCH|{uuid.uuid4().hex[:8]}|{i}" for i in range(4)]
    client = redis.Redis.from_url(url)
    try:
        fill_streams(client, keys, stream_ticks)
        history = asyncio.run(time_history(url, keys, 5 if quick else 20))
    finally:
        client.delete(*[tick_stream_key(k) for k in keys])
        client.close()
    pages, sends = (10, 50) if quick else (50, 200)
    fanout = sorted(asyncio.run(time_fanout(pages, sends)))
    return {
        "instruments": len(keys),
        "stream_ticks": stream_ticks,
        "history_points": selectors.HISTORY_POINTS,
        "history_ms_p50": round(statistics.median(history), 2),
        "history_ms_max": round(max(history), 2),
        "pages": pages,
        "sends": sends,
        "fanout_ms_p50": round(statistics.median(fanout), 2),
        "fanout_ms_p95": round(fanout[int(len(fanout) * 0.95) - 1], 2),
        "fanout_ms_max": round(fanout[-1], 2),
    }


if __name__ == "__main__":
    print(json.dumps(main("--quick" in sys.argv)))
