"""The fake Upstox server: REST on one port (a threaded stdlib HTTP server), WebSocket feeds on
another (a `websockets` asyncio server on its own thread), both on 127.0.0.1.

What it speaks, in Upstox's shapes: feed authorize (REST) and the redirecting market feed V3
(protobuf `FeedResponse`: market_info, initial_feed, live_feed; ltpc, full, option_greeks), the
portfolio stream (JSON order updates), historical and intraday candles, the instrument master
(gzipped JSON), option contracts and chain, the OAuth dialog and token exchange, place/modify/cancel order, order book,
positions and funds, with the `{"status":"error","errors":[...]}` envelope and 401/429 errors.

Test hooks (thread-safe, call from any thread): `drop_connections`, `send_garbage`,
`refuse_401`, `refuse_handshakes`, `fail_next_rest`, `recording` (play a recorded session), `record_to`, `lose_next_order_responses`, `drop_portfolio_connections`, `pause_stream`, `set_session_status`, `set_price`; records `client_frames` (sub,
unsub, change_mode), `feed_connections`, `rest_requests` and `orders`. It never contacts the real
broker and never pretends to be one outside 127.0.0.1 unless told to bind elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import hashlib
import json
import logging
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from feeds import contracts
from feeds.ticks import IST
from feeds.upstox.fake.market import (
    INDEX_BASE_PRICES,
    MODES,
    SimulatedMarket,
    current_ts_suffix,
    feed_frame,
    market_info_frame,
    now_ms,
)
from feeds.upstox.fake.orders import FakeOrderBook, OrderError
from feeds.upstox.fake.recording import FrameRecorder, read_frames

log = logging.getLogger(__name__)
# The WebSocket server logs every connection at INFO; a test run opens hundreds.
_ws_log = logging.getLogger(__name__ + ".ws")
_ws_log.setLevel(logging.WARNING)

MARKET_FEED_PATH = "/v3/feed/market-data-feed"
PORTFOLIO_FEED_PATH = "/v2/feed/portfolio-stream-feed"
MASTER_PATH_RE = re.compile(r"^/market-quote/instruments/exchange/(?P<name>[A-Za-z_]+)\.json\.gz$")
GARBAGE = (
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"  # an unterminated varint tag: never a valid FeedResponse
)
INITIAL_FEED, LIVE_FEED = 0, 1


def error_body(code: str, message: str) -> dict:
    """Upstox's error envelope (it sends both camelCase and snake_case field names)."""
    error = {"errorCode": code, "message": message, "propertyPath": None, "invalidValue": None}
    error.update({"error_code": code, "property_path": None, "invalid_value": None})
    return {"status": "error", "errors": [error]}


def minimal_master(on_date: date) -> list[dict]:
    """The two indices, when no generated master is available."""
    return [
        {
            "segment": "NSE_INDEX",
            "name": key.split("|")[1],
            "exchange": "NSE",
            "instrument_key": key,
            "exchange_token": key.split("|")[1],
            "trading_symbol": key.split("|")[1].upper().replace(" ", ""),
            "instrument_type": "INDEX",
        }
        for key in INDEX_BASE_PRICES
    ]


def default_master(on_date: date) -> list[dict]:
    try:
        from feeds.universe import generate_master
    except ImportError:  # the generator is another package's; the fake still serves the indices
        return minimal_master(on_date)
    return generate_master(on_date)


class _FeedClient:
    """One market feed WebSocket connection: its subscriptions by mode."""

    def __init__(self, connection):
        self.connection = connection
        self.modes: dict[str, str] = {}
        self.version = 0  # bumped on every subscription change (invalidates prebuilt frames)


class FakeUpstox:
    """Start with `start()` (or as a context manager); `api_url` and `ws_url` then name it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ws_port: int = 0,
        master: list[dict] | None = None,
        on_date: date | None = None,
        ticks_per_second: float = 200.0,
        frame_size: int = 50,
        prebuilt_frames: bool = False,
        accepted_tokens: set[str] | None = None,
        session_status: str = "NORMAL_OPEN",
        session_clock: Callable[[], datetime] | None = None,
        rest_rate_per_s: int = 50,
        seed: int = 7,
        volatility: float = 0.0002,
        recording: str | Path | None = None,
        record_to: str | Path | None = None,
        speed: float = 1.0,
    ):
        self.host = host
        self._port = port
        self._ws_port = ws_port
        self.on_date = on_date or datetime.now(IST).date()
        self._master = master
        self.ticks_per_second = ticks_per_second
        self.frame_size = frame_size
        # Bench mode: frames serialised once per subscription set and stamped with the send time
        # (ltt left 0, so the client's tick time is the fake's send time).
        self.prebuilt_frames = prebuilt_frames
        self.accepted_tokens = accepted_tokens  # None: any non-empty token is accepted
        self.segment_status = {"NSE_INDEX": session_status, "NSE_FO": session_status}
        self.session_clock = session_clock
        self.rest_rate_per_s = rest_rate_per_s
        self.market = SimulatedMarket(seed=seed, volatility=volatility)
        self.orders = FakeOrderBook(self.market.price, on_update=self._order_updated)
        self.refuse_401 = False
        self.refuse_handshakes: int | None = None  # test hook: answer feed handshakes with this status
        # Play a recorded session (frames as recorded, at `speed`) instead of the simulated market.
        self.recording = Path(recording) if recording else None
        self.speed = speed
        self._recorder = FrameRecorder(record_to) if record_to else None
        self.fail_next_rest: list[int] = []  # test hook: answer the next REST calls with these statuses
        # Test hook: act on the next N order requests (place/modify/cancel) but send no answer
        # (the connection closes): a response lost after the broker accepted the order.
        self.lose_next_order_responses = 0
        self.paused = False
        self.client_frames: list[dict] = []
        self.rest_requests: list[tuple[str, str]] = []
        self.feed_connections = 0
        self.refused_handshakes = 0
        self.frames_sent = 0
        self.ticks_sent = 0
        self._issued_codes: dict[str, str] = {}  # auth code -> state
        self._ws_codes: set[str] = set()
        self._feed_clients: list[_FeedClient] = []
        self._portfolio_clients: list = []
        self._rest_times: collections.deque[float] = collections.deque()
        self._rest_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws_thread: threading.Thread | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def master(self) -> list[dict]:
        if self._master is None:
            self._master = default_master(self.on_date)
            self.market.instruments = {row["instrument_key"]: row for row in self._master}
        return self._master

    def start(self) -> FakeUpstox:
        self.market.instruments = {row["instrument_key"]: row for row in self.master}
        self._http = ThreadingHTTPServer((self.host, self._port), _rest_handler(self))
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="fake-upstox-rest", daemon=True
        )
        self._http_thread.start()
        ready = threading.Event()
        self._ws_thread = threading.Thread(
            target=self._run_ws, args=(ready,), name="fake-upstox-ws", daemon=True
        )
        self._ws_thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Upstox WebSocket server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._ws_thread.join(10)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._recorder is not None:
            self._recorder.close()

    def __enter__(self) -> FakeUpstox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._http.server_address[1]

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self._ws_port}"

    @property
    def master_url(self) -> str:
        return f"{self.api_url}/market-quote/instruments/exchange/NSE.json.gz"

    def _run_ws(self, ready: threading.Event) -> None:
        asyncio.run(self._serve_ws(ready))

    async def _serve_ws(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._ws_handler,
            self.host,
            self._ws_port,
            process_request=self._process_request,
            ping_interval=None,  # the real feed sends no pings either: silence stays silence
            max_size=None,
            compression=None,
            logger=_ws_log,
        ) as server:
            self._ws_port = server.sockets[0].getsockname()[1]
            ready.set()
            session_task = asyncio.create_task(self._follow_session_clock())
            await self._stop.wait()
            session_task.cancel()
            for client in list(self._feed_clients) + list(self._portfolio_clients):
                connection = client.connection if isinstance(client, _FeedClient) else client
                connection.transport.abort()

    # --- hooks -------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], object]) -> None:
        """Run `fn` on the WebSocket loop and wait for it."""

        async def run():
            result = fn()
            if asyncio.iscoroutine(result):
                await result

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def drop_connections(self, code: int | None = None) -> None:
        """Drop every feed connection: abruptly (no close frame) or with a close `code`."""

        async def drop():
            for client in list(self._feed_clients):
                if code is None:
                    client.connection.transport.abort()
                else:
                    await client.connection.close(code, "fake: closing")

        self._call(drop)

    def send_garbage(self, count: int = 1, payload: bytes = GARBAGE) -> None:
        async def send():
            for client in list(self._feed_clients):
                for _ in range(count):
                    await client.connection.send(payload)

        self._call(send)

    def drop_portfolio_connections(self) -> None:
        """Drop every portfolio stream connection abruptly (no close frame)."""

        async def drop():
            for connection in list(self._portfolio_clients):
                connection.transport.abort()

        self._call(drop)

    def pause_stream(self, paused: bool = True) -> None:
        """Stop sending data while keeping connections open (a silent, half-open feed)."""
        self.paused = paused

    def set_session_status(self, status: str, segments: tuple[str, ...] = ("NSE_INDEX", "NSE_FO")) -> None:
        """Change the segments' market status and broadcast a market_info frame."""
        for segment in segments:
            self.segment_status[segment] = status
        self._call(self._broadcast_market_info)

    def set_price(self, key: str, price: float) -> None:
        self.market.set_price(key, price)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def subscriptions(self) -> dict[str, str]:
        """Key → mode over all open feed connections (the latest connection wins)."""
        merged: dict[str, str] = {}
        for client in list(self._feed_clients):
            merged.update(client.modes)
        return merged

    def clock_ms(self) -> int:
        if self.session_clock is not None:
            return int(self.session_clock().timestamp() * 1000)
        return now_ms()

    # --- tokens ------------------------------------------------------------------------------
    def token_ok(self, authorization: str | None) -> bool:
        if self.refuse_401 or not authorization or not authorization.startswith("Bearer "):
            return False
        token = authorization[len("Bearer ") :].strip()
        if not token:
            return False
        return self.accepted_tokens is None or token in self.accepted_tokens

    def issue_token(self) -> str:
        token = "fake-" + secrets.token_urlsafe(24)
        if self.accepted_tokens is not None:
            self.accepted_tokens.add(token)
        return token

    # --- WebSocket side ----------------------------------------------------------------------
    def _process_request(self, connection, request):
        path, _, query = request.path.partition("?")
        if self.refuse_handshakes is not None:
            self.refused_handshakes += 1
            return _json_response(
                self.refuse_handshakes, "Refused", error_body("UDAPI100500", "Service unavailable")
            )
        for base in (MARKET_FEED_PATH, PORTFOLIO_FEED_PATH):
            if path == base:
                if not self.token_ok(request.headers.get("Authorization")):
                    self.refused_handshakes += 1
                    return _json_response(
                        401, "Unauthorized", error_body("UDAPI100050", "Invalid token used to access API")
                    )
                code = secrets.token_hex(8)
                self._ws_codes.add(code)
                location = f"{self.ws_url}{base}/authorized?code={code}" + (f"&{query}" if query else "")
                return Response(302, "Found", Headers([("Location", location), ("Content-Length", "0")]), b"")
            if path == base + "/authorized":
                code = parse_qs(query).get("code", [""])[0]
                if code not in self._ws_codes:
                    self.refused_handshakes += 1
                    return _json_response(
                        403, "Forbidden", error_body("UDAPI100011", "Invalid or used feed code")
                    )
                self._ws_codes.discard(code)
                return None
        return _json_response(404, "Not Found", error_body("UDAPI100060", "Resource not found"))

    async def _ws_handler(self, connection) -> None:
        path = connection.request.path.partition("?")[0]
        if path.startswith(PORTFOLIO_FEED_PATH):
            self._portfolio_clients.append(connection)
            try:
                await connection.wait_closed()
            finally:
                self._portfolio_clients.remove(connection)
            return
        client = _FeedClient(connection)
        self._feed_clients.append(client)
        self.feed_connections += 1
        streamer = asyncio.create_task(self._replay(client) if self.recording else self._stream_live(client))
        try:
            if not self.recording:
                await self._send(client, market_info_frame(self.segment_status, self.clock_ms()))
            async for message in connection:
                await self._on_client_frame(client, message)
        except ConnectionClosed:
            pass
        finally:
            streamer.cancel()
            self._feed_clients.remove(client)

    async def _on_client_frame(self, client: _FeedClient, message: bytes | str) -> None:
        try:
            request = json.loads(message)
            method = request["method"]
            keys = list(request["data"]["instrumentKeys"])
        except (ValueError, KeyError, TypeError):
            return  # the real feed ignores malformed requests
        self.client_frames.append(request)
        mode = request["data"].get("mode")
        if method in ("sub", "change_mode"):
            if mode not in MODES:
                return
            for key in keys:
                client.modes[key] = mode
            client.version += 1
            if method == "sub" and not self.paused and not self.recording:
                frame = feed_frame(self.market, [(k, mode) for k in keys], INITIAL_FEED, self.clock_ms())
                await self._send(client, frame)
        elif method == "unsub":
            for key in keys:
                client.modes.pop(key, None)
            client.version += 1

    async def _stream_live(self, client: _FeedClient) -> None:
        """Send live_feed frames for the client's subscriptions at `ticks_per_second`."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        prebuilt: list[bytes] = []
        prebuilt_version = -1
        while True:
            if self.paused or not client.modes:
                await asyncio.sleep(0.05)
                start, sent = loop.time(), 0
                continue
            if self.prebuilt_frames:
                if prebuilt_version != client.version:
                    prebuilt, prebuilt_version = self._prebuild(client), client.version
                frames = [(frame, count) for frame, count in prebuilt]
            else:
                self.market.step()
                items = sorted(client.modes.items())
                frames = [
                    (items[i : i + self.frame_size], len(items[i : i + self.frame_size]))
                    for i in range(0, len(items), self.frame_size)
                ]
            for frame, count in frames:
                if self.paused:
                    break
                if self.prebuilt_frames:
                    data = frame + current_ts_suffix(now_ms())
                else:
                    data = feed_frame(self.market, frame, LIVE_FEED, self.clock_ms())
                await self._send(client, data)
                self.frames_sent += 1
                self.ticks_sent += count
                sent += count
                delay = start + sent / self.ticks_per_second - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif sent % (self.frame_size * 20) < count:
                    await asyncio.sleep(0)  # let client frames and hooks through in a flood
            if client.version != prebuilt_version and self.prebuilt_frames:
                continue

    async def _send(self, client: _FeedClient, frame: bytes) -> None:
        await client.connection.send(frame)
        if self._recorder is not None:
            self._recorder.write(frame)

    async def _replay(self, client: _FeedClient) -> None:
        """Send a recorded session's frames with their recorded spacing (divided by `speed`)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for offset_ms, frame in read_frames(self.recording):
            while self.paused:
                await asyncio.sleep(0.05)
                start += 0.05
            delay = start + offset_ms / 1000 / self.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await client.connection.send(frame)
            self.frames_sent += 1

    def _prebuild(self, client: _FeedClient) -> list[tuple[bytes, int]]:
        items = sorted(client.modes.items())
        out = []
        for i in range(0, len(items), self.frame_size):
            chunk = items[i : i + self.frame_size]
            # ts 0: ltt omitted, so each tick's time is the frame's currentTs (the send time).
            out.append((feed_frame(self.market, chunk, LIVE_FEED, 0), len(chunk)))
        return out

    async def _broadcast_market_info(self) -> None:
        frame = market_info_frame(self.segment_status, self.clock_ms())
        for client in list(self._feed_clients):
            try:
                await self._send(client, frame)
            except ConnectionClosed:
                pass

    async def _follow_session_clock(self) -> None:
        """With a session clock (simulated day), derive the market status from its time."""
        if self.session_clock is None:
            return
        while True:
            status = session_status_at(self.session_clock())
            if status != self.segment_status.get("NSE_FO"):
                self.segment_status = {"NSE_INDEX": status, "NSE_FO": status}
                await self._broadcast_market_info()
            await asyncio.sleep(0.1)

    def _order_updated(self, order: dict) -> None:
        if self._loop is None or not self._portfolio_clients:
            return
        text = json.dumps({"update_type": "order", **order})

        async def push():
            for connection in list(self._portfolio_clients):
                try:
                    await connection.send(text)
                except ConnectionClosed:
                    pass

        asyncio.run_coroutine_threadsafe(push(), self._loop)

    # --- REST side ---------------------------------------------------------------------------
    def rate_limited(self) -> bool:
        with self._rest_lock:
            now = time.monotonic()
            while self._rest_times and now - self._rest_times[0] > 1.0:
                self._rest_times.popleft()
            if len(self._rest_times) >= self.rest_rate_per_s:
                return True
            self._rest_times.append(now)
            return False

    def candles(self, key: str, unit: str, interval: int, first: date, last: date) -> list[list]:
        """Deterministic candles for [first, last], newest first, in Upstox's row shape."""
        rows = []
        day = last
        while day >= first:
            if contracts.is_trading_day(day):
                rows.extend(reversed(self._day_candles(key, unit, interval, day)))
            day -= timedelta(days=1)
        return rows

    def _day_candles(
        self, key: str, unit: str, interval: int, day: date, until: datetime | None = None
    ) -> list[list]:
        seed = int.from_bytes(hashlib.sha256(f"{key}|{day}".encode()).digest()[:8], "big")
        rng = random.Random(seed)
        base = INDEX_BASE_PRICES.get(key, 100.0) * (1 + (seed % 1000 - 500) / 20_000)
        is_index = "INDEX" in key
        open_at = datetime.combine(day, contracts.SESSION_OPEN, IST)
        minutes = 375
        out = []
        price = base
        step = {"minutes": 1, "hours": 60, "days": minutes}.get(unit, 1) * interval
        for start in range(0, minutes, step):
            ts = open_at + timedelta(minutes=start)
            if until is not None and ts > until:
                break
            o = price
            closes = [
                price := max(0.05, price * (1 + rng.gauss(0, 0.0006)))
                for _ in range(min(step, minutes - start))
            ]
            h, low, c = max(o, *closes), min(o, *closes), closes[-1]
            volume = 0 if is_index else rng.randint(10, 400) * 75 * len(closes)
            oi = 0 if is_index else 1_000_000 + rng.randint(0, 5000) * 75
            out.append([ts.isoformat(), round(o, 2), round(h, 2), round(low, 2), round(c, 2), volume, oi])
        if unit == "days":
            # One daily candle: first open, extreme high/low, last close; stamped at midnight.
            o, c = out[0][1], out[-1][4]
            h, low = max(r[2] for r in out), min(r[3] for r in out)
            vol = sum(r[5] for r in out)
            out = [
                [datetime.combine(day, datetime.min.time(), IST).isoformat(), o, h, low, c, vol, out[-1][6]]
            ]
        return out

    def intraday_candles(self, key: str, unit: str, interval: int) -> list[list]:
        now = datetime.fromtimestamp(self.clock_ms() / 1000, IST)
        if not contracts.is_trading_day(now.date()):
            return []
        rows = self._day_candles(key, unit, interval, now.date(), until=now - timedelta(minutes=1))
        return list(reversed(rows))


def session_status_at(moment: datetime) -> str:
    """The NSE F&O market status at an IST time (pre-open 09:00–09:15 for the simulated day)."""
    t = moment.astimezone(IST).time()
    if t < datetime.strptime("09:08", "%H:%M").time():
        return "PRE_OPEN_START"
    if t < contracts.SESSION_OPEN:
        return "PRE_OPEN_END"
    if t < contracts.SESSION_CLOSE:
        return "NORMAL_OPEN"
    return "NORMAL_CLOSE"


def _json_response(status: int, reason: str, body: dict) -> Response:
    data = json.dumps(body).encode()
    return Response(
        status,
        reason,
        Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))]),
        data,
    )


_HISTORY_RE = re.compile(
    r"^/v3/historical-candle/(?P<key>[^/]+)/(?P<unit>\w+)/(?P<interval>\d+)/(?P<to>[\d-]+)(?:/(?P<from>[\d-]+))?$"
)
_INTRADAY_RE = re.compile(r"^/v3/historical-candle/intraday/(?P<key>[^/]+)/(?P<unit>\w+)/(?P<interval>\d+)$")
_FAILURES = {
    429: ("UDAPI10005", "Too Many Request Sent"),
    401: ("UDAPI100050", "Invalid token used to access API"),
}
_MAX_RANGE_DAYS = {"minutes": 31, "hours": 92, "days": 3660}


def _rest_handler(fake: FakeUpstox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeUpstox/1.0"

        def log_message(self, format, *args):
            log.debug("fake upstox: " + format, *args)

        def _send(self, status: int, body: dict | bytes, content_type: str = "application/json", headers=()):
            data = body if isinstance(body, bytes) else json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: str, message: str):
            self._send(status, error_body(code, message))

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return {}
            if (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
                return {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            return json.loads(raw)

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_PUT(self):
            self._route("PUT")

        def do_DELETE(self):
            self._route("DELETE")

        def _route(self, method: str):
            url = urlsplit(self.path)
            path, query = url.path, {k: v[0] for k, v in parse_qs(url.query).items()}
            fake.rest_requests.append((method, path))
            try:
                body = self._body()  # always drain it: a keep-alive connection must not see leftovers
            except ValueError:
                body = None
            losing = bool(fake.lose_next_order_responses and "/order/" in path and method != "GET")
            if losing:
                fake.lose_next_order_responses -= 1
                self._send = lambda *args, **kwargs: None  # act, then answer nothing
                self.close_connection = True
            elif fake.fail_next_rest:
                status = fake.fail_next_rest.pop(0)
                code, message = _FAILURES.get(status, ("UDAPI100500", "Something went wrong"))
                return self._error(status, code, message)
            if body is None:
                return self._error(400, "UDAPI1000", "Malformed request body")
            # Unauthenticated endpoints: the master (a public asset) and the OAuth flow.
            if method == "GET" and MASTER_PATH_RE.match(path):
                data = gzip.compress(json.dumps(fake.master, default=str).encode())
                return self._send(200, data, "application/gzip")
            if method == "GET" and path == "/v2/login/authorization/dialog":
                return self._dialog(query)
            if method == "POST" and path == "/v2/login/authorization/token":
                return self._token(body)
            # The SDK sends no token for candle calls (HistoryV3Api has no auth settings).
            if method == "GET" and (m := _INTRADAY_RE.match(path)):
                rows = fake.intraday_candles(unquote(m["key"]), m["unit"], int(m["interval"]))
                return self._send(200, {"status": "success", "data": {"candles": rows}})
            if method == "GET" and (m := _HISTORY_RE.match(path)):
                return self._history(unquote(m["key"]), m["unit"], int(m["interval"]), m["to"], m["from"])
            if not fake.token_ok(self.headers.get("Authorization")):
                return self._error(401, "UDAPI100050", "Invalid token used to access API")
            if fake.rate_limited():
                return self._error(429, "UDAPI10005", "Too Many Request Sent")
            try:
                return self._authenticated(method, path, query, body)
            except OrderError as e:
                return self._error(e.status, e.code, e.message)

        def _authenticated(self, method: str, path: str, query: dict, body: dict):
            if method == "GET" and path in (
                MARKET_FEED_PATH + "/authorize",
                "/v2/feed/market-data-feed/authorize",
            ):
                uri = f"{fake.ws_url}{MARKET_FEED_PATH}"
                return self._send(
                    200,
                    {
                        "status": "success",
                        "data": {"authorized_redirect_uri": uri, "authorizedRedirectUri": uri},
                    },
                )
            if method == "GET" and path == PORTFOLIO_FEED_PATH + "/authorize":
                uri = f"{fake.ws_url}{PORTFOLIO_FEED_PATH}"
                return self._send(
                    200,
                    {
                        "status": "success",
                        "data": {"authorized_redirect_uri": uri, "authorizedRedirectUri": uri},
                    },
                )
            if method == "GET" and path in ("/v2/option/contract", "/v2/option/chain"):
                return self._options(path, query)
            if method == "POST" and path in ("/v3/order/place", "/v2/order/place"):
                ids = fake.orders.place(body)
                data = {"order_ids": ids} if path.startswith("/v3") else {"order_id": ids[0]}
                return self._send(200, {"status": "success", "data": data, "metadata": {"latency": 12}})
            if method == "PUT" and path in ("/v3/order/modify", "/v2/order/modify"):
                order_id = fake.orders.modify(body)
                return self._send(
                    200, {"status": "success", "data": {"order_id": order_id}, "metadata": {"latency": 9}}
                )
            if method == "DELETE" and path in ("/v3/order/cancel", "/v2/order/cancel"):
                order_id = fake.orders.cancel(query.get("order_id", ""))
                return self._send(
                    200, {"status": "success", "data": {"order_id": order_id}, "metadata": {"latency": 8}}
                )
            if method == "GET" and path == "/v2/order/retrieve-all":
                return self._send(200, {"status": "success", "data": fake.orders.order_book()})
            if method == "GET" and path == "/v2/portfolio/short-term-positions":
                return self._send(200, {"status": "success", "data": fake.orders.positions()})
            if method == "GET" and path == "/v2/user/get-funds-and-margin":
                return self._send(200, {"status": "success", "data": fake.orders.funds()})
            return self._error(404, "UDAPI100060", "Resource not Found.")

        def _history(self, key: str, unit: str, interval: int, to: str, from_: str | None):
            try:
                last = date.fromisoformat(to)
                first = (
                    date.fromisoformat(from_)
                    if from_
                    else last - timedelta(days=_MAX_RANGE_DAYS.get(unit, 31) - 1)
                )
            except ValueError:
                return self._error(400, "UDAPI1022", "Invalid date format")
            if unit not in _MAX_RANGE_DAYS:
                return self._error(400, "UDAPI1146", "Invalid unit")
            if first > last:
                return self._error(400, "UDAPI1148", "to_date must be greater than or equal to from_date")
            if unit == "minutes" and interval <= 15 and (last - first).days >= _MAX_RANGE_DAYS["minutes"]:
                return self._error(
                    400, "UDAPI1148", "Invalid date range: 1-15 minute candles cover at most one month"
                )
            rows = fake.candles(key, unit, interval, first, last)
            return self._send(200, {"status": "success", "data": {"candles": rows}})

        def _options(self, path: str, query: dict):
            """Option contracts of an underlying (optionally one expiry), or its priced chain."""
            underlying = query.get("instrument_key", "")
            expiry = query.get("expiry_date")
            if not underlying or (path.endswith("chain") and not expiry):
                return self._error(400, "UDAPI1087", "Invalid instrument_key or expiry_date")
            contracts_ = []
            for row in fake.master:
                if row.get("underlying_key") != underlying or row.get("instrument_type") not in ("CE", "PE"):
                    continue
                row_expiry = datetime.fromtimestamp(row["expiry"] / 1000, IST).date().isoformat()
                if expiry is None or row_expiry == expiry:
                    contracts_.append({**row, "expiry": row_expiry})
            if path.endswith("contract"):
                return self._send(200, {"status": "success", "data": contracts_})
            spot = fake.market.price(underlying)
            strikes: dict[float, dict] = {}
            for row in contracts_:
                strike = strikes.setdefault(
                    row["strike_price"],
                    {
                        "expiry": row["expiry"],
                        "pcr": 1.0,
                        "strike_price": row["strike_price"],
                        "underlying_key": underlying,
                        "underlying_spot_price": spot,
                    },
                )
                ltp = fake.market.price(row["instrument_key"])
                side = "call_options" if row["instrument_type"] == "CE" else "put_options"
                strike[side] = {
                    "instrument_key": row["instrument_key"],
                    "market_data": {
                        "ltp": ltp, "volume": 0, "oi": 0.0, "close_price": ltp, "bid_price": max(0.05, ltp - 0.05),
                        "bid_qty": 750, "ask_price": ltp + 0.05, "ask_qty": 600, "prev_oi": 0.0,
                    },
                    "option_greeks": {"vega": 9.5, "theta": -12.0, "gamma": 0.0012, "delta": 0.5, "iv": 14.0, "pop": 50.0},
                }  # fmt: skip
            return self._send(200, {"status": "success", "data": [strikes[k] for k in sorted(strikes)]})

        def _dialog(self, query: dict):
            """The login page a person would see; the fake logs in at once and redirects back."""
            redirect_uri = query.get("redirect_uri")
            if not redirect_uri or not query.get("client_id"):
                return self._error(400, "UDAPI100068", "Check your 'client_id' and 'redirect_uri'")
            code = secrets.token_hex(6)
            fake._issued_codes[code] = query.get("state", "")
            params = {"code": code}
            if query.get("state"):
                params["state"] = query["state"]
            location = (
                redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(params, quote_via=quote)
            )
            self._send(302, b"", "text/plain", headers=[("Location", location)])

        def _token(self, body: dict):
            code = body.get("code", "")
            if code not in fake._issued_codes or body.get("grant_type") != "authorization_code":
                return self._error(400, "UDAPI100057", "Invalid Auth code")
            del fake._issued_codes[code]
            token = fake.issue_token()
            return self._send(
                200,
                {
                    "email": "trader@example.com",
                    "exchanges": ["NSE", "NFO"],
                    "products": ["D", "I"],
                    "broker": "UPSTOX",
                    "user_id": "FAKE01",
                    "user_name": "Fake Trader",
                    "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
                    "user_type": "individual",
                    "poa": False,
                    "is_active": True,
                    "access_token": token,
                    "extended_token": None,
                },
            )

    return Handler
