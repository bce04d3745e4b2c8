"""Heartbeats of the Celery processes (workers and beat) in the Redis hash WORKER_HEARTBEATS_KEY.

Each process runs one small daemon thread that writes `name -> now (ms since epoch)` every few
seconds, so `/healthz` can tell a live worker from a dead one without asking Celery (a broadcast
ping costs a round trip to every worker). A clean shutdown removes the entry; a killed process
leaves a stale one, which `/healthz` reports as stale and the beat's housekeeping prunes later.

It must never raise into the process it runs in: a Redis hiccup only skips a beat.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from feeds.groups import WORKER_HEARTBEATS_KEY

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Heartbeat:
    """Writes one process's heartbeat into the shared hash until `stop()` (which removes it)."""

    def __init__(
        self,
        *,
        name: str,
        redis_url: str,
        interval: float = HEARTBEAT_INTERVAL_S,
        key: str = WORKER_HEARTBEATS_KEY,
    ) -> None:
        self.name = name
        self.key = key
        self.interval = interval
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """Write one heartbeat now; False (and a warning) when Redis did not take it."""
        try:
            self._redis.hset(self.key, self.name, now_ms())
        except redis.RedisError as exc:
            log.warning("heartbeat %s not written: %s", self.name, exc.__class__.__name__)
            return False
        return True

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        """Stop beating and remove this process's entry (a clean exit is not a dead worker)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
        try:
            self._redis.hdel(self.key, self.name)
        except redis.RedisError as exc:
            log.warning("heartbeat %s not removed: %s", self.name, exc.__class__.__name__)
        finally:
            self._redis.close()


def prune_stale(client: redis.Redis, *, max_age_ms: int, key: str = WORKER_HEARTBEATS_KEY) -> list[str]:
    """Remove entries older than `max_age_ms` (processes that died without a clean exit)."""
    cutoff = now_ms() - max_age_ms
    # Read-then-delete is not atomic: a worker that beats in between loses one entry for one
    # interval, and its next beat writes it back. Not worth a Lua script.
    stale = [
        name.decode() if isinstance(name, bytes) else name
        for name, value in client.hgetall(key).items()
        if not value.isdigit() or int(value) < cutoff
    ]
    if stale:
        client.hdel(key, *stale)
    return stale
