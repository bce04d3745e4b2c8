"""`manage.py runfeed` as a real subprocess: store, streams, status, snapshots; SIGTERM; bad input."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from datetime import date
from datetime import time as dtime
from pathlib import Path

import pytest
import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management import CommandError, call_command

from feeds import sim
from feeds.groups import FEED_STATUS_KEY, MARKET_GROUP, tick_stream_key
from feeds.management.commands.runfeed import stored_session_resume
from persistence.readers import instruments, read_ticks

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2025, 12, 1)
pytestmark = pytest.mark.slow


def _argv(prefix: str, *args: str) -> list[str]:
    return [sys.executable, "manage.py", "runfeed", "--redis-prefix", prefix, *args]


def _env(history: Path) -> dict:
    return {**os.environ, "HISTORY_DIR": str(history), "PYTHONUNBUFFERED": "1"}


def _summary(output: str) -> dict:
    m = re.search(r"runfeed exit: ticks=(\d+) streamed=(\d+) rows_written=(\d+)", output)
    assert m, output
    return {"ticks": int(m[1]), "streamed": int(m[2]), "rows": int(m[3])}


def _stream_lengths(prefix: str, keys: list[str]) -> dict[str, int]:
    r = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return {k: r.xlen(prefix + tick_stream_key(k)) for k in keys}
    finally:
        r.close()


def test_runfeed_sim_end_to_end(prefix, tmp_path):
    history = tmp_path / "history"

    async def main():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(prefix + MARKET_GROUP, channel)
        proc = await asyncio.create_subprocess_exec(
            *_argv(prefix, "--source", "sim", "--speed", "150", "--date", DAY.isoformat(), "--end", "09:18"),
            cwd=ROOT,
            env=_env(history),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        received = []

        async def listen():
            while True:
                received.append(await layer.receive(channel))

        listener = asyncio.create_task(listen())
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        await asyncio.sleep(0.2)
        listener.cancel()
        await layer.flush()
        return proc.returncode, out.decode(), received

    code, output, received = asyncio.run(main())
    assert code == 0, output
    assert "runfeed start: source=sim speed=150" in output
    summary = _summary(output)
    expected = list(sim.SimSession(DAY).ticks(0, 180))
    assert summary == {"ticks": len(expected), "streamed": len(expected), "rows": len(expected)}

    keys = sorted({t.instrument_key for t in expected})
    assert sorted(instruments(root=history)) == keys
    lengths = _stream_lengths(prefix, keys)
    for key in keys:
        n = sum(1 for t in expected if t.instrument_key == key)
        assert lengths[key] == n
        assert read_ticks(key, DAY, DAY, root=history).num_rows == n

    r = redis.Redis.from_url(settings.REDIS_URL)
    status = {k.decode(): v.decode() for k, v in r.hgetall(prefix + FEED_STATUS_KEY).items()}
    r.close()
    assert status["source"] == "sim" and status["session_state"] == "closed" and status["connected"] == "0"

    snapshots = [m for m in received if m.get("type") == "market.snapshot"]
    assert snapshots, "a group member receives market.snapshot messages"
    assert any("NSE_INDEX|Nifty Bank" in m["instruments"] for m in snapshots)
    assert all(m["feed"]["source"] == "sim" for m in snapshots)
    assert any(set(m.get("options", {})) == {"NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank"} for m in snapshots)


def test_sigterm_flushes_everything_and_exits_zero(prefix, tmp_path):
    history = tmp_path / "history"
    # Paced at 20x: the slice would take ~2 minutes; it is stopped after a few seconds.
    proc = subprocess.Popen(
        _argv(prefix, "--source", "sim", "--speed", "20", "--date", DAY.isoformat(), "--end", "09:25"),
        cwd=ROOT,
        env=_env(history),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _stream_lengths(prefix, ["NSE_INDEX|Nifty 50"])["NSE_INDEX|Nifty 50"] >= 40:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the feed did not start streaming")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = out.decode()
    assert proc.returncode == 0, output
    assert "SIGTERM received" in output
    summary = _summary(output)
    assert summary["ticks"] == summary["streamed"] == summary["rows"] > 0

    # Nothing lost: the store and the streams hold the same, gap-free prefix of the session.
    session = sim.SimSession(DAY)
    expected: dict[str, list] = {}
    for t in session.ticks(0, 600):
        expected.setdefault(t.instrument_key, []).append(t)
    stored_total = 0
    lengths = _stream_lengths(prefix, list(expected))
    for key, ticks in expected.items():
        stored = read_ticks(key, DAY, DAY, root=history)
        n = stored.num_rows
        stored_total += n
        assert lengths[key] == n
        assert stored["ts_ms"].to_pylist() == [t.ts_ms for t in ticks[:n]]
    assert stored_total == summary["rows"]


def test_bad_arguments_are_one_line_errors(settings, tmp_path):
    settings.HISTORY_DIR = tmp_path
    cases = [
        (["--source", "bloomberg"], "unknown source 'bloomberg'"),
        (["--source", "sim", "--date", "2025-13-01"], "bad --date"),
        (["--source", "sim", "--date", "2025-12-25"], "not an NSE trading day"),
        (["--source", "sim", "--date", "2025-12-01", "--instruments", "NSE_FO|1"], "unknown instrument"),
        (["--source", "sim", "--start", "25:00"], "bad --start"),
        (["--source", "sim", "--speed", "0"], "bad --speed"),
        (["--source", "sim", "--date", "2025-12-01", "--start", "15:45"], "after the 15:30 close"),
        (["--source", "sim", "--date", "2025-12-01", "--start", "11:00", "--end", "10:00"], "slice is empty"),
        (["--source", "replay"], "needs --date"),
        (["--source", "replay", "--date", "2025-12-01"], "no stored data for 2025-12-01"),
    ]
    for args, message in cases:
        with pytest.raises(CommandError, match=re.escape(message)):
            call_command("runfeed", *args)


FLUSH_REPORTS: list = []


def recording_hook(pipeline):
    """A FEED_FLUSH_HOOKS factory, as strategy dispatch will be."""
    return FLUSH_REPORTS.append


def test_sim_slice_boundaries_in_process(settings, tmp_path, prefix):
    """call_command path (same code as the subprocess), a short slice: ticks stay inside it, and
    flush hooks named in FEED_FLUSH_HOOKS see every tick's stream range."""
    settings.HISTORY_DIR = tmp_path
    settings.FEED_FLUSH_HOOKS = ["tests.feeds.test_runfeed.recording_hook"]
    FLUSH_REPORTS.clear()
    call_command(
        "runfeed", "--source", "sim", "--speed", "1000", "--date", "2025-12-02",
        "--instruments", "NSE_INDEX|Nifty Bank", "--start", "14:00", "--end", "14:01", "--redis-prefix", prefix,
    )  # fmt: skip
    stored = read_ticks("NSE_INDEX|Nifty Bank", date(2025, 12, 2), date(2025, 12, 2), root=tmp_path)
    assert stored.num_rows == 60
    assert stored["ts"][0].as_py().time() >= dtime(14, 0)
    assert dtime(14, 0) <= stored["ts"][-1].as_py().time() < dtime(14, 1)
    assert sum(r.ticks for r in FLUSH_REPORTS) == 60
    assert {k for r in FLUSH_REPORTS for k in r.ranges} == {"NSE_INDEX|Nifty Bank"}


def test_a_restarted_sim_resumes_where_the_store_left_off(settings, tmp_path, prefix):
    """A feed `up` restarts continues its session (the dashboard never runs backwards); a session
    stored to its close runs again from the open."""
    settings.HISTORY_DIR = tmp_path
    settings.FEED_FLUSH_HOOKS = []
    day = date(2025, 12, 2)
    key = "NSE_INDEX|Nifty Bank"
    settings.WATCHLIST = [key]
    assert stored_session_resume(day) is None
    run = ("runfeed", "--source", "sim", "--speed", "1000", "--date", day.isoformat(), "--instruments", key)
    call_command(*run, "--start", "10:00", "--end", "10:02", "--redis-prefix", prefix)
    assert stored_session_resume(day) == dtime(10, 1, 59)

    call_command(*run, "--end", "10:04", "--redis-prefix", prefix)  # no --start: resumes
    stored = read_ticks(key, day, day, root=tmp_path)
    times = [t.as_py().time() for t in stored["ts"]]
    assert times[0] >= dtime(10, 0)  # nothing from 09:15 was sent again
    assert len(times) == len(set(times)) == 240  # 10:00-10:04, once each

    call_command(*run, "--start", "15:29", "--redis-prefix", prefix)
    assert stored_session_resume(day) is None  # complete: a new run starts at the open
