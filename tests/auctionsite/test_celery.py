"""Celery: routing, JSON only, the beat schedule, heartbeats, housekeeping, and a real worker."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from kombu.exceptions import ContentDisallowed
from kombu.serialization import dumps, loads, prepare_accept_content

from auctionsite.celery import BACKTESTS_QUEUE, MAINTENANCE_QUEUE, app, route_task, strategy_queue
from auctionsite.heartbeats import Heartbeat, prune_stale
from auctionsite.tasks import prune_worker_heartbeats, session_day_start_ms, trim_streams_before
from feeds.groups import WORKER_HEARTBEATS_KEY, tick_stream_key

BASE_DIR = Path(settings.BASE_DIR)


@pytest.fixture
def client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


def test_strategy_evaluation_goes_to_its_strategy_queue():
    assert route_task("strategies.tasks.evaluate", (), {"slug": "ib_breakout"}, {}) == {
        "queue": "strategy.ib_breakout"
    }
    assert route_task("strategies.tasks.evaluate_range", ("va_rejection",), {}, {}) == {
        "queue": strategy_queue("va_rejection")
    }


def test_backtests_and_everything_else_have_their_queues():
    assert route_task("strategies.backtests.tasks.run_backtest", (), {}, {}) == {"queue": BACKTESTS_QUEUE}
    assert route_task("auctionsite.tasks.trim_tick_streams", (), {}, {}) == {"queue": MAINTENANCE_QUEUE}
    assert app.conf.task_default_queue == MAINTENANCE_QUEUE


def test_json_only_and_pickle_is_refused():
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"
    assert list(app.conf.accept_content) == ["json"]
    content_type, encoding, payload = dumps({"a": 1}, serializer="pickle")
    with pytest.raises(ContentDisallowed):
        loads(payload, content_type, encoding, accept=prepare_accept_content(app.conf.accept_content))
    content_type, encoding, payload = dumps({"a": 1}, serializer="json")
    assert loads(payload, content_type, encoding, accept=prepare_accept_content(app.conf.accept_content)) == {
        "a": 1
    }


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()
    assert app.conf.beat_schedule, "beat has a real schedule"
    for name, entry in app.conf.beat_schedule.items():
        assert entry["task"] in app.tasks, f"beat entry {name} sends unknown task {entry['task']}"
        assert route_task(entry["task"], (), entry.get("kwargs", {}), {}) == {"queue": MAINTENANCE_QUEUE}


def test_session_day_starts_at_midnight_ist():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    # 2026-03-02 10:00 IST is 04:30 UTC; its day starts 2026-03-01 18:30 UTC.
    now = datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
    assert session_day_start_ms(now) == int(
        datetime(2026, 3, 1, 18, 30, tzinfo=ZoneInfo("UTC")).timestamp() * 1000
    )


def test_trim_streams_drops_earlier_days_and_empty_streams(client):
    prefix = f"TEST_{secrets.token_hex(4)}"
    today, yesterday = tick_stream_key(f"{prefix}|today"), tick_stream_key(f"{prefix}|yesterday")
    try:
        for ms in (1000, 2000, 3000):
            client.xadd(today, {"t": ms}, id=f"{ms}-0")
        client.xadd(yesterday, {"t": 1}, id="1500-0")
        removed = trim_streams_before(client, before_ms=2500, pattern=tick_stream_key(f"{prefix}*"))
        assert removed == {today: 2, yesterday: 1}
        assert [entry_id for entry_id, _ in client.xrange(today)] == [b"3000-0"]
        assert not client.exists(yesterday)
    finally:
        client.delete(today, yesterday)


def test_heartbeat_writes_then_removes_its_entry(client):
    key = f"test:heartbeats:{secrets.token_hex(4)}"
    beat = Heartbeat(name="w1@test", redis_url=settings.REDIS_URL, interval=0.05, key=key)
    try:
        beat.start()
        first = int(client.hget(key, "w1@test"))
        deadline = time.monotonic() + 10
        while int(client.hget(key, "w1@test")) == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert int(client.hget(key, "w1@test")) > first, "the thread keeps beating"
        beat.stop()
        assert client.hget(key, "w1@test") is None
    finally:
        client.delete(key)


def test_prune_stale_forgets_only_old_entries(client):
    key = f"test:heartbeats:{secrets.token_hex(4)}"
    now = int(time.time() * 1000)
    try:
        client.hset(key, mapping={"alive": now, "dead": now - 7_200_000, "garbage": "x"})
        assert sorted(prune_stale(client, max_age_ms=3_600_000, key=key)) == ["dead", "garbage"]
        assert client.hkeys(key) == [b"alive"]
    finally:
        client.delete(key)


@pytest.mark.slow
def test_a_real_worker_runs_a_task_and_beats_until_it_stops(client):
    queue = f"test.{secrets.token_hex(4)}"
    node = f"{queue}@{socket.gethostname()}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "auctionsite", "worker", "-Q", queue, "-n", node]
        + ["--pool", "solo", "--without-mingle", "--without-gossip", "-l", "WARNING"],
        cwd=BASE_DIR,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        result = prune_worker_heartbeats.apply_async(kwargs={"max_age_s": 10**9}, queue=queue)
        assert result.get(timeout=90) == []
        deadline = time.monotonic() + 30
        while client.hget(WORKER_HEARTBEATS_KEY, node) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert int(client.hget(WORKER_HEARTBEATS_KEY, node)) > time.time() * 1000 - 60_000
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        assert client.hget(WORKER_HEARTBEATS_KEY, node) is None, "a clean shutdown removes the heartbeat"
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        output = worker.stdout.read().decode(errors="replace")
        worker.stdout.close()
        client.hdel(WORKER_HEARTBEATS_KEY, node)
        client.delete(queue)
    assert "Traceback" not in output, output


@pytest.mark.slow
def test_beat_beats_while_it_runs_and_clears_its_entry_on_sigterm(private_redis_url, tmp_path):
    client = redis.Redis.from_url(private_redis_url)
    name = f"beat@{socket.gethostname()}"
    beat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "auctionsite",
            "beat",
            "-s",
            str(tmp_path / "schedule"),
            "-l",
            "WARNING",
        ],
        cwd=BASE_DIR,
        env={**os.environ, "REDIS_URL": private_redis_url, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while client.hget(WORKER_HEARTBEATS_KEY, name) is None and time.monotonic() < deadline:
            assert beat.poll() is None, beat.stdout.read().decode(errors="replace")
            time.sleep(0.1)
        assert client.hget(WORKER_HEARTBEATS_KEY, name) is not None
        beat.send_signal(signal.SIGTERM)
        beat.wait(timeout=30)
        assert client.hget(WORKER_HEARTBEATS_KEY, name) is None
    finally:
        if beat.poll() is None:
            os.killpg(beat.pid, signal.SIGKILL)
            beat.wait()
        beat.stdout.close()
        client.close()
