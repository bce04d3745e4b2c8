"""End to end: `runfeed --source upstox` (its own process, production code path) against the fake
Upstox: the master loaded from the fake, the token from the environment, ticks into Redis Streams
and the feed status, subscriptions for indices, near-month futures and options around the money."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from feeds.groups import FEED_STATUS_KEY, tick_stream_key
from feeds.upstox.fake import FakeUpstox

ROOT = Path(__file__).resolve().parents[2]
NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"


def manage(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_runfeed_upstox_streams_from_the_fake(tmp_path, settings):
    prefix = f"test-upstox-{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(settings.REDIS_URL)
    with FakeUpstox(accepted_tokens={"env-token"}, ticks_per_second=300, frame_size=20) as fake:
        env = dict(
            os.environ,
            DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
            HISTORY_DIR=str(tmp_path / "history"),
            UPSTOX_API_URL=fake.api_url,
            UPSTOX_WS_URL=fake.ws_url,
            UPSTOX_INSTRUMENTS_URL=fake.master_url,
            UPSTOX_ACCESS_TOKEN="env-token",
            UPSTOX_ANALYTICS_TOKEN="",
            WATCHLIST=f"{NIFTY},{BANK}",
            LOG_LEVEL="WARNING",
        )
        assert manage(env, "migrate", "--noinput").returncode == 0
        loaded = manage(env, "loadinstruments")
        assert loaded.returncode == 0, loaded.stderr
        feed = subprocess.Popen(
            [sys.executable, "manage.py", "runfeed", "--source", "upstox", "--redis-prefix", prefix],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            stream = prefix + tick_stream_key(NIFTY)
            deadline = time.monotonic() + 60
            status_key = prefix + FEED_STATUS_KEY

            def ready() -> bool:
                connected = r.hget(status_key, "connected") == b"1"
                return connected and r.xlen(stream) > 0 and _options_streaming(fake)

            while time.monotonic() < deadline and not ready():
                assert feed.poll() is None, feed.stderr.read()
                time.sleep(0.2)
            assert r.xlen(stream) > 0
            status = {k.decode(): v.decode() for k, v in r.hgetall(status_key).items()}
            subscribed = fake.subscriptions()
        finally:
            feed.send_signal(signal.SIGTERM)
            try:
                rc = feed.wait(60)
            finally:
                for key in r.scan_iter(match=f"{prefix}*", count=1000):
                    r.delete(key)
                r.close()
    assert rc == 0
    assert status["source"] == "upstox" and status["alert"] == "" and status["decode_errors"] == "0"
    kinds = {fake.market.instruments.get(k, {}).get("instrument_type") for k in subscribed}
    assert {"INDEX", "FUT", "CE", "PE"} <= kinds
    assert set(subscribed.values()) == {"full"}


def _options_streaming(fake: FakeUpstox) -> bool:
    instruments = fake.market.instruments
    return any(instruments.get(k, {}).get("instrument_type") == "CE" for k in fake.subscriptions())
