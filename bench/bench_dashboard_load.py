"""Dashboard under load: 50 WebSocket pages on a real Daphne while the feed runs at 5,000 ticks/s.

Real processes on 127.0.0.1 only: a Daphne (`auctionsite.asgi`) over a fresh SQLite database, and a
feed process (`--feeder`, this file) running the real `FeedPipeline` with the history writer and
the real `FEED_FLUSH_HOOKS` (the auction publisher; strategy dispatch finds no strategies) fed by a
synthetic source at a fixed tick rate (two indices, their futures and 100 options). Both use a Redis
database of their own (BENCH_REDIS_DB, default 12; the bench's keys are removed at the end, never
FLUSHDB) and a private channel prefix. The pages are `websockets` clients with a logged-in session.

Prints one JSON object:
* `delivery_ms_p50/p99/max`: from the feed's send (the message's wall-clock `ts_ms`) to a page's
  receipt, for `market.snapshot` and `auction.state` messages (the goal: p99 < 100 ms);
* `auction_age_ms_p50/p99`: from the newest index tick an `auction.state` describes to its receipt
  (includes the stream flush and the ~0.5 s conflation, by design);
* `lost_auction_states`: auction states some page got and another did not (must be 0), and
  `final_state_mismatches`: pages whose last state differs from the one kept in Redis (must be 0);
* `cpu_percent_daphne/feed` (psutil, over the measured window; 100 = one core), ticks sent.
Usage: python bench/bench_dashboard_load.py [--quick]   (--quick: 10 clients-seconds… 10 s, 50 pages)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from datetime import datetime
from datetime import time as dtime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = 50
TICKS_PER_S = 5_000
NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"
FUTURES = {
    NIFTY: ("NSE_FO|BENCHNF", "NIFTY FUT 30 DEC 25"),
    BANK: ("NSE_FO|BENCHBNF", "BANKNIFTY FUT 30 DEC 25"),
}
SETTINGS = textwrap.dedent(
    """
    import os
    from auctionsite.settings import *  # noqa: F403
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = os.environ["BENCH_CHANNEL_PREFIX"]  # noqa: F405
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * q))], 2)


# --- the feed process -------------------------------------------------------------------------------


class RateSource:
    """Ticks at a fixed rate, in 10 ms batches, on a session clock that starts at 09:15 IST today
    (so the auction engine is inside its session whatever the wall clock says)."""

    name = "bench"

    def __init__(self, rate: int, seconds: float, wall0: float | None = None) -> None:
        from feeds.ticks import IST

        self.rate = rate
        self.seconds = seconds
        # Today in IST (Django sets the process TZ in the feeder, not in the bench: name it).
        today = datetime.now(IST).date()
        self.open_ms = int(datetime.combine(today, dtime(9, 15), tzinfo=IST).timestamp() * 1000)
        self.sent = 0
        self.wall0 = wall0 or time.time()  # the wall-clock instant the session clock reads 09:15

    async def run(self, sink) -> None:
        from feeds.ticks import Tick

        rng = random.Random(5)
        price = {NIFTY: 26_000.0, BANK: 59_000.0}
        options = [f"NSE_FO|BENCHOPT{i}" for i in range(100)]
        sink.set_status(connected=True, session_state="open")
        started = time.monotonic()
        wall0 = self.wall0
        while (elapsed := time.monotonic() - started) < self.seconds:
            n = int(self.rate * elapsed) - self.sent  # on schedule by the clock, whatever the loop's lag
            ts = self.open_ms + int((time.time() - wall0) * 1000)
            batch = []
            for i in range(n):
                r = i % 20
                if r < 2:  # 10% index ticks, 10% futures, 80% options
                    key = NIFTY if r == 0 else BANK
                    price[key] = round((price[key] + rng.gauss(0, 1.5)) * 20) / 20
                    batch.append(Tick(key, ts, price[key]))
                elif r < 4:
                    key = NIFTY if r == 2 else BANK
                    batch.append(Tick(FUTURES[key][0], ts, round((price[key] + 80) * 20) / 20, ltq=75))
                else:
                    batch.append(
                        Tick(options[rng.randrange(100)], ts, round(rng.uniform(50, 300) * 20) / 20, ltq=75)
                    )
            sink.put(batch)
            self.sent += len(batch)
            await sink.drain()
            await asyncio.sleep(0.01)


async def feeder(seconds: float, wall0: float) -> None:
    import django

    django.setup()
    import redis.asyncio as aioredis
    from channels.layers import get_channel_layer
    from django.conf import settings
    from django.utils.module_loading import import_string

    from feeds.pipeline import FeedPipeline
    from persistence.writer import HistoryWriter

    writer = HistoryWriter(settings.HISTORY_DIR, flush_interval=None)
    redis = aioredis.from_url(settings.REDIS_URL)
    names = {NIFTY: "Nifty 50", BANK: "Nifty Bank", **{f: n for f, n in FUTURES.values()}}
    pipeline = FeedPipeline(
        source_name="bench",
        writer=writer,
        redis=redis,
        channel_layer=get_channel_layer(),
        snapshot_keys=list(names),
        names=names,
        flush_ms=settings.FEED_FLUSH_MS,
        snapshot_ms=settings.FEED_SNAPSHOT_MS,
    )
    for path in settings.FEED_FLUSH_HOOKS:
        hook = import_string(path)(pipeline)
        if hook is not None:
            pipeline.on_flush.append(hook)
    source = RateSource(TICKS_PER_S, seconds, wall0)
    await pipeline.run(source)
    await redis.aclose()
    print(json.dumps({"ticks_sent": source.sent, "ticks_streamed": pipeline.stats.ticks_streamed}))


# --- the pages ---------------------------------------------------------------------------------------


class Page:
    def __init__(self) -> None:
        self.delivery: list[float] = []
        self.delivery_at: list[float] = []  # seconds into the measured window
        self.auction_age: list[float] = []
        self.auction_seen: set[tuple[str, int]] = set()
        self.last_auction: dict[str, dict] = {}
        self.messages = 0


async def run_page(
    url: str,
    cookie: str,
    origin: str,
    page: Page,
    stop: asyncio.Event,
    measure_from: list[float],
    open_ms: int,
    wall0: list[float],
) -> None:
    import websockets

    async with websockets.connect(
        url, additional_headers={"Cookie": cookie, "Origin": origin}, max_size=2**24
    ) as ws:
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            now = time.time() * 1000
            message = json.loads(raw)
            page.messages += 1
            kind = message.get("type")
            if kind == "auction.state":
                page.last_auction[message["instrument_key"]] = message
            if not measure_from or time.time() < measure_from[0]:
                continue
            if kind in ("market.snapshot", "auction.state") and isinstance(message.get("ts_ms"), int):
                page.delivery.append(now - message["ts_ms"])
                page.delivery_at.append(now / 1000 - measure_from[0])
            if kind == "auction.state":
                page.auction_seen.add((message["instrument_key"], message["ts_ms"]))
                tick_ms = message["state"].get("now_ms")
                if tick_ms and wall0:
                    page.auction_age.append(now - (wall0[0] * 1000 + (tick_ms - open_ms)))


def hot_path_ticks_per_s(n: int = 300_000) -> float:
    """The publisher's per-tick work alone (engine + candle), on one session of index ticks."""
    from auctionsite.auction_feed import InstrumentAuction
    from feeds.ticks import IST
    from strategies.engine import NIFTY50, AuctionEngine

    day = datetime.now(IST).date()
    open_ms = int(datetime.combine(day, dtime(9, 15), tzinfo=IST).timestamp() * 1000)
    rng = random.Random(1)
    price = 26_000.0
    ticks = []
    step = (375 * 60_000) // n
    for i in range(n):
        price = round((price + rng.gauss(0, 1.0)) * 20) / 20
        ticks.append((open_ms + i * step, price))
    auction = InstrumentAuction(NIFTY, "Nifty 50", NIFTY50)
    auction.start_day(AuctionEngine(NIFTY50), day)
    on_tick = auction.on_index_tick
    t0 = time.perf_counter()
    for ts, p in ticks:
        on_tick(ts, p)
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    auction.message()
    return round(n / elapsed), round((time.perf_counter() - t0) * 1000, 2)


def manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout


def main(quick: bool) -> dict:
    import psutil
    import redis as sync_redis

    seconds = 10 if quick else 60
    warmup = 3.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-load-"))
    (tmp / "pkg").mkdir()
    (tmp / "pkg" / "bench_load_settings.py").write_text(SETTINGS)
    base_redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
    redis_url = f"{base_redis}/{int(os.environ.get('BENCH_REDIS_DB', '12'))}"
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "CELERY_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench_load_settings",
            "PYTHONPATH": os.pathsep.join([str(tmp / "pkg"), str(ROOT)]),
            "BENCH_CHANNEL_PREFIX": f"bench-{secrets.token_hex(5)}",
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "VAR_DIR": str(tmp / "var"),
            "HISTORY_DIR": str(tmp / "history"),
            "REDIS_URL": redis_url,
            "WATCHLIST": f"{NIFTY},{BANK}",
            "DEBUG": "false",
            "UPSTOX_ACCESS_TOKEN": "",
            "PYTHONUNBUFFERED": "1",
        }
    )
    manage(env, "migrate", "--noinput")
    session_key = (
        manage(
            env,
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; from django.contrib.sessions.backends.db import SessionStore; "
            "u = get_user_model().objects.create_user('bench', password='x'); s = SessionStore(); "
            "s['_auth_user_id'] = str(u.pk); s['_auth_user_backend'] = 'django.contrib.auth.backends.ModelBackend'; "
            "s['_auth_user_hash'] = u.get_session_auth_hash(); s.create(); print(s.session_key)",
        )
        .strip()
        .splitlines()[-1]
    )
    log = open(tmp / "daphne.log", "wb")
    daphne = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "auctionsite.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    feed = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or daphne.poll() is not None:
                    raise RuntimeError((tmp / "daphne.log").read_text()[-2000:]) from None
                time.sleep(0.2)

        pages = [Page() for _ in range(PAGES)]
        measure_from: list[float] = []
        wall0: list[float] = []
        result: dict = {}

        async def drive() -> None:
            nonlocal feed
            stop = asyncio.Event()
            open_ms = RateSource(TICKS_PER_S, 0).open_ms
            tasks = [
                asyncio.create_task(
                    run_page(
                        f"ws://127.0.0.1:{port}/ws/market/",
                        f"sessionid={session_key}",
                        f"http://127.0.0.1:{port}",
                        p,
                        stop,
                        measure_from,
                        open_ms,
                        wall0,
                    )
                )
                for p in pages
            ]
            await asyncio.sleep(1.0)  # every page connected and subscribed
            wall0.append(time.time())  # the source's session clock reads 09:15 at this instant
            feed = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--feeder",
                    str(seconds + warmup),
                    repr(wall0[0]),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=open(tmp / "feed.log", "wb"),
                text=True,
            )
            await asyncio.sleep(warmup)
            procs = [psutil.Process(daphne.pid), psutil.Process(feed.pid), psutil.Process()]
            for p in procs:
                p.cpu_percent(None)
            measure_from.append(time.time())
            await asyncio.sleep(seconds)
            result["cpu_percent_daphne"] = round(procs[0].cpu_percent(None), 1)
            result["cpu_percent_feed"] = round(procs[1].cpu_percent(None), 1)
            result["cpu_percent_pages"] = round(procs[2].cpu_percent(None), 1)
            result["load_average_1m"] = round(os.getloadavg()[0], 2)
            out, _ = await asyncio.to_thread(feed.communicate, None, 120)
            await asyncio.sleep(1.5)  # the last states reach the pages
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            result.update(json.loads(out.strip().splitlines()[-1]) if out.strip() else {})

        asyncio.run(drive())
        client = sync_redis.Redis.from_url(redis_url)
        try:
            from auctionsite.auction_feed import auction_state_key

            stored = {k: json.loads(client.get(auction_state_key(k)) or "null") for k in (NIFTY, BANK)}
        finally:
            client.close()
    finally:
        if feed is not None and feed.poll() is None:
            feed.kill()
        daphne.terminate()
        try:
            daphne.wait(10)
        except subprocess.TimeoutExpired:
            daphne.kill()
        log.close()
        cleanup(redis_url)
        shutil.rmtree(tmp, ignore_errors=True)

    hot_path, message_ms = hot_path_ticks_per_s(30_000 if quick else 300_000)
    delivery = [v for p in pages for v in p.delivery]
    # p50 per 10 s of the window: a backlog growing over the run would show here.
    windows: dict[int, list[float]] = {}
    for p in pages:
        for v, at in zip(p.delivery, p.delivery_at, strict=True):
            windows.setdefault(int(at // 10), []).append(v)
    age = [v for p in pages for v in p.auction_age]
    union = set().union(*(p.auction_seen for p in pages))
    lost = sum(len(union - p.auction_seen) for p in pages)
    mismatches = sum(
        1
        for p in pages
        for key, want in stored.items()
        if want is not None
        and (p.last_auction.get(key) or {}).get("state", {}).get("tpo_counts") != want["state"]["tpo_counts"]
    )
    return {
        "pages": PAGES,
        "seconds": seconds,
        "ticks_per_s_target": TICKS_PER_S,
        "ticks_per_s_sent": round(result.get("ticks_sent", 0) / (seconds + warmup), 1),
        "messages_per_page": round(statistics.mean(p.messages for p in pages), 1),
        "auction_states_per_page": round(statistics.mean(len(p.auction_seen) for p in pages), 1),
        "delivery_ms_p50": percentile(delivery, 0.5),
        "delivery_ms_p99": percentile(delivery, 0.99),
        "delivery_ms_max": percentile(delivery, 1.0),
        "delivery_ms_p50_per_10s": [percentile(windows[k], 0.5) for k in sorted(windows)],
        "auction_age_ms_p50": percentile(age, 0.5),
        "auction_age_ms_p99": percentile(age, 0.99),
        "lost_auction_states": lost,
        "final_state_mismatches": mismatches,
        "cpu_percent_daphne": result.get("cpu_percent_daphne"),
        "cpu_percent_feed": result.get("cpu_percent_feed"),
        "cpu_percent_pages": result.get("cpu_percent_pages"),
        "load_average_1m": result.get("load_average_1m"),
        "ticks_streamed": result.get("ticks_streamed"),
        "publisher_ticks_per_s": hot_path,
        "publisher_message_build_ms": message_ms,
    }


def cleanup(redis_url: str) -> None:
    """The keys this bench's feed wrote in its own database (never FLUSHDB)."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    try:
        keys = ["feed:status", "market:last_snapshot"]
        for pattern in ("ticks:*", "auction:last:*"):
            keys += list(client.scan_iter(match=pattern, count=1000))
        client.delete(*keys)
    finally:
        client.close()


if __name__ == "__main__":
    if "--feeder" in sys.argv:
        at = sys.argv.index("--feeder")
        asyncio.run(feeder(float(sys.argv[at + 1]), float(sys.argv[at + 2])))
    else:
        print(json.dumps(main("--quick" in sys.argv)))
