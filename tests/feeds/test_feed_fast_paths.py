"""The feed's throughput shortcuts produce exactly what the plain code would: the stream payload is
byte for byte `pack_tick`, the normaliser's tick constructor equals `Tick(...)`, and the Upstox
source's batched hand-off keeps every item in order. Real Redis (unique key prefix)."""

import asyncio
import collections
import threading

import msgpack
import pytest
import redis.asyncio as aioredis
from django.conf import settings

from feeds.groups import tick_stream_key
from feeds.pipeline import FeedPipeline
from feeds.ticks import Tick, pack_tick
from feeds.upstox.normalise import _new_tick
from feeds.upstox.source import UpstoxSource

DEPTH = tuple((100.0 - i * 0.05, 10 + i, 100.05 + i * 0.05, 20 + i) for i in range(5))


def _ticks(n=40):
    return [
        Tick(
            f"NSE_FO|{900 + i % 7}",
            1_764_040_000_000 + i,
            100.0 + i * 0.05,
            i,
            1000 + i,
            5.5,
            99.95,
            3,
            100.05,
            4,
            98.0,
            DEPTH if i % 3 else (),
        )
        for i in range(n)
    ]


def test_tick_constructor_equals_the_dataclass():
    fields = ("NSE_FO|1", 1, 1.5, 2, 3, 4.5, 1.45, 6, 1.55, 7, 1.4, DEPTH)
    made = _new_tick(*fields)
    assert type(made) is Tick
    assert made == Tick(*fields)
    assert hash(made) == hash(Tick(*fields))
    with pytest.raises(AttributeError):
        made.ltp = 2.0  # still frozen


def test_stream_payload_is_pack_tick_and_ranges_span_each_stream(prefix):
    ticks = _ticks()

    async def scenario():
        r = aioredis.from_url(settings.REDIS_URL)
        pipeline = FeedPipeline(source_name="t", writer=None, redis=r, key_prefix=prefix)
        reports = []
        pipeline.on_flush.append(reports.append)
        pipeline.put(ticks)
        await pipeline.flush_streams()
        streams = {}
        for key in {t.instrument_key for t in ticks}:
            streams[key] = await r.xrange(prefix + tick_stream_key(key))
        await r.aclose()
        pipeline._executor.shutdown()
        return reports, streams

    reports, streams = asyncio.run(scenario())
    for key, entries in streams.items():
        expected = [pack_tick(t) for t in ticks if t.instrument_key == key]
        assert [fields[b"t"] for _, fields in entries] == expected
        first, last = reports[0].ranges[key]
        assert (first, last) == (entries[0][0].decode(), entries[-1][0].decode())
    assert msgpack.unpackb(pack_tick(ticks[1]))[11] == [list(level) for level in DEPTH]


def test_batched_hand_off_keeps_every_item_in_order():
    source = UpstoxSource([], token_provider=lambda: None)

    async def scenario():
        source._loop = asyncio.get_running_loop()
        source._queue = asyncio.Queue()
        source._inbox = collections.deque()
        source._wake_pending = False
        n = 20_000

        def produce():
            for i in range(n):
                source._post(("ticks", 1, i))

        threads = [threading.Thread(target=produce)]
        for t in threads:
            t.start()
        got = []
        while len(got) < n:
            got.append((await asyncio.wait_for(source._queue.get(), 10))[2])
        for t in threads:
            t.join()
        return got

    assert asyncio.run(scenario()) == list(range(20_000))
