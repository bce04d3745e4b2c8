"""The Upstox market data source for runfeed: the official SDK's `MarketDataStreamerV3` under a
supervisor of our own.

- Subscribes the watchlist indices and their near-month futures in `full` mode, and options ±N
  listed strikes around the money (nearest weekly expiry for Nifty 50, monthly for Nifty Bank, from
  the instrument master), re-centred as the index moves.
- The SDK's callback (on the SDK's socket thread) only hands the frame over (to the decoder
  process, or normalised to `Tick`s with `loop.call_soon_threadsafe`); this module's loop hands the
  ticks to the sink, which persists and dispatches.
- The SDK's own reconnect (fixed interval, gives up) is disabled. The supervisor reconnects with
  exponential backoff and jitter forever, re-reads the token before each attempt (Connect Upstox
  may have stored a new one), resubscribes on every open, and forces a reconnect when no data has
  arrived for `watchdog_s` while the session is open. A 401 stops reconnecting until the token
  changes and raises an alert. Undecodable frames are counted and logged; the feed goes on.

Decoding: the socket and framing are always the SDK's. By default (`decode="process"`, what runfeed
uses) a thin subclass hands each frame's raw bytes to a decoder process (`feeds.upstox.decoder`),
which decodes it (a C decoder, or the SDK's generated `FeedResponse`), normalises it and sends the
ticks back packed; they reach the sink through `put_packed` (or, for a sink without it, as Ticks). Decoding
in-process (`decode="proto"`: the SDK's protobuf decode, our normaliser, on the socket thread)
gives identical ticks but shares the feed's GIL: at 50k ticks/s the normaliser alone needed about
half a core. `decode="dict"` keeps the SDK's own `MessageToDict` path (~100 µs per instrument; it
tops out near 5-15k ticks/s here). All three normalise to identical ticks (tested);
bench/bench_upstox_feed.py measures each.

It never writes to the history store, Redis or Channels (the sink does), and never logs the token.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

from asgiref.sync import sync_to_async
from google.protobuf.message import DecodeError
from upstox_client.feeder.market_data_streamer_v3 import MarketDataStreamerV3

from feeds import contracts
from feeds.sources import CLOSED, OPEN, TickSink
from feeds.ticks import IST, Tick, unpack_tick
from feeds.upstox import client as upstox
from feeds.upstox.normalise import (
    market_status,
    market_status_from_response,
    ticks_from_message,
    ticks_from_response,
)

log = logging.getLogger(__name__)

FULL = "full"
ALERT_401 = "Upstox rejected the access token (401): reconnect via Connect Upstox"
ALERT_NO_TOKEN = "No valid Upstox token: connect via Connect Upstox"
ALERT_AFTER_FAILURES = 3  # consecutive attempts without data before the status carries an alert
# Which expiry each index's options come from (Nifty Bank has had monthly options only since Nov 2024).
# Where frames are decoded and normalised: "process" in a child process (feeds.upstox.decoder; what
# runfeed uses), "proto" on the SDK's socket thread, "dict" through the SDK's own MessageToDict.
DECODE_MODES = ("process", "proto", "dict")
EXPIRY_KIND = {"NSE_INDEX|Nifty 50": contracts.WEEKLY, "NSE_INDEX|Nifty Bank": contracts.MONTHLY}


@dataclass(frozen=True, slots=True)
class OptionContract:
    instrument_key: str
    strike: float
    option_type: str  # CE | PE
    expiry: date


class StrikeLadder:
    """The listed strikes of one underlying's chosen expiry, and the window around the money."""

    def __init__(self, underlying_key: str, options: Iterable[OptionContract], width: int):
        self.underlying_key = underlying_key
        self.width = width
        self._by_strike: dict[float, list[str]] = {}
        for option in options:
            self._by_strike.setdefault(option.strike, []).append(option.instrument_key)
        self.strikes = sorted(self._by_strike)
        self.centre: float | None = None

    def atm(self, price: float) -> float | None:
        """The listed strike nearest to `price` (never a strike rounded into existence)."""
        if not self.strikes:
            return None
        return min(self.strikes, key=lambda s: (abs(s - price), s))

    def recentre(self, price: float) -> bool:
        """Move the centre to the ATM strike when the index has moved far enough; True if moved.

        Hysteresis: switch only once the price is 60% of the way to the new strike, so a price
        sitting on a midpoint does not flap the subscriptions.
        """
        atm = self.atm(price)
        if atm is None or atm == self.centre:
            return False
        if self.centre is not None and abs(price - self.centre) < 0.6 * abs(atm - self.centre):
            return False
        self.centre = atm
        return True

    def keys(self) -> set[str]:
        if self.centre is None:
            return set()
        i = self.strikes.index(self.centre)
        window = self.strikes[max(0, i - self.width) : i + self.width + 1]
        return {key for strike in window for key in self._by_strike[strike]}


@dataclass
class SubscriptionPlan:
    """What the feed subscribes: fixed keys (indices, futures) and option ladders per index."""

    fixed: dict[str, str] = field(default_factory=dict)  # key -> mode
    ladders: dict[str, StrikeLadder] = field(default_factory=dict)
    option_mode: str = FULL

    def desired(self) -> dict[str, set[str]]:
        modes: dict[str, set[str]] = {}
        for key, mode in self.fixed.items():
            modes.setdefault(mode, set()).add(key)
        for ladder in self.ladders.values():
            modes.setdefault(self.option_mode, set()).update(ladder.keys())
        return modes


def load_plan(
    instruments: list[str], on_date: date, strikes_each_side: int, option_mode: str = FULL
) -> SubscriptionPlan:
    """Build the plan from the instrument master in the database (sync: call via sync_to_async)."""
    from feeds.upstox import instruments as master

    plan = SubscriptionPlan(option_mode=option_mode)
    for key in instruments:
        plan.fixed[key] = FULL
        if not key.startswith("NSE_INDEX|"):
            continue
        future = master.near_month_future(key, on_date)
        if future is not None:
            plan.fixed[future] = FULL
        options = master.option_contracts(key, on_date, weekly=EXPIRY_KIND.get(key) == contracts.WEEKLY)
        if options:
            plan.ladders[key] = StrikeLadder(
                key,
                (
                    OptionContract(o.instrument_key, float(o.strike), o.instrument_type, o.expiry)
                    for o in options
                ),
                strikes_each_side,
            )
    return plan


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [initial/2, min(maximum, initial * 2**n)]."""
    ceiling = min(maximum, initial * (2 ** max(0, attempt - 1)))
    return rng.uniform(min(initial / 2, ceiling), ceiling)


def _is_unauthorised(error: object) -> bool:
    return getattr(error, "status_code", None) == 401 or "401 Unauthorized" in str(error)


class _ProtoStreamer(MarketDataStreamerV3):
    """The SDK's streamer, socket and protocol unchanged, handing the decoded protobuf to
    listeners instead of a `MessageToDict` copy (the dict conversion dominates the SDK's cost)."""

    def handle_message(self, ws, message):
        self.emit(self.Event["MESSAGE"], self.decode_protobuf(message))


class _RawStreamer(MarketDataStreamerV3):
    """The SDK's streamer, socket and protocol unchanged, handing each frame's raw bytes to
    `raw_sink` (the decoder process, `feeds.upstox.decoder`) instead of decoding it here."""

    raw_sink: Callable[[bytes], None]

    def handle_message(self, ws, message):
        self.raw_sink(message)


def _unpacking_put(sink: TickSink) -> Callable[..., None]:
    """`put_packed` for a sink that only takes Tick objects."""

    def put_packed(keys: list[str], ts: list[int], packed: list[bytes], records: tuple) -> None:
        sink.put([unpack_tick(p) for p in packed])

    return put_packed


def session_state_by_clock(now: datetime | None = None) -> str:
    """OPEN during the regular session of a trading day (used until a market_info frame arrives)."""
    now = (now or datetime.now(IST)).astimezone(IST)
    if not contracts.is_trading_day(now.date()):
        return CLOSED
    return OPEN if contracts.SESSION_OPEN <= now.time() < contracts.SESSION_CLOSE else CLOSED


class UpstoxSource:
    """`feeds.sources.TickSource` over the Upstox market feed V3."""

    name = "upstox"

    def __init__(
        self,
        instruments: list[str],
        *,
        token_provider: Callable[[], str | None],
        strikes_each_side: int = 5,
        option_mode: str = FULL,
        decode: str = "proto",
        depth_every_ms: int = 0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        watchdog_s: float = 20.0,
        open_timeout_s: float = 20.0,
        token_poll_s: float = 5.0,
        plan: SubscriptionPlan | None = None,
        clock_state: Callable[[], str] = session_state_by_clock,
        seed: int | None = None,
    ):
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}")
        self.instruments = list(instruments)
        self.token_provider = token_provider
        self.strikes_each_side = strikes_each_side
        self.option_mode = option_mode
        self.decode = decode
        # Full depth at most once per instrument per this many ms of feed time (0: every tick);
        # see feeds.upstox.normalise.rows_from_response.
        self.depth_every_ms = max(int(depth_every_ms), 0)
        self._depth_due: dict[str, int] = {}
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.watchdog_s = watchdog_s
        self.open_timeout_s = open_timeout_s
        self.token_poll_s = token_poll_s
        self.plan = plan
        self.clock_state = clock_state
        self._rng = random.Random(seed)
        # Observable state (tests and status).
        self.session_state: str | None = None  # from market_info frames; None until one arrives
        self.decode_errors = 0
        self.reconnects = 0
        self.connections = 0
        self.watchdog_trips = 0
        self._generation = 0
        self._streamer: MarketDataStreamerV3 | None = None
        self._rejected_token: str | None = None
        self._plan_date: date | None = None

    @property
    def decoder_pid(self) -> int | None:
        """The decoder process's pid while `run` runs with decode="process"."""
        decoder = getattr(self, "_decoder", None)
        return decoder.pid if decoder is not None else None

    @classmethod
    def from_settings(cls, instruments: list[str] | None = None, **overrides) -> UpstoxSource:
        """A source for the configured watchlist (or `instruments`), reading the token store.

        No database access here (runfeed may call it inside its event loop); the instrument master
        is read when `run()` starts.
        """
        from django.conf import settings

        from feeds.upstox.tokens import feed_token

        options = {
            "token_provider": feed_token,
            "strikes_each_side": getattr(settings, "UPSTOX_OPTION_STRIKES", 5),
            "decode": getattr(settings, "UPSTOX_FEED_DECODE", "process"),
            "depth_every_ms": getattr(settings, "FEED_DEPTH_EVERY_MS", 0),
        }
        options.update(overrides)
        return cls(list(instruments or settings.WATCHLIST), **options)

    # --- the loop ----------------------------------------------------------------------------
    async def run(self, sink: TickSink) -> None:
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._inbox: collections.deque = collections.deque()  # from the SDK's thread (see _post)
        self._wake_pending = False
        self._loop = loop
        load_from_master = self.plan is None
        if load_from_master:
            await self._load_plan()
        attempt = 0
        sink.set_status(connected=False, decode_errors=0, reconnects=0)
        self._put_packed = getattr(sink, "put_packed", None) or _unpacking_put(sink)
        self._decoder = None
        if self.decode == "process":
            from feeds.upstox.decoder import FrameDecoder

            self._decoder = FrameDecoder(self._queue.put_nowait, depth_every_ms=self.depth_every_ms)
            await self._decoder.start()
        try:
            while True:
                if load_from_master and self._plan_date != datetime.now(IST).date():
                    await self._load_plan()  # a new day: new near-month contracts and expiries
                token = await asyncio.to_thread(self.token_provider)
                if not token:
                    sink.set_status(connected=False, alert=ALERT_NO_TOKEN)
                    await asyncio.sleep(self.token_poll_s)
                    continue
                if token == self._rejected_token:
                    sink.set_status(connected=False, alert=ALERT_401)
                    await asyncio.sleep(self.token_poll_s)
                    continue
                outcome, received_data = await self._connection(sink, token)
                if outcome == "rejected":
                    self._rejected_token = token
                    log.error("Upstox rejected the access token (401); waiting for a new token")
                    sink.set_status(connected=False, alert=ALERT_401)
                    attempt = 0
                    continue
                attempt = 1 if received_data else attempt + 1
                self.reconnects += 1
                delay = backoff_delay(attempt, self.backoff_initial_s, self.backoff_max_s, self._rng)
                log.warning("Upstox feed %s; reconnect %d in %.1fs", outcome, self.reconnects, delay)
                status: dict[str, object] = {"connected": False, "reconnects": self.reconnects}
                if attempt >= ALERT_AFTER_FAILURES:
                    # Never give up, and never silently: a feed that keeps failing is an alert.
                    status["alert"] = f"Upstox feed down: {outcome}; reconnect attempt {attempt}"
                sink.set_status(**status)
                await asyncio.sleep(delay)
        finally:
            self._stop_streamer()
            if self._decoder is not None:
                await self._decoder.close()

    async def _load_plan(self) -> None:
        today = datetime.now(IST).date()
        try:
            self.plan = await sync_to_async(load_plan)(
                self.instruments, today, self.strikes_each_side, self.option_mode
            )
        except Exception:  # no master table yet: stream the watchlist itself rather than nothing
            log.exception("could not read the instrument master; subscribing the watchlist only")
            self.plan = SubscriptionPlan(
                fixed=dict.fromkeys(self.instruments, FULL), option_mode=self.option_mode
            )
        self._plan_date = today
        missing = [k for k in self.instruments if k.startswith("NSE_INDEX|") and k not in self.plan.ladders]
        if missing:
            log.warning("no options in the instrument master for %s: run loadinstruments", ", ".join(missing))

    def _post(self, item: tuple) -> None:
        """From the SDK's thread: hand an item to the feed's loop and return at once.

        Items wait in a deque; the loop is woken (`call_soon_threadsafe`, a write to its self-pipe)
        only when no wake-up is already pending, not once per frame. At tens of thousands of ticks
        a second the per-frame wake-ups were a syscall on each side and a GIL hand-off each, which
        with the pipeline's threads competing for the GIL cost more than the frames themselves."""
        self._inbox.append(item)
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._take_inbox)
            except RuntimeError:  # the loop has closed: the feed is shutting down
                pass

    def _take_inbox(self) -> None:
        """On the loop: move everything posted so far to the queue, in order. The flag is cleared
        first, so an item posted while this runs schedules another call and is never stranded."""
        self._wake_pending = False
        inbox = self._inbox
        put = self._queue.put_nowait
        while inbox:
            put(inbox.popleft())

    def _listeners(self, generation: int) -> dict[str, Callable]:
        post = self._post
        every, due = self.depth_every_ms, self._depth_due
        if self.decode == "proto":

            def on_message(response) -> None:
                ticks = ticks_from_response(response, every, due)
                if ticks:
                    post(("ticks", generation, ticks))
                else:
                    state = market_status_from_response(response)
                    if state is not None:
                        post(("session", generation, state))
        else:

            def on_message(message: dict) -> None:
                ticks = ticks_from_message(message, every, due)
                if ticks:
                    post(("ticks", generation, ticks))
                else:
                    state = market_status(message)
                    if state is not None:
                        post(("session", generation, state))

        return {
            "open": lambda: post(("open", generation, None)),
            "message": on_message,
            "error": lambda error: post(("error", generation, error)),
            "close": lambda code=None, reason=None: post(("close", generation, code)),
        }

    def _start_streamer(self, token: str) -> int:
        self._generation += 1
        generation = self._generation
        api = upstox.api_client(token)
        streamer_class = {"process": _RawStreamer, "proto": _ProtoStreamer}.get(
            self.decode, MarketDataStreamerV3
        )
        streamer = streamer_class(api, instrumentKeys=[], mode=FULL)
        if self.decode == "process":
            streamer.raw_sink = functools.partial(self._decoder.send, generation)
        streamer.auto_reconnect(False)  # before listeners: it emits autoReconnectStopped at once
        # The SDK re-sends one `sub` per mode it tracks on every open: that is our resubscribe.
        for mode, keys in self.plan.desired().items():
            streamer.subscriptions.setdefault(mode, set()).update(keys)
        for event, listener in self._listeners(generation).items():
            streamer.on(event, listener)
        self._streamer = streamer
        streamer.connect()
        self.connections += 1
        return generation

    def _stop_streamer(self) -> None:
        streamer, self._streamer = self._streamer, None
        if streamer is None or streamer.feeder is None:
            return
        # disconnect() sends a close frame and may wait for the reply; never on the loop thread.
        feeder = streamer.feeder

        def close() -> None:
            try:
                streamer.disconnect_valid = True
                if feeder.ws is not None:
                    feeder.ws.keep_running = False
                    feeder.ws.close(status=1000, timeout=1)
            except Exception:  # a socket that is already gone has nothing to close
                log.debug("closing an Upstox feed connection failed", exc_info=True)
            upstox.close_api_client(streamer.api_client)

        threading.Thread(target=close, name="upstox-feed-close", daemon=True).start()

    async def _connection(self, sink: TickSink, token: str) -> tuple[str, bool]:
        """Run one SDK connection until it ends. Returns (outcome, whether any data arrived)."""
        generation = self._start_streamer(token)
        opened_at: float | None = None
        started = last_data = time.monotonic()
        received = False
        tick_interval = max(0.05, min(1.0, self.watchdog_s / 4))
        queue = self._queue
        handled = 0
        try:
            while True:
                # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation when the
                # queue is never empty (a flood), and the feed would never stop.
                try:
                    kind, gen, payload = queue.get_nowait()
                    handled += 1
                    if handled % 64 == 0:
                        await asyncio.sleep(0)  # let the pipeline's flushes and snapshots run
                except asyncio.QueueEmpty:
                    try:
                        async with asyncio.timeout(tick_interval):
                            kind, gen, payload = await queue.get()
                    except TimeoutError:
                        kind = None
                now = time.monotonic()
                if kind == "ticks":
                    # Ticks from an older connection are still real ticks: keep them.
                    if self.decode == "process":
                        keys, ts, packed, records = payload
                        self._put_packed(keys, ts, packed, records)
                    else:
                        sink.put(payload)
                    if gen == generation:
                        last_data = now
                        received = True
                        if self.decode == "process":
                            self._follow_packed(keys, packed)
                        else:
                            self._follow_indices(payload)
                elif kind is not None and gen != generation:
                    pass  # an event from a connection already given up
                elif kind == "session":
                    last_data = now
                    if payload != self.session_state:
                        self.session_state = payload
                        sink.set_status(session_state=payload)
                elif kind == "open":
                    opened_at = last_data = now
                    log.info("Upstox feed connected")
                    sink.set_status(connected=True, alert="")
                elif kind == "error":
                    if isinstance(payload, DecodeError):
                        self.decode_errors += 1
                        log.warning("undecodable Upstox frame (%d so far): %s", self.decode_errors, payload)
                        sink.set_status(decode_errors=self.decode_errors)
                    elif _is_unauthorised(payload):
                        return "rejected", received
                    else:
                        log.warning("Upstox feed error: %s", type(payload).__name__)
                elif kind == "close":
                    return ("closed" if opened_at else "failed to connect"), received
                if opened_at is None:
                    if now - started > self.open_timeout_s:
                        return "timed out connecting", received
                elif now - last_data > self.watchdog_s and self._market_open():
                    self.watchdog_trips += 1
                    log.warning("no Upstox data for %.0fs while the market is open", now - last_data)
                    return "silent (watchdog)", received
        finally:
            self._stop_streamer()

    def _market_open(self) -> bool:
        state = self.session_state if self.session_state is not None else self.clock_state()
        return state == OPEN

    # --- re-centring -------------------------------------------------------------------------
    def _follow_packed(self, keys: list[str], packed: list[bytes]) -> None:
        ladders = self.plan.ladders
        if ladders and not ladders.keys().isdisjoint(keys):
            self._follow_indices([unpack_tick(p) for k, p in zip(keys, packed, strict=True) if k in ladders])

    def _follow_indices(self, ticks: list[Tick]) -> None:
        ladders = self.plan.ladders
        if not ladders:
            return
        moved = []
        for tick in ticks:
            ladder = ladders.get(tick.instrument_key)
            if ladder is not None:
                before = ladder.keys()
                if ladder.recentre(tick.ltp):
                    moved.append((before, ladder.keys()))
        for before, after in moved:
            self._resubscribe(before - after, after - before)

    def _resubscribe(self, removed: set[str], added: set[str]) -> None:
        streamer = self._streamer
        if streamer is None:
            return
        try:
            if removed:
                streamer.unsubscribe(sorted(removed))
            if added:
                streamer.subscribe(sorted(added), self.plan.option_mode)
        except Exception:  # not open yet or dropping: the next open subscribes from the plan
            # The SDK forgets nothing it was told: bring its tracked set in line for the next open.
            for keys in streamer.subscriptions.values():
                keys.difference_update(removed)
            streamer.subscriptions[self.plan.option_mode].update(added)
            log.info("re-centre deferred to the next connection")
