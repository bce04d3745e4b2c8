"""What a market data source is, for the runfeed loop.

A source (simulated, replay, Upstox) produces normalised `Tick`s and reports its connection and
session state; the runfeed pipeline owns persistence and dispatch. Sources never write to the
history store, Redis or Channels themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from feeds.ticks import Tick

# Session states a source reports (Upstox market status frames, the simulated clock, a replay).
PRE_OPEN = "pre_open"
OPEN = "open"
CLOSED = "closed"


class TickSink(Protocol):
    """The pipeline side. Call only on the feed's event loop thread (threads use
    `loop.call_soon_threadsafe(sink.put, ticks)`)."""

    def put(self, ticks: Iterable[Tick]) -> None: ...

    def set_status(self, **fields: object) -> None:
        """Update feed status fields: connected (bool), session_state (PRE_OPEN/OPEN/CLOSED),
        alert (str, '' when clear), decode_errors (int), reconnects (int)."""


class TickSource(Protocol):
    name: str

    async def run(self, sink: TickSink) -> None:
        """Produce ticks into `sink` until the session ends (return) or the task is cancelled
        (clean up and re-raise CancelledError)."""
