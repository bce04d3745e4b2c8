"""What the end-to-end strategy tests share: an isolated environment for the processes they start
(runfeed, solo strategy workers) and a wait that keeps the supervisor stepping."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import child_env


def process_env(tmp_path: Path, redis_url: str, history: Path) -> dict[str, str]:
    """The environment of a child process: its own SQLite, var/ and history store, the test Redis,
    fast store flushes, no Upstox token; nothing of the parent's Django/Celery/pytest settings."""
    env = child_env(
        DJANGO_SETTINGS_MODULE="auctionsite.settings",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        VAR_DIR=str(tmp_path / "var"),
        HISTORY_DIR=str(history),
        REDIS_URL=redis_url,
        FEED_FLUSH_MS="100",
    )
    (tmp_path / "var").mkdir(exist_ok=True)
    return env


def wait_for(condition, supervisor, timeout: float, what: str, log=None) -> None:
    """Step the supervisor (restarts, log pumps) until `condition()` holds, or fail with the log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.step()
        if condition():
            return
        time.sleep(0.2)
    tail = log.getvalue()[-4000:] if log is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")
