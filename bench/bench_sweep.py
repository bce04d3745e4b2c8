"""Benchmark: a parameter sweep of ib_breakout (20 combinations: row_size x target_ibr) over the 77
Nifty 50 sessions of /work/shared/data/nifty50_1m_2024-01_2024-04.parquet, executed by the web
backtest service (history store -> the shell's runner -> stored metrics, trades, AMT summaries):
- sequentially in this one process (`services.execute_run` for each run, one after another);
- fanned out as one Celery task per combination to 2 backtests worker processes (solo pools) on a
  private queue of the real Redis.
Wall time of each (from "sweep submitted" to "every run stored"), each done twice (the first pass
pays imports and first queries: reported, but the speed-up is taken from the second), and a check
that all passes produced the same metrics for every combination.

Prints ONE JSON object. `--quick`: 4 combinations over January only. Everything lives in a temporary
directory (SQLite database, history store imported from the Parquet with HistoryWriter); skipped with
a message when the data file is absent.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "nifty50_1m_2024-01_2024-04.parquet"
KEY = "NSE_INDEX|Nifty 50"
SETTINGS = """
import os
from auctionsite.settings import *  # noqa: F403
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = os.environ["BENCH_CHANNEL_PREFIX"]  # noqa: F405
BACKTESTS_QUEUE = os.environ["BENCH_BACKTESTS_QUEUE"]
"""


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    n_workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    if not DATA.exists():
        print(json.dumps({"skipped": f"{DATA} is absent"}))
        return 0
    grid = (
        {"row_size": [2.5, 5.0], "target_ibr": [0.5, 1.0]}
        if quick
        else {
            "row_size": [2.5, 5.0, 7.5, 10.0, 15.0],
            "target_ibr": [0.5, 1.0, 1.5, 2.0],
        }
    )
    start, end = (date(2024, 1, 1), date(2024, 1, 31)) if quick else (date(2024, 1, 1), date(2024, 4, 30))
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        return run(Path(tmp), grid, start, end, quick, n_workers)


def run(tmp: Path, grid: dict, start: date, end: date, quick: bool, n_workers: int) -> int:
    (tmp / "settings_pkg").mkdir()
    (tmp / "settings_pkg" / "bench_sweep_settings.py").write_text(SETTINGS)
    queue = f"bench.backtests.{secrets.token_hex(4)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench_sweep_settings",
            "PYTHONPATH": os.pathsep.join([str(tmp / "settings_pkg"), str(ROOT)]),
            "BENCH_CHANNEL_PREFIX": f"bench-{secrets.token_hex(4)}",
            "BENCH_BACKTESTS_QUEUE": queue,
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "VAR_DIR": str(tmp / "var"),
            "HISTORY_DIR": str(tmp / "history"),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    os.environ.update(env)
    sys.path[:0] = [str(tmp / "settings_pkg"), str(ROOT)]
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    import django

    django.setup()
    import pyarrow.parquet as pq
    import redis
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from feeds.groups import WORKER_HEARTBEATS_KEY
    from persistence.writer import HistoryWriter
    from strategies.backtests import services
    from strategies.backtests.models import FINISHED_STATES, BacktestRun

    table = pq.read_table(DATA)
    with HistoryWriter(settings.HISTORY_DIR, flush_interval=None) as writer:
        writer.write_candles(table)
    user = get_user_model().objects.create_user("bench", password=secrets.token_urlsafe(12))
    fields = {"instruments": [KEY], "start": start, "end": end}

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)

    def sequential():
        """The sweep in this process; its tasks go to a queue nobody consumes (deleted after)."""
        settings.BACKTESTS_QUEUE = f"{queue}.unconsumed"
        t0 = time.perf_counter()
        sweep = services.start_sweep(user=user, strategy="ib_breakout", parameters={}, grid=grid, **fields)
        for run_ in sweep.runs.order_by("id"):
            services.execute_run(run_.pk)
        elapsed = time.perf_counter() - t0
        client.delete(settings.BACKTESTS_QUEUE)
        settings.BACKTESTS_QUEUE = queue
        return sweep, elapsed

    def fanned_out():
        t0 = time.perf_counter()
        sweep = services.start_sweep(user=user, strategy="ib_breakout", parameters={}, grid=grid, **fields)
        runs = BacktestRun.objects.filter(sweep=sweep)
        deadline = time.monotonic() + 900
        while runs.exclude(state__in=FINISHED_STATES).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the fanned-out sweep did not finish")
            time.sleep(0.02)
        return sweep, time.perf_counter() - t0

    # Each twice: the first pass pays the imports and first DuckDB queries (a worker does so once in
    # its life), the second is the steady state the speed-up is taken from.
    seq_cold, sequential_cold_s = sequential()
    seq, sequential_s = sequential()

    workers, nodes = [], []
    for i in range(n_workers):
        node = f"{queue}.w{i}@{socket.gethostname()}"
        nodes.append(node)
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "auctionsite", "worker", "-Q", queue, "-n", node]
                + ["--pool", "solo", "--without-mingle", "--without-gossip", "-l", "WARNING"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not all(client.hget(WORKER_HEARTBEATS_KEY, n) for n in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)
        fan_cold, fanned_cold_s = fanned_out()
        fan, fanned_s = fanned_out()
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding.{queue}.unconsumed")
        client.hdel(WORKER_HEARTBEATS_KEY, *nodes)
        client.close()

    def by_combo(sweep):
        return {json.dumps(r.parameters, sort_keys=True): (r.state, r.metrics) for r in sweep.runs.all()}

    def mean_run_s(sweep) -> float:
        spans = [(r.finished_at - r.started_at).total_seconds() for r in sweep.runs.all()]
        return round(sum(spans) / len(spans), 3)

    a, b = by_combo(seq), by_combo(fan)
    same = a == b == by_combo(seq_cold) == by_combo(fan_cold)
    states = {s for s, _ in list(a.values()) + list(b.values())}
    one = next(iter(a.values()))[1]
    print(
        json.dumps(
            {
                "strategy": "ib_breakout",
                "combinations": len(a),
                "sessions_per_run": one.get("sessions"),
                "quick": quick,
                "sequential_one_process_s": round(sequential_s, 3),
                "workers": n_workers,
                "fanned_out_s": round(fanned_s, 3),
                "speedup": round(sequential_s / fanned_s, 2),
                "first_pass_sequential_s": round(sequential_cold_s, 3),
                "first_pass_fanned_out_s": round(fanned_cold_s, 3),
                "mean_run_s_sequential": mean_run_s(seq),
                "mean_run_s_in_workers": mean_run_s(fan),
                "same_results": same,
                "states": sorted(states),
                "cpus": os.cpu_count(),
                # other processes on the machine skew both timings: say how busy it was
                "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
