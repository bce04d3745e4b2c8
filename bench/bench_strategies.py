"""Live strategies: tick-to-signal latency with three strategy workers at 5,000 ticks/s, and one
worker's throughput. Prints one JSON object.

Everything is real: the simulated session's ticks (all default instruments: indices, futures,
options) paced at `--rate` ticks/s into an in-process `FeedPipeline` (XADD to Redis Streams every
`--stream-ms`), the strategy dispatcher on its flush hook, Celery on the Redis broker, three
`celery worker -Q strategy.<slug> --pool solo -c 1` processes (ib_breakout, look_above_fail,
va_acceptance, each on Nifty 50 and Nifty Bank) storing into a fresh SQLite database in WAL mode.

Measured per index tick (the ticks the strategies read), for each strategy:
* `feed_to_evaluated_ms`: from the moment the tick was handed to the feed (`pipeline.put`) to the
  moment its strategy's checkpoint covering it was committed (seen by a 2 ms poller): every tick's
  signal, had it made one, was stored then. Includes the feed's stream batching (`--stream-ms`).
* `stream_to_evaluated_ms`: from the tick's XADD (its stream id's time) to the same commit — what
  dispatch, Celery, the worker and the database add.
* `signals`: the signals actually made during the run, from the deciding tick's `put` to the
  signal row's insert (`created_at`, inside the committing transaction).
Throughput: `worker_ticks_per_s` — one real worker (through Celery) evaluating a backlog of index
ticks in claim checks of 500 (5,000 ticks/s x 100 ms), reads + evaluation + commits included;
`evaluator_ticks_per_s` — `LiveStrategy` alone, in memory.

Usage: python bench/bench_strategies.py [--quick] [--rate 5000] [--seconds 60] [--stream-ms 100] [--keep]
Uses REDIS_URL with a unique key prefix and unique queue names; removes what it wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = Path(tempfile.mkdtemp(prefix="bench-strategies-"))
DB = TMP / "db.sqlite3"
os.environ["DATABASE_URL"] = f"sqlite:///{DB}"
os.environ["VAR_DIR"] = str(TMP / "var")
os.environ["HISTORY_DIR"] = str(TMP / "history")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auctionsite.settings")
(TMP / "var").mkdir()

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from auctionsite.management.commands.up import strategy_worker_spec  # noqa: E402
from auctionsite.supervisor import Supervisor  # noqa: E402
from feeds.groups import WORKER_HEARTBEATS_KEY, tick_stream_key  # noqa: E402
from feeds.pipeline import FeedPipeline  # noqa: E402
from feeds.sim import SimSession  # noqa: E402
from feeds.sources import CLOSED, OPEN  # noqa: E402
from feeds.ticks import pack_tick  # noqa: E402
from strategies.dispatch import LAST_CLAIM_KEY, StrategyDispatcher  # noqa: E402
from strategies.library import REGISTRY  # noqa: E402
from strategies.live.evaluation import LiveStrategy  # noqa: E402
from strategies.tasks import evaluate  # noqa: E402

DAY = date(2025, 12, 2)
INDICES = ("NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank")
STRATEGIES = ("ib_breakout", "look_above_fail", "va_acceptance")
CLAIM_TICKS = 500


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    v = sorted(values)

    def q(p):
        return round(v[min(len(v) - 1, int(p * len(v)))], 2)

    return {"count": len(v), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": round(v[-1], 2)}


def create_configs(run: str, classes, instruments) -> list[str]:
    from decimal import Decimal

    from strategies import services

    slugs = []
    for cls in classes:
        slug = f"b-{cls.replace('_', '-')}-{run}"
        services.create_strategy_config(
            slug=slug,
            strategy_class=cls,
            instruments=list(instruments),
            capital=Decimal("500000"),
            max_daily_loss=Decimal("5000"),
            enabled=True,
            actor="bench",
        )
        slugs.append(slug)
    return slugs


def start_workers(slugs: list[str], log_path: Path) -> Supervisor:
    env = dict(os.environ)
    out = open(log_path, "a")
    supervisor = Supervisor(output=out, base_env=env, grace=5)
    supervisor.reconcile([strategy_worker_spec(slug) for slug in slugs])
    supervisor.step()
    client = redis.Redis.from_url(settings.REDIS_URL)
    deadline = time.monotonic() + 90
    names = {f"worker-{slug}" for slug in slugs}
    while time.monotonic() < deadline:
        supervisor.step()
        beating = {n.decode().split("@")[0] for n in client.hkeys(WORKER_HEARTBEATS_KEY)}
        if names <= beating:
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"workers did not start; see {log_path}")
    client.close()
    return supervisor


class PacedSource:
    """Puts the session's ticks at `rate` per second of wall time, recording when each index tick
    was handed over (per instrument, in order: the k-th put is the k-th stream entry)."""

    name = "bench"

    def __init__(self, ticks, rate: float) -> None:
        self.ticks = ticks
        self.rate = rate
        self.put_at: dict[str, list[float]] = {k: [] for k in INDICES}

    async def run(self, sink) -> None:
        sink.set_status(connected=True, session_state=OPEN)
        start = time.time()
        i, n = 0, len(self.ticks)
        while i < n:
            due = int((time.time() - start) * self.rate)
            if due > i:
                chunk = self.ticks[i:due]
                now = time.time()
                sink.put(chunk)
                for t in chunk:
                    times = self.put_at.get(t.instrument_key)
                    if times is not None:
                        times.append(now)
                i = due
            await asyncio.sleep(0.001)
        sink.set_status(session_state=CLOSED)


def _watch(db: str, stop, out) -> None:
    """Poll the checkpoints every 2 ms (a process of its own: no GIL shared with the feed) and send
    (seen at, slug, stream key, last id) for each advance."""
    con = sqlite3.connect(db, timeout=5)
    sql = (
        "SELECT s.slug, c.stream_key, c.last_stream_id FROM strategies_strategycheckpoint c "
        "JOIN strategies_strategyconfig s ON s.id = c.strategy_id"
    )
    last: dict = {}
    events = []
    while not stop.is_set():
        try:
            rows = con.execute(sql).fetchall()
        except sqlite3.OperationalError:
            rows = []
        now = time.time()
        for slug, key, sid in rows:
            if last.get((slug, key)) != sid:
                last[(slug, key)] = sid
                events.append((now, slug, key, sid))
        time.sleep(0.002)
    out.send(events)  # at the end: a full pipe must never stall the polling
    con.close()


class CheckpointWatcher:
    """The checkpoint poller process and what it has reported so far."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._recv, send = ctx.Pipe(duplex=False)
        self._stop = ctx.Event()
        self._process = ctx.Process(target=_watch, args=(str(DB), self._stop, send), daemon=True)
        self.events: list[tuple[float, str, str, str]] = []
        self.last: dict[tuple[str, str], str] = {}

    def start(self) -> None:
        self._process.start()

    def poll(self) -> None:
        """The checkpoints now (read here; the poller process keeps the timeline)."""
        with sqlite3.connect(DB, timeout=5) as con:
            rows = con.execute(
                "SELECT s.slug, c.stream_key, c.last_stream_id FROM strategies_strategycheckpoint c "
                "JOIN strategies_strategyconfig s ON s.id = c.strategy_id"
            ).fetchall()
        self.last = {(slug, key): sid for slug, key, sid in rows}

    def stop(self) -> None:
        self._stop.set()
        self.events = self._recv.recv()
        self._process.join()


def task_runtimes(log_path: Path) -> dict:
    """Celery's own measure of each evaluate task's run time, from the workers' log."""
    values = []
    for line in log_path.read_text(errors="replace").splitlines():
        if "strategies.tasks.evaluate" in line and " succeeded in " in line:
            values.append(float(line.split(" succeeded in ")[1].split("s:")[0]) * 1000)
    return percentiles(values)


def sid_pos(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq)


def latency_run(args, run: str, prefix: str, client) -> dict:
    load_before = [round(x, 2) for x in os.getloadavg()]
    slugs = create_configs(run, STRATEGIES, INDICES)
    supervisor = start_workers(slugs, TMP / "workers.log")
    try:
        session = SimSession(DAY)
        ticks = list(session.ticks())
        ticks = ticks[: int(args.rate * args.seconds)]
        source = PacedSource(ticks, args.rate)
        watcher = CheckpointWatcher()
        watcher.start()

        async def feed():
            r = aioredis.from_url(settings.REDIS_URL)
            pipeline = FeedPipeline(
                source_name="bench",
                writer=None,
                redis=r,
                stream_ms=args.stream_ms,
                flush_ms=1000,
                key_prefix=prefix,
            )
            dispatcher = StrategyDispatcher(prefix=prefix, redis=r)
            pipeline.on_flush.append(dispatcher)
            started = time.time()
            await pipeline.run(source)
            await r.aclose()
            return time.time() - started, dispatcher.tasks_sent

        elapsed, tasks_sent = asyncio.run(feed())
        last_ids = {
            prefix + tick_stream_key(k): client.xrevrange(prefix + tick_stream_key(k), count=1)[0][0].decode()
            for k in INDICES
        }
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            supervisor.step()
            watcher.poll()
            if all(watcher.last.get((s, k)) == last for s in slugs for k, last in last_ids.items()):
                break
            time.sleep(0.05)
        watcher.stop()

        # Each index tick: its put time, its stream id; evaluated when its strategy's checkpoint
        # first covered its id.
        feed_ms, stream_ms, lag_by_slug = [], [], {}
        put_by_sid = {}
        for key in INDICES:
            stream = prefix + tick_stream_key(key)
            ids = [sid.decode() for sid, _ in client.xrange(stream, "-", "+")]
            put = source.put_at[key]
            assert len(ids) == len(put), (key, len(ids), len(put))
            put_by_sid[stream] = dict(zip(ids, put, strict=True))
            for slug in slugs:
                advances = [
                    (t, sid_pos(last)) for t, s, k, last in watcher.events if s == slug and k == stream
                ]
                j = 0
                for sid, put_t in zip(ids, put, strict=True):
                    pos = sid_pos(sid)
                    while j < len(advances) and advances[j][1] < pos:
                        j += 1
                    if j == len(advances):
                        break
                    done_t = advances[j][0]
                    feed_ms.append((done_t - put_t) * 1000)
                    stream_ms.append(done_t * 1000 - pos[0])
                    lag_by_slug.setdefault(slug, []).append((done_t - put_t) * 1000)
        signals = signal_latencies(slugs, put_by_sid, prefix)
        return {
            "rate_ticks_per_s": args.rate,
            "ticks": len(ticks),
            "achieved_ticks_per_s": round(len(ticks) / elapsed, 1),
            "index_ticks": sum(len(v) for v in source.put_at.values()),
            "strategies": len(slugs),
            "stream_ms": args.stream_ms,
            "tasks_sent": tasks_sent,
            "feed_to_evaluated_ms": percentiles(feed_ms),
            "stream_to_evaluated_ms": percentiles(stream_ms),
            "feed_to_evaluated_p99_by_strategy_ms": {
                s.split("-" + run)[0]: percentiles(v)["p99"] for s, v in lag_by_slug.items()
            },
            "signals": signals,
            "task_run_ms": task_runtimes(TMP / "workers.log"),
            "load_average_before": load_before,
            "goal_p99_ms": 50,
        }
    finally:
        supervisor.stop()
        for slug in slugs:
            client.delete(f"strategy.{slug}")
        client.hdel(LAST_CLAIM_KEY, *slugs)


def signal_latencies(slugs, put_by_sid, prefix) -> dict:
    from strategies.models import Signal

    values = []
    for s in Signal.objects.filter(strategy__slug__in=slugs):
        put = put_by_sid.get(prefix + tick_stream_key(s.instrument_key), {}).get(s.stream_id)
        if put is not None:
            values.append((s.created_at.timestamp() - put) * 1000)
    return {"feed_to_stored_ms": percentiles(values)}


def throughput_run(args, run: str, prefix: str, client) -> dict:
    key = INDICES[0]
    days, d = [], date(2025, 11, 24)
    while len(days) < args.days:
        from feeds import contracts

        if contracts.is_trading_day(d):
            days.append(d)
        d = date.fromordinal(d.toordinal() + 1)
    ticks = [t for day in days for t in SimSession(day, [key]).ticks()]

    # The evaluator alone.
    live = LiveStrategy("x", REGISTRY["ib_breakout"], [key])
    entries = [(f"{i + 1}-0", t) for i, t in enumerate(ticks)]
    started = time.perf_counter()
    for i in range(0, len(entries), CLAIM_TICKS):
        live.on_ticks(key, entries[i : i + CLAIM_TICKS])
    evaluator = len(entries) / (time.perf_counter() - started)

    # One real worker through Celery: a backlog of claim checks of 500 ticks each.
    (slug,) = create_configs(run + "t", ("ib_breakout",), (key,))
    stream = prefix + "thru:" + tick_stream_key(key)
    ids = []
    for i in range(0, len(ticks), 5000):
        pipe = client.pipeline(transaction=False)
        for t in ticks[i : i + 5000]:
            pipe.xadd(stream, {"t": pack_tick(t)})
        ids += [sid.decode() for sid in pipe.execute()]
    supervisor = start_workers([slug], TMP / "worker-throughput.log")
    try:
        watcher = CheckpointWatcher()
        watcher.start()
        started = time.time()
        for i in range(0, len(ids), CLAIM_TICKS):
            claim = {stream: [ids[i], ids[min(i + CLAIM_TICKS, len(ids)) - 1]]}
            evaluate.apply_async(kwargs={"slug": slug, "ranges": claim, "prefix": prefix + "thru:"})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and watcher.last.get((slug, stream)) != ids[-1]:
            supervisor.step()
            watcher.poll()
            time.sleep(0.02)
        watcher.stop()
        done = [t for t, s, k, last in watcher.events if s == slug and last == ids[-1]]
        if not done:
            raise SystemExit("the throughput worker did not finish")
        elapsed = done[0] - started
    finally:
        supervisor.stop()
        client.delete(f"strategy.{slug}", stream)
    return {
        "worker_ticks": len(ids),
        "worker_claim_ticks": CLAIM_TICKS,
        "worker_ticks_per_s": round(len(ids) / elapsed, 1),
        "evaluator_ticks_per_s": round(evaluator, 1),
        "sessions": len(days),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--stream-ms", type=int, default=100)
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the database and worker logs")
    args = parser.parse_args()
    args.seconds = args.seconds or (15.0 if args.quick else 60.0)
    args.days = args.days or (2 if args.quick else 5)
    call_command("migrate", verbosity=0, interactive=False)
    run = uuid.uuid4().hex[:6]
    prefix = f"bench-strat-{run}-"
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        latency = latency_run(args, run, prefix, client)
        throughput = throughput_run(args, run, prefix, client)
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        if not args.keep:
            shutil.rmtree(TMP, ignore_errors=True)
    print(
        json.dumps(
            {
                "bench": "strategies",
                "at": datetime.now().astimezone().isoformat(timespec="seconds"),
                "cpus": os.cpu_count(),
                "quick": args.quick,
                "latency": latency,
                "throughput": throughput,
            }
        )
    )


if __name__ == "__main__":
    main()
