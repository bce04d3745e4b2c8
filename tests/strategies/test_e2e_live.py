"""End to end on the real Redis: `runfeed` (simulated session) dispatches claim checks to two real
Celery strategy workers (solo pool, one queue each, run by the supervisor `up` uses); they store
signals, paper orders, fills and positions. One worker is SIGKILLed while it holds an open option
position; the supervisor restarts it, it rebuilds its state, and it ends with exactly the records of
an uninterrupted evaluation of the same streams: no duplicated signal or order."""

from __future__ import annotations

import io
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
import redis as redis_lib

from auctionsite.management.commands.up import strategy_worker_spec
from auctionsite.supervisor import Supervisor
from feeds.groups import tick_stream_key
from feeds.sim import SimSession
from feeds.ticks import unpack_tick
from strategies.library import REGISTRY
from strategies.live.evaluation import LiveOrder, LiveSignal, LiveStrategy
from strategies.live.worker import StrategyWorker
from tests.strategies.live_harness import process_env, wait_for

BASE_DIR = Path(__file__).resolve().parents[2]
DAY = date(2025, 12, 2)
NIFTY = "NSE_INDEX|Nifty 50"
SPEED = 750  # the 6h15m session in about 30 s
TIMEOUT_S = 240

pytestmark = pytest.mark.slow


def option_keys() -> list[str]:
    """The option contracts the two strategies trade on DAY (so the feed streams their book)."""
    index = list(SimSession(DAY, [NIFTY]).ticks())
    keys = set()
    for slug in ("ib_breakout", "look_above_fail"):
        dry = LiveStrategy(slug, REGISTRY[slug], [NIFTY])
        events = dry.on_ticks(NIFTY, [(f"{i}-0", t) for i, t in enumerate(index)])
        keys |= {e.instrument_key for e in events if isinstance(e, LiveOrder)}
    return sorted(keys)


def reference(redis_client, prefix: str, slug: str, strategy_class: str):
    """An uninterrupted evaluation of the whole stream, in memory, with the workers' option quotes."""
    entries = [
        (sid.decode(), unpack_tick(fields[b"t"]))
        for sid, fields in redis_client.xrange(prefix + tick_stream_key(NIFTY), "-", "+")
    ]
    live = LiveStrategy(
        slug, REGISTRY[strategy_class], [NIFTY], quotes=StrategyWorker(redis_client)._quote_source(prefix)
    )
    events = live.on_ticks(NIFTY, entries)
    signals = [(e.signal.side, e.signal.kind, e.stream_id) for e in events if isinstance(e, LiveSignal)]
    orders = [
        (e.client_order_id, e.side.upper(), e.quantity, e.instrument_key, str(e.fill.price))
        for e in events
        if isinstance(e, LiveOrder)
    ]
    return signals, orders, entries[-1][0]


def stored(db: Path, slug: str):
    with sqlite3.connect(db) as con:
        (config_id,) = con.execute(
            "SELECT id FROM strategies_strategyconfig WHERE slug = ?", (slug,)
        ).fetchone()
        signals = con.execute(
            "SELECT side, kind, stream_id FROM strategies_signal WHERE strategy_id = ? ORDER BY ts, id",
            (config_id,),
        ).fetchall()
        orders = con.execute(
            "SELECT client_order_id, side, quantity, instrument_key, state, average_price FROM strategies_order "
            "WHERE strategy_id = ? ORDER BY created_at, id",
            (config_id,),
        ).fetchall()
        fills = con.execute(
            "SELECT count(*) FROM strategies_fill f JOIN strategies_order o ON f.order_id = o.id "
            "WHERE o.strategy_id = ?",
            (config_id,),
        ).fetchone()[0]
        checkpoint = con.execute(
            "SELECT last_stream_id FROM strategies_strategycheckpoint WHERE strategy_id = ?", (config_id,)
        ).fetchone()
        positions = con.execute(
            "SELECT instrument_key, net_quantity FROM strategies_position WHERE strategy_id = ?", (config_id,)
        ).fetchall()
    return {
        "signals": [tuple(s) for s in signals],
        "orders": orders,
        "fills": fills,
        "checkpoint": checkpoint[0] if checkpoint else None,
        "positions": positions,
    }


def test_two_workers_trade_the_session_and_a_killed_one_ends_as_if_never_killed(tmp_path, test_redis_url):
    run_id = secrets.token_hex(4)
    prefix = f"e2e-{run_id}-"
    killed, steady = f"ibb-{run_id}", f"laf-{run_id}"
    db = tmp_path / "db.sqlite3"
    env = process_env(tmp_path, test_redis_url, tmp_path / "history")

    def manage(*args, **kw):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            **kw,
        )

    manage("migrate", "--noinput", timeout=300)
    create = (
        "from decimal import Decimal; from strategies import services\n"
        f"for slug, cls in [({killed!r}, 'ib_breakout'), ({steady!r}, 'look_above_fail')]:\n"
        "    services.create_strategy_config(slug=slug, strategy_class=cls, instruments=['NSE_INDEX|Nifty 50'],"
        " capital=Decimal('500000'), max_daily_loss=Decimal('5000'), enabled=True, actor='e2e')\n"
    )
    manage("shell", "-c", create, timeout=120)

    client = redis_lib.Redis.from_url(test_redis_url)
    log = io.StringIO()
    supervisor = Supervisor(output=log, base_env=env, backoff_initial=0.5, grace=5)
    feed = None
    try:
        supervisor.reconcile([strategy_worker_spec(killed), strategy_worker_spec(steady)])
        supervisor.step()
        time.sleep(3)  # let the workers connect to their queues (tasks would wait for them anyway)
        instruments = ",".join([NIFTY, *option_keys()])
        with open(tmp_path / "feed.log", "wb") as feed_log:
            feed = subprocess.Popen(
                [sys.executable, "manage.py", "runfeed", "--source", "sim", "--date", DAY.isoformat()]
                + ["--speed", str(SPEED), "--instruments", instruments, "--redis-prefix", prefix],
                cwd=BASE_DIR,
                env=env,
                stdout=feed_log,
                stderr=subprocess.STDOUT,
            )

        # SIGKILL the ib_breakout worker while it holds its option position (entered, not exited).
        def holding():
            return len(stored(db, killed)["orders"]) == 1

        wait_for(holding, supervisor, TIMEOUT_S, f"an entry order of {killed}", log)
        child = supervisor.children[f"worker-{killed}"]
        first_pid = child.pid
        os.kill(first_pid, signal.SIGKILL)
        wait_for(lambda: child.process is not None and child.pid != first_pid, supervisor, 60, "the restart")

        wait_for(lambda: feed.poll() is not None, supervisor, TIMEOUT_S, "the feed to finish its session")
        assert feed.returncode == 0, (tmp_path / "feed.log").read_text()[-3000:]
        last_id = client.xrevrange(prefix + tick_stream_key(NIFTY), count=1)[0][0].decode()
        wait_for(
            lambda: (
                stored(db, killed)["checkpoint"] == last_id and stored(db, steady)["checkpoint"] == last_id
            ),
            supervisor,
            TIMEOUT_S,
            "both workers to reach the end of the stream",
            log,
        )

        for slug, cls in ((killed, "ib_breakout"), (steady, "look_above_fail")):
            got = stored(db, slug)
            signals, orders, _ = reference(client, prefix, slug, cls)
            assert got["signals"] == signals, slug
            assert [o[:4] for o in got["orders"]] == [o[:4] for o in orders], slug
            assert [str(o[5]) for o in got["orders"]] == [o[4] for o in orders], slug
            assert {o[4] for o in got["orders"]} == {"filled"} and got["fills"] == len(orders)
        # ib_breakout opened and closed its CE; look_above_fail squared off at 15:15.
        assert [o[1] for o in stored(db, killed)["orders"]] == ["BUY", "SELL"]
        assert [o[1] for o in stored(db, steady)["orders"]] == ["BUY", "SELL"]
        assert all(qty == 0 for _, qty in stored(db, killed)["positions"])
        assert child.restarts >= 1
        assert "rebuilt" in log.getvalue()
    finally:
        if feed is not None and feed.poll() is None:
            feed.kill()
            feed.wait()
        supervisor.stop()
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        keys += [f"strategy.{killed}", f"strategy.{steady}"]
        client.delete(*keys)
        client.hdel("strategies:last_claim", killed, steady)
        client.close()


def test_runworkers_runs_a_worker_per_enabled_strategy_and_stops_them_on_sigterm(tmp_path, test_redis_url):
    from feeds.groups import WORKER_HEARTBEATS_KEY

    run_id = secrets.token_hex(4)
    slug = f"rw-{run_id}"
    env = process_env(tmp_path, test_redis_url, tmp_path / "history")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    create = (
        "from decimal import Decimal; from strategies import services\n"
        f"for slug, on in [({slug!r}, True), ({slug + '-off'!r}, False)]:\n"
        "    services.create_strategy_config(slug=slug, strategy_class='ib_breakout', instruments=['NSE_INDEX|Nifty 50'],"
        " capital=Decimal('1'), max_daily_loss=Decimal('1'), enabled=on, actor='e2e')\n"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", create],
        cwd=BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    client = redis_lib.Redis.from_url(test_redis_url)
    with open(tmp_path / "runworkers.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runworkers", "--reconcile-every", "1"],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        names = set()
        while time.monotonic() < deadline:
            names = {n.decode().split("@")[0] for n in client.hkeys(WORKER_HEARTBEATS_KEY)}
            if f"worker-{slug}" in names:
                break
            time.sleep(0.3)
        assert f"worker-{slug}" in names, (tmp_path / "runworkers.log").read_text()[-3000:]
        assert f"worker-{slug}-off" not in names
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        names = {n.decode().split("@")[0] for n in client.hkeys(WORKER_HEARTBEATS_KEY)}
        assert f"worker-{slug}" not in names  # a clean stop removes its heartbeat
        assert "stopped (SIGTERM)" in (tmp_path / "runworkers.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client.delete(f"strategy.{slug}")
        client.close()
