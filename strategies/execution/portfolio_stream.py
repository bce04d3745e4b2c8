"""Order updates from Upstox's portfolio stream (the SDK's `PortfolioDataStreamer`), handed to the
order service in order, with a reconciliation on every (re)connect.

The SDK runs the socket on its own thread and calls back on it: the callbacks only parse and queue
(a slow callback would stall the socket). One consumer thread takes, in arrival order, "connected"
(-> `on_connect`, the reconciliation: whatever happened while the stream was down is adopted from
the order book) and order updates (-> `on_update`, which applies them to the stored orders).
The SDK reconnects by itself after a drop; when it gives up (retries exhausted, or a 401 after the
token rolled over) the supervisor builds a fresh streamer after `restart_after_s`, with a client
from `client_factory` (which re-reads the token). `status()` says whether it is connected, how
often it connected and when it last heard anything.

No Django here: the handlers come from the caller (`strategies.execution.reconcile.stream_handlers`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import upstox_client

from strategies.execution.upstox import BrokerOrder, broker_order_from

log = logging.getLogger(__name__)

CONNECTED = "connected"
UPDATE = "update"


class PortfolioStream:
    def __init__(
        self,
        client_factory: Callable[[], Any],
        *,
        on_update: Callable[[BrokerOrder], None],
        on_connect: Callable[[], None],
        reconnect_interval: int = 1,
        retry_count: int = 5,
        restart_after_s: float = 5.0,
    ):
        self.client_factory = client_factory
        self.on_update = on_update
        self.on_connect = on_connect
        self.reconnect_interval = reconnect_interval
        self.retry_count = retry_count
        self.restart_after_s = restart_after_s
        self.connected = False
        self.connects = 0
        self.updates = 0
        self.errors = 0
        self.last_message_at: float | None = None
        self.down_since: float | None = time.monotonic()
        self._events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._streamer = None
        self._client = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> PortfolioStream:
        self._connect()
        for target, name in (
            (self._consume, "portfolio-consumer"),
            (self._supervise, "portfolio-supervisor"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._events.put(None)
        self._disconnect()
        for thread in self._threads:
            thread.join(5)

    def status(self) -> dict:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "updates": self.updates,
            "errors": self.errors,
            "last_message_age_s": None
            if self.last_message_at is None
            else round(time.monotonic() - self.last_message_at, 1),
        }

    def _connect(self) -> None:
        with self._lock:
            self._client = self.client_factory()
            streamer = upstox_client.PortfolioDataStreamer(self._client, order_update=True)
            streamer.auto_reconnect(True, self.reconnect_interval, self.retry_count)
            streamer.on("open", self._opened)
            streamer.on("message", self._message)
            streamer.on("close", self._closed)
            streamer.on("error", self._error)
            self._streamer = streamer
            streamer.connect()

    def _disconnect(self) -> None:
        with self._lock:
            streamer, self._streamer = self._streamer, None
        if streamer is not None:
            try:
                streamer.disconnect()
            except Exception as exc:  # already gone: nothing to close
                log.debug("portfolio stream disconnect: %s", exc.__class__.__name__)

    # --- SDK callbacks (its socket thread: parse and queue only) ------------------------------
    def _opened(self, *args: Any) -> None:
        self.connected = True
        self.down_since = None
        self.connects += 1
        self._events.put((CONNECTED, None))

    def _closed(self, *args: Any) -> None:
        if self.connected:
            self.down_since = time.monotonic()
        self.connected = False

    def _error(self, error: Any) -> None:
        self.errors += 1
        if self.connected:
            self.down_since = time.monotonic()
        self.connected = False
        log.warning("portfolio stream error: %s", error.__class__.__name__)

    def _message(self, message: Any) -> None:
        self.last_message_at = time.monotonic()
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            log.warning("portfolio stream: a message that is not JSON was ignored")
            return
        if isinstance(data, dict) and data.get("update_type", "order") == "order" and data.get("order_id"):
            self._events.put((UPDATE, broker_order_from(data)))

    # --- consumer and supervisor -------------------------------------------------------------
    def _consume(self) -> None:
        while not self._stop.is_set():
            event = self._events.get()
            if event is None:
                return
            kind, payload = event
            try:
                if kind == CONNECTED:
                    self.on_connect()
                else:
                    self.on_update(payload)
                    self.updates += 1
            except Exception:  # one bad update must not end the stream; reconciliation repairs
                log.exception("portfolio stream: handling %s failed", kind)

    def _supervise(self) -> None:
        while not self._stop.wait(0.25):
            down = self.down_since
            if not self.connected and down is not None and time.monotonic() - down >= self.restart_after_s:
                log.warning(
                    "portfolio stream down for %.0f s: reconnecting with a fresh client", self.restart_after_s
                )
                self._disconnect()
                self.down_since = time.monotonic()
                try:
                    self._connect()
                except Exception as exc:
                    log.error("portfolio stream: reconnect failed (%s)", exc.__class__.__name__)
