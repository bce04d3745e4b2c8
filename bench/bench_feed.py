"""Feed throughput: simulated session -> FeedPipeline -> history store + Redis Streams + snapshots.

Prints one JSON object. Measures, on the real Redis (REDIS_URL) and a history store in a temporary
directory, with a unique key prefix (nothing of a live feed is touched):
* `sim_ticks_per_s`: the simulator alone generating ticks (all default instruments);
* `pipeline_ticks_per_s`: pre-generated ticks pushed through the pipeline as fast as it accepts
  them (store + pipelined XADD + conflated snapshots to the Channels pub/sub layer);
* `end_to_end_ticks_per_s`: SimSource flat out through the pipeline (generation included);
* flush latency p50/p95/max: store flushes (every FEED_FLUSH_MS) and stream batches (every ~100 ms),
  most telling in the paced run (the simulated session at 100x, a few thousand ticks/s).
Usage: python bench/bench_feed.py [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auctionsite.settings")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from django.conf import settings  # noqa: E402

from feeds import sim  # noqa: E402
from feeds.pipeline import FeedPipeline  # noqa: E402
from feeds.sources import CLOSED, OPEN  # noqa: E402
from persistence.writer import HistoryWriter  # noqa: E402

DAY = date(2025, 12, 1)


class ListSource:
    """Pushes pre-generated per-second batches as fast as the pipeline drains them."""

    name = "bench"

    def __init__(self, batches: list[list]) -> None:
        self.batches = batches

    async def run(self, sink) -> None:
        sink.set_status(connected=True, session_state=OPEN)
        drain = sink.drain
        for i, batch in enumerate(self.batches):
            sink.put(batch)
            if i % 20 == 0:
                await asyncio.sleep(0)
            await drain()
        sink.set_status(session_state=CLOSED)


async def _through_pipeline(
    source, root: Path | None, prefix: str, snapshot_keys: list[str], streams: bool = True
) -> tuple[FeedPipeline, float]:
    r = aioredis.from_url(settings.REDIS_URL) if streams else None
    layer = get_channel_layer()
    pipeline = FeedPipeline(
        source_name=source.name,
        writer=HistoryWriter(root, flush_interval=None) if root is not None else None,
        redis=r,
        channel_layer=layer,
        snapshot_keys=snapshot_keys,
        flush_ms=settings.FEED_FLUSH_MS,
        snapshot_ms=settings.FEED_SNAPSHOT_MS,
        stream_maxlen=settings.TICK_STREAM_MAXLEN,
        key_prefix=prefix,
    )
    started = time.perf_counter()
    await pipeline.run(source)
    elapsed = time.perf_counter() - started
    await layer.flush()
    if r is not None:
        await r.aclose()
    return pipeline, elapsed


def _cleanup(prefix: str) -> None:
    r = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i : i + 500])
    r.close()


def _clock(minutes: int) -> dtime:
    return (datetime.combine(DAY, dtime(9, 15)) + timedelta(minutes=minutes)).time()


def main(quick: bool) -> dict:
    minutes = 10 if quick else 60
    end_s = minutes * 60
    session = sim.SimSession(DAY)
    snapshot_keys = session.snapshot_keys()

    t0 = time.perf_counter()
    batches = [b for _, b in session.batches(0, end_s)]
    sim_elapsed = time.perf_counter() - t0
    n_ticks = sum(len(b) for b in batches)

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = asyncio.run
            full, full_s = run(
                _through_pipeline(ListSource(batches), Path(tmp) / "a", prefix + "a.", snapshot_keys)
            )
            streams, streams_s = run(
                _through_pipeline(ListSource(batches), None, prefix + "s.", snapshot_keys)
            )
            store, store_s = run(
                _through_pipeline(
                    ListSource(batches), Path(tmp) / "c", prefix + "c.", snapshot_keys, streams=False
                )
            )
            flat = sim.SimSource(DAY, speed=sim.FLAT_OUT_SPEED, end=_clock(minutes))
            e2e, e2e_s = run(_through_pipeline(flat, Path(tmp) / "b", prefix + "b.", snapshot_keys))
            # A realistic load: the simulated session at 100x (a few thousand ticks/s), where
            # flush latency is what a strategy waits for.
            paced = sim.SimSource(DAY, speed=100, end=_clock(5 if quick else 15))
            live, live_s = run(_through_pipeline(paced, Path(tmp) / "d", prefix + "d.", snapshot_keys))
    finally:
        _cleanup(prefix)
    return {
        "bench": "feed",
        "quick": quick,
        "session_minutes": minutes,
        "instruments": len(session.keys),
        "ticks": n_ticks,
        "sim_ticks_per_s": round(n_ticks / sim_elapsed),
        "pipeline_ticks_per_s": round(full.stats.ticks_in / full_s),
        "pipeline_rows_written": full.stats.rows_written,
        "pipeline_store_flush": full.stats.flush_summary(),
        "pipeline_stream_flush": full.stats.stream_flush_summary(),
        "streams_only_ticks_per_s": round(streams.stats.ticks_in / streams_s),
        "store_only_ticks_per_s": round(store.stats.ticks_in / store_s),
        "end_to_end_ticks_per_s": round(e2e.stats.ticks_in / e2e_s),
        "end_to_end_store_flush": e2e.stats.flush_summary(),
        "end_to_end_stream_flush": e2e.stats.stream_flush_summary(),
        "simulated_seconds_per_wall_second": round(end_s / e2e_s, 1),
        "paced_100x_ticks_per_s": round(live.stats.ticks_in / live_s),
        "paced_100x_store_flush": live.stats.flush_summary(),
        "paced_100x_stream_flush": live.stats.stream_flush_summary(),
        "paced_100x_snapshots_per_s": round(live.stats.snapshots_sent / live_s, 1),
        "flush_ms_setting": settings.FEED_FLUSH_MS,
        "snapshot_ms_setting": settings.FEED_SNAPSHOT_MS,
    }


if __name__ == "__main__":
    print(json.dumps(main("--quick" in sys.argv[1:])))
