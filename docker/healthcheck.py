"""Container healthchecks for docker/compose.yaml. Exit 0 when healthy, 1 (with a reason) when not.

    python docker/healthcheck.py web [PORT]      the HTTP server answers (any status)
    python docker/healthcheck.py feed            the feed's heartbeat in FEED_STATUS_KEY is fresh
    python docker/healthcheck.py heartbeat NAME  this container's Celery worker (`-n NAME@%h`) or
                                                 beat (NAME `beat`) beats in WORKER_HEARTBEATS_KEY

Each check looks at its own container only: `web` accepts a 503 from /healthz, because another
service being down is not a reason to restart the web server. Runs without Django setup, so a
check costs a Redis round trip and not a Django start.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from feeds.groups import FEED_STATUS_KEY, WORKER_HEARTBEATS_KEY

FEED_FRESH_MS = 15_000
HEARTBEAT_FRESH_MS = 30_000


def _redis():
    import redis

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    return redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)


def _age_ms(value: bytes | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(time.time() * 1000) - int(value)


def check_web(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
            return None
    except urllib.error.HTTPError:
        return None
    except OSError as exc:
        return f"web does not answer on port {port}: {exc.__class__.__name__}"


def check_feed() -> str | None:
    age = _age_ms(_redis().hget(FEED_STATUS_KEY, "heartbeat_ms"))
    if age is None:
        return "no feed heartbeat"
    if age > FEED_FRESH_MS:
        return f"feed heartbeat is {age / 1000:.0f} s old"
    return None


def check_heartbeat(name: str) -> str | None:
    node = f"{name}@{socket.gethostname()}"
    age = _age_ms(_redis().hget(WORKER_HEARTBEATS_KEY, node))
    if age is None:
        return f"no heartbeat from {node}"
    if age > HEARTBEAT_FRESH_MS:
        return f"heartbeat from {node} is {age / 1000:.0f} s old"
    return None


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["web"]:
            problem = check_web(int(argv[1]) if len(argv) > 1 else 8000)
        elif argv[:1] == ["feed"]:
            problem = check_feed()
        elif argv[:1] == ["heartbeat"] and len(argv) == 2:
            problem = check_heartbeat(argv[1])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Exception as exc:  # a healthcheck reports, it never shows a traceback
        problem = f"{exc.__class__.__name__}: {exc}"
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
