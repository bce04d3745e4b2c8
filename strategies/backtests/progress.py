"""Progress of a running backtest: the session count the runner reports, the ETA, the throttle, the
cancel check between sessions, and the message sent to the run's Channels group `backtest.<id>`:

    {"type": "backtest.progress", "done": n, "total": m, "eta_s": seconds or None, "state": state}

The pure runner (`strategies.backtest.runner.run_backtest`) knows nothing of this: it is handed an
`ObservedSeries`, a CandleSeries whose session list reports each session to a callback before the
runner starts it (and once more after the last), and that callback may raise `RunCancelled` to stop
the run between two sessions. The runner's results are not touched.
Never write results here, never read the database: the callbacks given by the services do that.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from strategies.backtest.data import CandleSeries

PROGRESS_TYPE = "backtest.progress"
MIN_INTERVAL_S = 0.25  # progress messages and row updates at most ~4 a second per run


class RunCancelled(Exception):
    """Raised between two sessions when the run's cancel was requested."""


def progress_message(done: int, total: int, eta_s: float | None, state: str) -> dict[str, Any]:
    return {
        "type": PROGRESS_TYPE,
        "done": done,
        "total": total,
        "eta_s": None if eta_s is None else round(eta_s, 1),
        "state": state,
    }


def eta_seconds(elapsed_s: float, done: int, total: int) -> float | None:
    """Remaining time at the pace so far; None before the first session finished, 0 when all did."""
    if done >= total:
        return 0.0
    if done <= 0:
        return None
    return elapsed_s / done * (total - done)


@dataclass(frozen=True, slots=True)
class ObservedSeries(CandleSeries):
    """A CandleSeries whose `session_bounds()` calls `on_session(sessions_before)` before each
    session is handed to the runner and `on_session(n)` after the last one."""

    on_session: Callable[[int], None] | None = None

    @classmethod
    def of(cls, series: CandleSeries, on_session: Callable[[int], None]) -> ObservedSeries:
        return cls(
            series.instrument_key,
            series.ts_ms,
            series.open,
            series.high,
            series.low,
            series.close,
            series.volume,
            on_session,
        )

    def session_bounds(self) -> Iterator[tuple[date, int, int]]:  # type: ignore[override]
        bounds = CandleSeries.session_bounds(self)  # slotted dataclass: no zero-argument super()
        return self._observed(bounds)

    def _observed(self, bounds: list[tuple[date, int, int]]) -> Iterator[tuple[date, int, int]]:
        report = self.on_session
        for i, bound in enumerate(bounds):
            if report is not None:
                report(i)
            yield bound
        if report is not None:
            report(len(bounds))


class SessionProgress:
    """Counts sessions over a run (possibly several instruments), checks for cancel before each
    session and reports (done, total, eta_s) through `report` at most every MIN_INTERVAL_S, and
    always for the first and the last session."""

    def __init__(
        self,
        total: int,
        report: Callable[[int, int, float | None], None],
        cancelled: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        self.total = total
        self.report = report
        self.cancelled = cancelled
        self.clock = clock
        self.min_interval_s = min_interval_s
        self.offset = 0  # sessions of the instruments already run
        self.done = 0
        self.started = clock()
        self._last_report: float | None = None

    def instrument(self, offset: int) -> Callable[[int], None]:
        """The `on_session` callback of the next instrument, whose sessions start at `offset`."""
        self.offset = offset
        return self.on_session

    def on_session(self, sessions_before: int) -> None:
        self.done = self.offset + sessions_before
        now = self.clock()
        final = self.done >= self.total
        if final or self._last_report is None or now - self._last_report >= self.min_interval_s:
            self._last_report = now
            self.report(self.done, self.total, eta_seconds(now - self.started, self.done, self.total))
        if not final and self.cancelled():
            raise RunCancelled


def send_progress(run_id: int, message: dict[str, Any], timeout_s: float = 5.0) -> None:
    """Send one message to the run's group from sync code (a Celery task or a view), through this
    process's progress loop: the layer keeps one Redis connection per event loop, so the sends
    reuse it (`async_to_sync` would run a new loop, and open a new connection, on every call)."""
    from channels.layers import get_channel_layer

    from strategies.backtests.models import progress_group

    layer = get_channel_layer()
    if layer is not None:
        future = asyncio.run_coroutine_threadsafe(layer.group_send(progress_group(run_id), message), _loop())
        future.result(timeout_s)


_loop_lock = threading.Lock()
_loop_state: dict[str, Any] = {"loop": None, "pid": None}


def _loop() -> asyncio.AbstractEventLoop:
    """One event loop on a daemon thread per process (a forked child makes its own)."""
    with _loop_lock:
        if _loop_state["loop"] is None or _loop_state["pid"] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="backtest-progress", daemon=True).start()
            _loop_state.update(loop=loop, pid=os.getpid())
        return _loop_state["loop"]
