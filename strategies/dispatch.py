"""Strategy dispatch, in the feed process: after each flush, one claim check per enabled strategy.

`StrategyDispatcher` is a `FeedPipeline.on_flush` hook (registered through the FEED_FLUSH_HOOKS
setting, `flush_hook` being the factory runfeed calls). Each flush reports, per instrument, the
first and last stream id it wrote. The dispatcher coalesces those ranges and, at most every
`interval_s` (50 ms; the feed's stream batches come every ~100 ms), sends each enabled strategy
whose instruments ticked ONE task
`strategies.tasks.evaluate(slug=..., ranges={stream_key: [first_id, last_id]}, prefix=...)` —
never the ticks themselves. The worker reads from its own checkpoint up to `last_id`, so a range
that is coalesced, late or lost only delays ticks, it never drops them.

Each strategy's last claim check is also kept in the Redis hash `LAST_CLAIM_KEY` (slug -> JSON
kwargs): a worker that starts (or restarts after being killed, its in-flight task held by the
broker until its visibility timeout) sends itself that claim first, so it catches up even when the
feed has gone quiet or ended (`strategies.tasks`).

It must never block the feed's loop: the enabled set (slug -> instruments) is read from the
database on a thread and cached for `refresh_s` (~1 s; the flush uses the cached set meanwhile),
and tasks are published to the broker on a thread. A failing database or broker is logged (at most
every 30 s) and retried on the next flush; the feed keeps running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from feeds.groups import tick_stream_key

log = logging.getLogger(__name__)

# The feed writes its streams every ~100 ms and calls the hook after each batch; a minimum gap
# just under that sends every batch at once and coalesces only bursts (a gap of exactly 100 ms
# would hold every other batch for a whole period).
DISPATCH_INTERVAL_S = 0.05
ENABLED_REFRESH_S = 1.0
# A task older than this is dropped by the worker unstarted; the next one covers its ticks anyway.
TASK_EXPIRES_S = 300
LOG_EVERY_S = 30.0
# Redis hash: strategy slug -> the kwargs of the last evaluate task sent to it (JSON).
LAST_CLAIM_KEY = "strategies:last_claim"

EnabledSet = dict[str, tuple[str, ...]]  # slug -> instrument keys


def load_enabled() -> EnabledSet:
    """The enabled strategies and their instruments (runs on a thread, never on the feed loop)."""
    from django.db import close_old_connections

    from strategies.selectors import enabled_strategies

    close_old_connections()
    return {slug: tuple(keys) for slug, keys in enabled_strategies().values_list("slug", "instruments")}


def send_evaluate(slug: str, ranges: dict[str, list[str]], prefix: str) -> None:
    from strategies.tasks import evaluate

    evaluate.apply_async(kwargs={"slug": slug, "ranges": ranges, "prefix": prefix}, expires=TASK_EXPIRES_S)


class StrategyDispatcher:
    def __init__(
        self,
        *,
        prefix: str = "",
        redis=None,  # redis.asyncio.Redis for LAST_CLAIM_KEY, or None
        interval_s: float = DISPATCH_INTERVAL_S,
        refresh_s: float = ENABLED_REFRESH_S,
        load: Callable[[], EnabledSet] = load_enabled,
        send: Callable[[str, dict[str, list[str]], str], None] = send_evaluate,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefix = prefix
        self.redis = redis
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self._load = load
        self._send = send
        self._clock = clock
        self.enabled: EnabledSet | None = None  # None until the first load answered
        self._loaded_at = -1e18
        self._refresh: asyncio.Task | None = None
        self._pending: dict[str, list[str]] = {}  # instrument key -> [first id, last id]
        self._last_sent = -1e18
        self._logged: dict[str, float] = {}
        self.tasks_sent = 0

    async def __call__(self, report) -> None:
        """The on_flush hook: take the flush's ranges, send what is due."""
        for key, (first, last) in report.ranges.items():
            held = self._pending.get(key)
            self._pending[key] = [held[0] if held else first, last]
        self._refresh_if_stale()
        if self.enabled is None and self._refresh is not None and self._last_sent < -1e17:
            # The very first flush: wait for the enabled set once rather than hold every range.
            await asyncio.wait({self._refresh}, timeout=2.0)
            self._refresh_if_stale()
        if self.enabled is None or not self._pending:
            return
        wait = self.interval_s - (self._clock() - self._last_sent)
        if wait > 0:
            # Back-to-back batches (a burst, the final flush): wait out the gap and send them
            # together. Holding them for the next flush instead could hold the last ones forever.
            await asyncio.sleep(wait)
        batch = self.tasks_for(self._pending)
        self._pending = {}
        self._last_sent = self._clock()
        if batch:
            await asyncio.to_thread(self._send_all, batch)
            if self.redis is not None:
                claims = {slug: json.dumps(self.kwargs(slug, ranges)) for slug, ranges in batch}
                try:
                    await self.redis.hset(LAST_CLAIM_KEY, mapping=claims)
                except Exception as exc:
                    self._log_failure("claims", f"strategy dispatch: last claims not kept ({exc!r})")

    def kwargs(self, slug: str, ranges: dict[str, list[str]]) -> dict:
        return {"slug": slug, "ranges": ranges, "prefix": self.prefix}

    def tasks_for(self, pending: dict[str, list[str]]) -> list[tuple[str, dict[str, list[str]]]]:
        """(slug, ranges by stream key) for each enabled strategy whose instruments are in `pending`."""
        out = []
        for slug, instruments in sorted((self.enabled or {}).items()):
            ranges = {
                self.prefix + tick_stream_key(key): list(pending[key])
                for key in instruments
                if key in pending
            }
            if ranges:
                out.append((slug, ranges))
        return out

    def _send_all(self, batch: list[tuple[str, dict[str, list[str]]]]) -> None:
        for slug, ranges in batch:
            try:
                self._send(slug, ranges, self.prefix)
                self.tasks_sent += 1
            except Exception as exc:  # the broker is away: the next flush's task covers these ticks
                self._log_failure("send", f"strategy dispatch: task for {slug} not sent ({exc!r})")

    def _refresh_if_stale(self) -> None:
        if self._refresh is not None and self._refresh.done():
            try:
                self.enabled = self._refresh.result()
                self._loaded_at = self._clock()
            except Exception as exc:  # no database (yet): keep the last known set
                self._loaded_at = self._clock()
                self._log_failure("load", f"strategy dispatch: enabled strategies not read ({exc!r})")
            self._refresh = None
        if self._refresh is None and self._clock() - self._loaded_at >= self.refresh_s:
            self._refresh = asyncio.ensure_future(asyncio.to_thread(self._load))

    def _log_failure(self, what: str, message: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(what, -1e18) >= LOG_EVERY_S:
            self._logged[what] = now
            log.warning(message)


def flush_hook(pipeline) -> StrategyDispatcher:
    """The FEED_FLUSH_HOOKS factory runfeed calls with its pipeline."""
    return StrategyDispatcher(prefix=pipeline.key_prefix, redis=pipeline.redis)
