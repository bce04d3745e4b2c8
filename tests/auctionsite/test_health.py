"""/healthz and its checks against the real database and Redis (keys unique per test)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from auctionsite import health
from feeds.groups import FEED_STATUS_KEY, WORKER_HEARTBEATS_KEY

BASE_DIR = Path(__file__).resolve().parents[2]
NOW_MS = 1_764_000_000_000


@pytest.fixture
def client_redis(test_redis_url):
    client = health.redis_client(test_redis_url)
    yield client
    client.close()


@pytest.fixture
def key():
    return f"test:health:{secrets.token_hex(6)}"


@pytest.fixture
def cleanup(client_redis):
    keys: list[str] = []
    yield keys
    if keys:
        client_redis.delete(*keys)


def test_feed_fresh_heartbeat_is_up(client_redis, key, cleanup):
    cleanup.append(key)
    client_redis.hset(
        key, mapping={"heartbeat_ms": NOW_MS - 1500, "source": "sim", "state": "open", "alert": ""}
    )
    check = health.check_feed(client_redis, key=key, at_ms=NOW_MS)
    assert check.status == health.UP
    assert check.data["heartbeat_age_s"] == 1.5
    assert check.data["session_state"] == "open"


def test_feed_stale_heartbeat_is_down(client_redis, key, cleanup):
    cleanup.append(key)
    client_redis.hset(key, mapping={"heartbeat_ms": NOW_MS - 11_000, "source": "sim"})
    check = health.check_feed(client_redis, key=key, at_ms=NOW_MS)
    assert check.status == health.DOWN
    assert "11 s old" in check.detail


def test_feed_alert_is_reported_and_degrades(client_redis, key, cleanup):
    cleanup.append(key)
    client_redis.hset(key, mapping={"heartbeat_ms": NOW_MS, "alert": "no ticks for 45 s while open"})
    check = health.check_feed(client_redis, key=key, at_ms=NOW_MS)
    assert check.status == health.DEGRADED
    assert check.data["alert"] == "no ticks for 45 s while open"


def test_feed_absent_is_down(client_redis, key):
    assert health.check_feed(client_redis, key=key, at_ms=NOW_MS).status == health.DOWN


def test_workers_fresh_stale_and_none(client_redis, key, cleanup):
    cleanup.append(key)
    assert health.check_workers(client_redis, key=key, at_ms=NOW_MS).status == health.UP  # none running
    client_redis.hset(key, mapping={"strategy.ib_breakout@host": NOW_MS - 4000, "beat@host": NOW_MS - 1000})
    check = health.check_workers(client_redis, key=key, at_ms=NOW_MS)
    assert check.status == health.UP
    assert check.data["heartbeat_age_s"] == {"beat@host": 1.0, "strategy.ib_breakout@host": 4.0}
    client_redis.hset(key, "backtests@host", NOW_MS - 120_000)
    check = health.check_workers(client_redis, key=key, at_ms=NOW_MS)
    assert check.status == health.DOWN
    assert check.detail == "silent: backtests@host"


def test_redis_down_reports_error_class_not_traceback():
    dead = health.redis_client("redis://:hunter2secret@127.0.0.1:1/0")
    check = health.check_redis(dead)
    assert check.status == health.DOWN
    assert check.detail.startswith("ConnectionError")
    assert "Traceback" not in check.detail


def test_redacted_url_hides_password():
    assert (
        health.redacted_url("redis://user:s3cret@redis.internal:6380/2")
        == "redis://user:***@redis.internal:6380/2"
    )
    assert health.redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.django_db
def test_upstox_token_never_shown(settings):
    settings.UPSTOX_ACCESS_TOKEN = ""
    settings.UPSTOX_ANALYTICS_TOKEN = ""
    assert health.check_upstox().status == health.NOT_CONFIGURED
    settings.UPSTOX_ACCESS_TOKEN = "eyJ0eXAiOiJKV1Qi.secret-token"
    check = health.check_upstox()
    assert check.status == health.UP
    assert check.data["source"] == "environment"
    assert "secret-token" not in json.dumps(check.as_json())


@pytest.mark.django_db
def test_database_up():
    check = health.check_database()
    assert (check.status, check.detail) == (health.UP, "sqlite")


# --- the endpoint -------------------------------------------------------------------------------


@pytest.fixture
def healthz_redis(settings, test_redis_url, client_redis):
    """Point /healthz at the test Redis database and clear the fixed keys there before and after."""
    settings.REDIS_URL = test_redis_url
    client_redis.delete(FEED_STATUS_KEY, WORKER_HEARTBEATS_KEY)
    yield client_redis
    client_redis.delete(FEED_STATUS_KEY, WORKER_HEARTBEATS_KEY)


@pytest.mark.django_db
def test_healthz_all_up_is_200(client, healthz_redis, settings):
    settings.UPSTOX_ACCESS_TOKEN = "tok-never-printed"
    healthz_redis.hset(
        FEED_STATUS_KEY, mapping={"heartbeat_ms": health.now_ms(), "source": "sim", "connected": "1"}
    )
    healthz_redis.hset(WORKER_HEARTBEATS_KEY, "strategy.ib_breakout@host", health.now_ms())
    response = client.get("/healthz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "up"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "up",
        "redis": "up",
        "feed": "up",
        "workers": "up",
        "upstox": "up",
        "trading": "up",
    }
    assert body["checks"]["feed"]["data"]["connected"] is True
    assert "tok-never-printed" not in response.content.decode()
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_healthz_without_feed_is_503_with_reason(client, healthz_redis, settings):
    settings.UPSTOX_ACCESS_TOKEN = ""
    settings.UPSTOX_ANALYTICS_TOKEN = ""
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["checks"]["feed"] == {"status": "down", "detail": "no feed status: the feed is not running"}
    assert body["checks"]["upstox"]["status"] == "not configured"


@pytest.mark.django_db
def test_healthz_stale_feed_is_503(client, healthz_redis):
    healthz_redis.hset(FEED_STATUS_KEY, mapping={"heartbeat_ms": health.now_ms() - 60_000})
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["feed"]["status"] == "down"


@pytest.mark.django_db
def test_healthz_feed_alert_is_200_degraded(client, healthz_redis):
    healthz_redis.hset(
        FEED_STATUS_KEY, mapping={"heartbeat_ms": health.now_ms(), "alert": "upstox socket silent"}
    )
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["feed"]["data"]["alert"] == "upstox socket silent"


@pytest.mark.django_db
def test_healthz_redis_down_is_503_without_traceback(client, settings):
    settings.REDIS_URL = "redis://:pw-in-url@127.0.0.1:1/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    text = response.content.decode()
    assert "Traceback" not in text and "pw-in-url" not in text
    checks = response.json()["checks"]
    assert checks["redis"]["detail"].startswith("ConnectionError")
    assert checks["feed"] == {"status": "down", "detail": "Redis unreachable"}
    assert checks["database"]["status"] == "up"


def test_healthz_database_down_is_503(tmp_path):
    """A real unreachable PostgreSQL, in a subprocess (the test database here is SQLite)."""
    script = (
        "import django; django.setup(); "
        "from django.test import Client; "
        "r = Client().get('/healthz'); "
        "print(r.status_code); print(r.content.decode())"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "auctionsite.settings",
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://postgres:dbpass@127.0.0.1:1/nowhere",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    status, body = done.stdout.split("\n", 1)
    assert status == "503"
    checks = json.loads(body)["checks"]
    assert checks["database"]["status"] == "down"
    assert checks["database"]["detail"].startswith("OperationalError")
    assert checks["upstox"] == {"status": "unknown", "detail": "database unreachable"}
    assert "dbpass" not in body and "Traceback" not in body
