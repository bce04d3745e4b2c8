"""Fixtures of the web backtest tests: small generated candle histories written into a temporary
history store with the real `HistoryWriter`."""

from __future__ import annotations

import random
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from feeds.groups import WORKER_HEARTBEATS_KEY
from feeds.ticks import IST

NIFTY = "NSE_INDEX|Nifty 50"


def trading_days(first: date, count: int) -> list[date]:
    days, day = [], first
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def session_candles(day: date, rng: random.Random, start_price: float) -> list[dict]:
    """375 one-minute candles 09:15..15:29 of a random walk on the 0.05 grid with a drift that changes
    after the initial balance, so some sessions break out of it and some do not."""
    rows = []
    price = start_price
    drift = rng.choice([-1.2, -0.6, 0.0, 0.6, 1.2])
    t0 = datetime.combine(day, time(9, 15), IST)
    for i in range(375):
        step = rng.gauss(drift if i >= 60 else 0.0, 4.0)
        o = price
        c = round((price + step) * 20) / 20
        hi = round((max(o, c) + abs(rng.gauss(0, 1.5))) * 20) / 20
        lo = round((min(o, c) - abs(rng.gauss(0, 1.5))) * 20) / 20
        ts_ms = int((t0 + timedelta(minutes=i)).timestamp() * 1000)
        rows.append({"ts_ms": ts_ms, "open": o, "high": hi, "low": lo, "close": c})
        price = c
    return rows


def make_history(days: list[date], seed: int = 7, key: str = NIFTY) -> pa.Table:
    rng = random.Random(seed)
    rows: list[dict] = []
    price = 22000.0
    for day in days:
        candles = session_candles(day, rng, price)
        price = candles[-1]["close"]
        rows.extend(candles)
    return pa.table(
        {
            "instrument_key": [key] * len(rows),
            "ts_ms": pa.array([r["ts_ms"] for r in rows], pa.int64()),
            "open": [r["open"] for r in rows],
            "high": [r["high"] for r in rows],
            "low": [r["low"] for r in rows],
            "close": [r["close"] for r in rows],
        }
    )


def write_history(root: Path, table: pa.Table) -> None:
    from persistence.writer import HistoryWriter

    with HistoryWriter(root, flush_interval=None) as writer:
        writer.write_candles(table)


@pytest.fixture
def history_dir(tmp_path, settings):
    """A history store with 6 generated sessions of Nifty 50 candles, set as settings.HISTORY_DIR."""
    root = tmp_path / "history"
    write_history(root, make_history(trading_days(date(2024, 3, 4), 6)))
    settings.HISTORY_DIR = root
    return root


# --- A real site: Daphne + a backtests Celery worker on a private queue -------------------------

# The subprocesses' settings: the project's, with a private channel prefix (as tests/conftest.py's
# Daphne) and a private backtests queue, so the worker takes only this test session's runs.
_SITE_SETTINGS = """
import os
from auctionsite.settings import *  # noqa: F403
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = os.environ["TEST_CHANNEL_PREFIX"]  # noqa: F405
BACKTESTS_QUEUE = os.environ["TEST_BACKTESTS_QUEUE"]
"""

MARCH_DAYS = trading_days(date(2024, 3, 4), 6)  # quick runs
LONG_DAYS = trading_days(date(2023, 1, 2), 120)  # a run long enough to cancel


@dataclass
class BacktestSite:
    server: object  # tests.conftest.DaphneServer
    queue: str
    worker: subprocess.Popen
    user: tuple[str, str]

    def shell(self, code: str, timeout: float = 180) -> str:
        return self.server.manage("shell", "-c", code, timeout=timeout).stdout

    def worker_log(self) -> str:
        path = self.server.var_dir / "backtests-worker.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture(scope="session")
def backtest_site(tmp_path_factory, test_redis_url):
    """Daphne (own SQLite database, history store, channel prefix) and a `celery worker` of the same
    environment consuming a private backtests queue; a user `(name, password)` to log in with."""
    import redis

    from tests.conftest import BASE_DIR, DaphneServer, free_port, site_env

    root = tmp_path_factory.mktemp("backtest-site")
    (root / "settings_pkg").mkdir()
    (root / "settings_pkg" / "backtest_site_settings.py").write_text(_SITE_SETTINGS)
    write_history(root / "history", make_history(LONG_DAYS, seed=3))
    write_history(root / "history", make_history(MARCH_DAYS))
    prefix = f"test-{secrets.token_hex(6)}"
    queue = f"test.backtests.{secrets.token_hex(4)}"
    env = site_env(root, "backtest_site_settings", test_redis_url, prefix, TEST_BACKTESTS_QUEUE=queue)
    server = DaphneServer(
        port=free_port(), env=env, redis_url=test_redis_url, channel_prefix=prefix, var_dir=root
    )
    server.manage("migrate", "--noinput", timeout=300)
    password = secrets.token_urlsafe(12)
    server.manage(
        "shell",
        "-c",
        f"from django.contrib.auth import get_user_model; get_user_model().objects.create_user('bt', password={password!r})",
    )
    node = f"{queue}@{socket.gethostname()}"
    with open(root / "backtests-worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "auctionsite", "worker", "-Q", queue, "-n", node]
            + ["--pool", "solo", "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server.children.append(worker)  # stopped with the server
    try:
        server.start()
        yield BacktestSite(server, queue, worker, ("bt", password))
    finally:
        server.stop()
        client = redis.Redis.from_url(test_redis_url)
        try:
            client.delete(queue, f"_kombu.binding.{queue}")
            client.hdel(WORKER_HEARTBEATS_KEY, node)
        finally:
            client.close()
