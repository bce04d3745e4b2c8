"""Replay: write a session with the sim, replay it through the pipeline, compare ticks."""

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import redis
from django.conf import settings

from feeds import sim
from feeds.groups import tick_stream_key
from feeds.pipeline import FeedPipeline
from feeds.replay import NoStoredData, ReplaySource
from feeds.ticks import IST
from persistence.readers import read_ticks
from persistence.writer import HistoryWriter

DAY = date(2025, 12, 1)
ROOT = Path(__file__).resolve().parents[2]


def _identity(t):
    return (t.instrument_key, t.ts_ms, t.ltp, t.ltq, t.volume, t.oi, t.bid, t.bid_qty, t.ask, t.ask_qty)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Twenty simulated minutes (all default instruments) written to a store."""
    root = tmp_path_factory.mktemp("recorded")
    ticks = list(sim.SimSession(DAY).ticks(0, 1200))
    with HistoryWriter(root, flush_interval=None) as writer:
        assert writer.write_ticks(ticks) == len(ticks)
    return root, ticks


def test_replay_gives_back_the_recorded_ticks(recorded):
    root, ticks = recorded
    replayed = list(ReplaySource(DAY, speed=1000, root=root).ticks())
    assert len(replayed) == len(ticks)
    assert all(a.ts_ms <= b.ts_ms for a, b in zip(replayed, replayed[1:], strict=False))
    assert sorted(map(_identity, replayed)) == sorted(map(_identity, ticks))


def test_replay_through_the_pipeline_into_a_new_store(recorded, tmp_path):
    root, ticks = recorded
    keys = ["NSE_INDEX|Nifty 50", ticks[0].instrument_key]
    source = ReplaySource(DAY, speed=1000, instruments=keys, root=root)

    async def main():
        pipeline = FeedPipeline(
            source_name="replay", writer=HistoryWriter(tmp_path, flush_interval=None), redis=None
        )
        await pipeline.run(source)
        return pipeline

    pipeline = asyncio.run(main())
    for key in keys:
        original = read_ticks(key, DAY, DAY, root=root)
        again = read_ticks(key, DAY, DAY, root=tmp_path)
        assert again.drop_columns(["ts"]).equals(original.drop_columns(["ts"]))
    assert pipeline.stats.rows_written == sum(1 for t in ticks if t.instrument_key in keys)


def test_replay_slice_and_pacing(recorded):
    root, _ = recorded
    from datetime import time as dtime

    src = ReplaySource(
        DAY,
        speed=100,
        instruments=["NSE_INDEX|Nifty 50"],
        root=root,
        start=dtime(9, 20),
        end=dtime(9, 20, 20),
    )
    got = list(src.ticks())
    assert len(got) == 20
    assert got[0].time.time() >= dtime(9, 20) and got[-1].time.time() < dtime(9, 20, 20)


def test_candles_only_become_synthetic_ticks(tmp_path):
    start = datetime(2025, 12, 1, 9, 15, tzinfo=IST)
    candles = pa.table(
        {
            "instrument_key": ["NSE_INDEX|Nifty 50"] * 3,
            "ts": pa.array(
                [start + timedelta(minutes=i) for i in range(3)], pa.timestamp("ms", tz="Asia/Kolkata")
            ),
            "open": [100.0, 104.0, 101.0],
            "high": [105.0, 106.0, 102.0],
            "low": [99.0, 100.0, 95.0],
            "close": [104.0, 101.0, 96.0],
            "volume": [400, 0, 10],
        }
    )
    with HistoryWriter(tmp_path, flush_interval=None) as writer:
        writer.write_candles(candles)
    src = ReplaySource(DAY, speed=1000, root=tmp_path)
    ticks = list(src.ticks())
    assert src.synthetic == ["NSE_INDEX|Nifty 50"]
    assert [t.ltp for t in ticks] == [100, 99, 105, 104, 104, 106, 100, 101, 101, 102, 95, 96]
    assert ticks[3].volume == 400 and sum(t.ltq for t in ticks[:4]) == 400
    # Each synthetic tick stays inside its minute.
    assert all((t.ts_ms - ticks[0].ts_ms) // 60_000 == i // 4 for i, t in enumerate(ticks))


def test_no_stored_data(tmp_path):
    with pytest.raises(NoStoredData, match="no stored data for 2025-12-01"):
        ReplaySource(DAY, root=tmp_path)


def test_runfeed_replay_streams_every_stored_tick(recorded):
    """`runfeed --source replay` over the recorded store: every tick goes to the stream again, and
    the writer, replaying into the very store it reads, stores nothing twice."""
    root, ticks = recorded
    prefix = f"t{uuid.uuid4().hex[:10]}."
    key = "NSE_INDEX|Nifty Bank"
    r = redis.Redis.from_url(settings.REDIS_URL)
    try:
        out = subprocess.run(
            [sys.executable, "manage.py", "runfeed", "--source", "replay", "--date", DAY.isoformat(),
             "--speed", "1000", "--instruments", key, "--redis-prefix", prefix],
            cwd=ROOT, env={**os.environ, "HISTORY_DIR": str(root)}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        n = sum(1 for t in ticks if t.instrument_key == key)
        assert r.xlen(prefix + tick_stream_key(key)) == n
        assert "rows_written=0" in out.stderr
        assert read_ticks(key, DAY, DAY, root=root).num_rows == n
    finally:
        keys = list(r.scan_iter(match=f"{prefix}*"))
        if keys:
            r.delete(*keys)
        r.close()
