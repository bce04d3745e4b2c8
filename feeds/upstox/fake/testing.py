"""Helpers for tests and benchmarks that drive the real SDK against the fake: point the
UPSTOX_* settings at a running fake, record what a source hands its sink, run a source briefly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

from feeds.ticks import Tick
from feeds.upstox import client
from feeds.upstox.fake.server import FakeUpstox

# Where UPSTOX_* point in tests that start no fake: nothing listens there, and it is not Upstox.
UNREACHABLE_API_URL = "http://127.0.0.1:9"
UNREACHABLE_WS_URL = "ws://127.0.0.1:9"


def point_settings_at(settings, fake: FakeUpstox | None) -> None:
    """Point UPSTOX_API_URL / UPSTOX_WS_URL (pytest-django `settings`) at `fake` (or nowhere)."""
    settings.UPSTOX_API_URL = fake.api_url if fake else UNREACHABLE_API_URL
    settings.UPSTOX_WS_URL = fake.ws_url if fake else UNREACHABLE_WS_URL
    settings.UPSTOX_INSTRUMENTS_URL = fake.master_url if fake else UNREACHABLE_API_URL + "/NSE.json.gz"
    settings.UPSTOX_ACCESS_TOKEN = ""
    settings.UPSTOX_ANALYTICS_TOKEN = ""
    settings.UPSTOX_SANDBOX = False
    client.install_ws_url_rewrite(settings.UPSTOX_WS_URL)


class RecordingSink:
    """A `TickSink` that keeps everything (for assertions) or only counts (for benchmarks)."""

    def __init__(self, keep: bool = True, on_ticks: Callable[[list[Tick]], None] | None = None):
        self.keep = keep
        self.on_ticks = on_ticks
        self.ticks: list[Tick] = []
        self.count = 0
        self.status: dict[str, object] = {}
        self.status_history: list[dict[str, object]] = []

    def put(self, ticks: Iterable[Tick]) -> None:
        ticks = list(ticks)
        self.count += len(ticks)
        if self.on_ticks is not None:
            self.on_ticks(ticks)
        if self.keep:
            self.ticks.extend(ticks)

    def set_status(self, **fields: object) -> None:
        self.status.update(fields)
        self.status_history.append(dict(fields))

    def keys(self) -> set[str]:
        return {t.instrument_key for t in self.ticks}


async def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def run_with(source, sink, scenario: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    """Run `source.run(sink)` while `scenario()` acts and asserts; then cancel the source."""

    async def main() -> None:
        task = asyncio.create_task(source.run(sink))
        try:
            await asyncio.wait_for(_guarded(scenario(), task), timeout)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


async def _guarded(scenario: Awaitable[None], task: asyncio.Task) -> None:
    """Await the scenario, failing fast if the source itself dies."""
    scenario_task = asyncio.ensure_future(scenario)
    done, _ = await asyncio.wait({scenario_task, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done and scenario_task not in done:
        scenario_task.cancel()
        task.result()  # raises the source's exception
        raise AssertionError("the source returned before the scenario finished")
    scenario_task.result()
