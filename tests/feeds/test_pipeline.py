"""FeedPipeline end to end on the real Redis, the real pub/sub Channels layer and a real history
store in a tmp dir. Every Redis key and the group carry a unique prefix (Redis is shared)."""

import asyncio
from datetime import date
from datetime import time as dtime

import redis
import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from django.conf import settings

from feeds import sim
from feeds.groups import FEED_STATUS_KEY, LAST_SNAPSHOT_KEY, MARKET_GROUP, tick_stream_key
from feeds.pipeline import FeedPipeline, option_infos
from feeds.sources import CLOSED
from feeds.ticks import unpack_tick
from persistence.readers import read_ticks
from persistence.writer import HistoryWriter

DAY = date(2025, 12, 1)


async def _run(prefix, root, source, snapshot_ms=50):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(prefix + MARKET_GROUP, channel)
    received = []

    async def listen():
        while True:
            received.append(await layer.receive(channel))

    listener = asyncio.create_task(listen())
    r = aioredis.from_url(settings.REDIS_URL)
    writer = HistoryWriter(root, flush_interval=None)
    pipeline = FeedPipeline(
        source_name=source.name,
        writer=writer,
        redis=r,
        channel_layer=layer,
        snapshot_keys=source.snapshot_keys(),
        names=source.names(),
        options=option_infos(source.session.master, source.instruments),
        flush_ms=200,
        snapshot_ms=snapshot_ms,
        stream_maxlen=100_000,
        key_prefix=prefix,
        full_snapshot_every_s=0.5,
    )
    reports = []
    pipeline.on_flush.append(reports.append)
    await pipeline.run(source)
    await asyncio.sleep(0.3)  # let the last published snapshot arrive
    listener.cancel()
    await layer.group_discard(prefix + MARKET_GROUP, channel)
    await layer.flush()
    await r.aclose()
    return pipeline, received, reports


def test_pipeline_stores_streams_and_snapshots(prefix, tmp_path):
    # Speed 300: 2 simulated minutes in ~0.4 s, so several flushes and snapshots happen.
    source = sim.SimSource(DAY, speed=300, start=dtime(10, 0), end=dtime(10, 2))
    pipeline, received, reports = asyncio.run(_run(prefix, tmp_path, source))
    expected = list(
        sim.SimSession(DAY).ticks(
            sim.session_second(DAY, dtime(10, 0)), sim.session_second(DAY, dtime(10, 2))
        )
    )
    assert pipeline.stats.ticks_in == len(expected) > 1000
    assert pipeline.stats.rows_written == len(expected)

    # History store: every tick, exactly once.
    per_key: dict[str, list] = {}
    for t in expected:
        per_key.setdefault(t.instrument_key, []).append(t)
    for key in ("NSE_INDEX|Nifty 50", source.snapshot_keys()[1]):
        stored = read_ticks(key, DAY, DAY, root=tmp_path)
        assert stored["ts_ms"].to_pylist() == [t.ts_ms for t in per_key[key]]
        assert stored["ltp"].to_pylist() == [t.ltp for t in per_key[key]]

    # Streams: one entry per tick, in order, msgpack Ticks; flush reports name the ranges.
    r = redis.Redis.from_url(settings.REDIS_URL)
    try:
        for key, ticks in per_key.items():
            assert r.xlen(prefix + tick_stream_key(key)) == len(ticks)
        key = source.snapshot_keys()[1]
        entries = r.xrange(prefix + tick_stream_key(key))
        assert [unpack_tick(fields[b"t"]) for _, fields in entries] == per_key[key]
        assert sum(rep.ticks for rep in reports) == len(expected)
        first_ids = [rep.ranges[key][0] for rep in reports if key in rep.ranges]
        assert first_ids[0] == entries[0][0].decode()
        last = [rep.ranges[key][1] for rep in reports if key in rep.ranges][-1]
        assert last == entries[-1][0].decode()

        status = {k.decode(): v.decode() for k, v in r.hgetall(prefix + FEED_STATUS_KEY).items()}
        assert status["source"] == "sim" and status["session_state"] == CLOSED
        assert int(status["last_tick_ms"]) == expected[-1].ts_ms
        assert set(status) >= {
            "connected",
            "ticks_per_s",
            "heartbeat_ms",
            "alert",
            "decode_errors",
            "reconnects",
            "pid",
        }
        assert r.get(prefix + LAST_SNAPSHOT_KEY)
    finally:
        r.close()

    # Channels: conflated snapshots (not one per tick), watchlist indices + near futures only.
    snapshots = [m for m in received if m["type"] == "market.snapshot"]
    assert 3 <= len(snapshots) < len(expected) / 10
    full = [m for m in snapshots if m["full"]][-1]
    assert set(full["instruments"]) == set(source.snapshot_keys())
    nifty = full["instruments"]["NSE_INDEX|Nifty 50"]
    assert nifty["name"] == "Nifty 50" and nifty["ltp"] == per_key["NSE_INDEX|Nifty 50"][-1].ltp
    assert nifty["low"] <= nifty["ltp"] <= nifty["high"]
    assert abs(nifty["change"] - (nifty["ltp"] - nifty["prev_close"])) < 0.01
    assert set(full["feed"]) == {
        "source",
        "connected",
        "session_state",
        "ticks_per_s",
        "last_tick_ms",
        "alert",
    }


def test_pipeline_keeps_going_without_redis_or_layer(tmp_path):
    """The store is the one thing that must always be written; streams and snapshots are optional."""
    source = sim.SimSource(
        DAY, speed=1000, instruments=["NSE_INDEX|Nifty 50"], start=dtime(12, 0), end=dtime(12, 5)
    )

    async def main():
        pipeline = FeedPipeline(
            source_name="sim", writer=HistoryWriter(tmp_path, flush_interval=None), redis=None
        )
        await pipeline.run(source)
        return pipeline

    pipeline = asyncio.run(main())
    assert pipeline.stats.rows_written == 300
    assert read_ticks("NSE_INDEX|Nifty 50", DAY, DAY, root=tmp_path).num_rows == 300


def test_streams_catch_up_after_redis_comes_back(prefix, tmp_path):
    """XADD fails while Redis is unreachable: the store still gets every tick, the alert is raised,
    and the held-back ticks reach the streams, in order, once Redis answers again."""
    key = "NSE_INDEX|Nifty 50"
    source = sim.SimSource(DAY, speed=60, instruments=[key], start=dtime(12, 0), end=dtime(12, 3))

    async def main():
        dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
        live = aioredis.from_url(settings.REDIS_URL)
        pipeline = FeedPipeline(
            source_name="sim",
            writer=HistoryWriter(tmp_path, flush_interval=None),
            redis=dead,
            flush_ms=100,
            key_prefix=prefix,
        )
        alerts = []

        async def heal():
            while pipeline.stats.stream_errors < 3:
                await asyncio.sleep(0.05)
            alerts.append(pipeline.feed_status()["alert"])
            pipeline.redis = live

        healer = asyncio.create_task(heal())
        await pipeline.run(source)
        await healer
        await dead.aclose()
        await live.aclose()
        return pipeline, alerts

    pipeline, alerts = asyncio.run(main())
    # Whichever step failed last names itself (flush, write_status or publish_snapshot).
    assert len(alerts) == 1 and alerts[0].endswith(" failing")
    assert pipeline.feed_status()["alert"] == ""
    assert pipeline.stats.rows_written == 180
    r = redis.Redis.from_url(settings.REDIS_URL)
    try:
        entries = r.xrange(prefix + tick_stream_key(key))
    finally:
        r.close()
    ticks = [unpack_tick(fields[b"t"]) for _, fields in entries]
    assert [t.ts_ms for t in ticks] == read_ticks(key, DAY, DAY, root=tmp_path)["ts_ms"].to_pylist()
    assert len(ticks) == 180


def test_stop_before_run_still_stops_the_source(tmp_path):
    source = sim.SimSource(DAY, speed=1, instruments=["NSE_INDEX|Nifty 50"])

    async def main():
        pipeline = FeedPipeline(
            source_name="sim", writer=HistoryWriter(tmp_path, flush_interval=None), redis=None
        )
        pipeline.stop()
        await asyncio.wait_for(pipeline.run(source), 10)
        return pipeline

    pipeline = asyncio.run(main())
    assert pipeline.stats.ticks_in == 0


def test_store_batches_are_cut_at_the_high_water_mark_and_a_failed_write_is_sent_again(tmp_path):
    """Ticks wait for the store in parts (one per put); a flush takes whole parts up to
    high_water, and a write that fails puts its parts back in front, so the store gets every tick
    once and in order."""
    ticks = list(
        sim.SimSource(
            DAY, speed=1000, instruments=["NSE_INDEX|Nifty 50"], start=dtime(12, 0), end=dtime(12, 1)
        ).session.ticks()
    )[:50]

    class FailingOnce(HistoryWriter):
        calls = 0

        def write_records(self, *args, **kwargs):
            FailingOnce.calls += 1
            if FailingOnce.calls == 2:
                raise OSError("disk full")
            return super().write_records(*args, **kwargs)

    async def main():
        writer = FailingOnce(tmp_path, flush_interval=None)
        pipeline = FeedPipeline(source_name="t", writer=writer, redis=None, high_water=25)
        for start in range(0, 50, 10):  # five parts of ten ticks
            pipeline.put(ticks[start : start + 10])
        await pipeline.flush_store()  # parts 1-2 (20 ticks: a third part would pass 25)
        assert len(pipeline._pending) == 30
        try:
            await pipeline.flush_store()  # parts 3-4 fail and go back in front
        except OSError:
            pass
        else:
            raise AssertionError("the failed write was not reported")
        assert len(pipeline._pending) == 30
        while pipeline._pending:
            await pipeline.flush_store()
        writer.close()
        return pipeline

    pipeline = asyncio.run(main())
    assert pipeline.stats.rows_written == 50
    stored = read_ticks("NSE_INDEX|Nifty 50", DAY, DAY, root=tmp_path)
    assert stored["ts_ms"].to_pylist() == [t.ts_ms for t in ticks]
