"""Fault check of the feed (issue 4): SIGKILL `runfeed --source sim` mid-session, restart it for
the same date, let it finish the slice, and compare with an uninterrupted run of the same slice.

Prints one JSON object:
* `rows_lost` / `rows_duplicated`: the history store after the restart against the uninterrupted
  run's store (multisets of whole ticks: instrument, ts_ms, ltp, ltq, volume, oi, bid/ask and their
  quantities). The simulator is deterministic per date and a restart starts again at 09:15 (or
  `--start`), so it re-sends every tick; the writer drops those it already has (per-instrument
  high-water mark, reloaded from the store by the restarted writer) and writes the rest.
* `at_kill`: what the SIGKILL itself lost before the restart re-sent it, measured against the
  ticks the feed had already put on its Redis streams (it had them, so a source that cannot re-send,
  e.g. Upstox, loses exactly these): `rows_unflushed`, their exchange-time window
  (`lost_window_ms`, first to last missing tick) and its wall-clock length at the run's speed
  (`lost_window_wall_ms`), and `holes` (received ticks older than the newest stored tick that are
  not stored: must be 0, the store is always a prefix of what the feed received).
* `stream`: the Redis streams after the restart against the uninterrupted run's: the restarted pipeline
  skips re-sent ticks its streams already hold, so `entries_duplicated` and `entries_lost` must
  both be 0. `candles_differing`: 1-minute candles a live strategy
  builds from the faulted streams (`strategies.live.evaluation.CandleBuilder`, as the worker
  does) that differ from the uninterrupted streams' (see the module's report in the docstring of
  tests/feeds/test_feed_faults.py for what that means).

Usage: python bench/fault_feed_kill.py [--quick]   (real Redis at REDIS_URL, unique key prefixes,
temporary stores; nothing of a running feed is touched).
`measure()` is also what tests/feeds/test_feed_faults.py runs.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NIFTY = "NSE_INDEX|Nifty 50"
DAY = date(2025, 12, 2)
FLAT_OUT = 1000
TIMEOUT_S = 180


def feed_env(tmp: Path, redis_url: str, history: Path, flush_ms: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "CELERY_", "PYTEST_", "FEED_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "auctionsite.settings",
            # No strategies here: the dispatcher finds no table and sends nothing (it logs once).
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "VAR_DIR": str(tmp / "var"),
            "HISTORY_DIR": str(history),
            "REDIS_URL": redis_url,
            "FEED_FLUSH_MS": str(flush_ms),
            "UPSTOX_ACCESS_TOKEN": "",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_feed(env: dict[str, str], prefix: str, speed: float, end: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", "runfeed", "--source", "sim", "--date", DAY.isoformat()]
            + ["--end", end, "--speed", str(speed), "--redis-prefix", prefix],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(proc: subprocess.Popen, log: Path) -> None:
    try:
        code = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise RuntimeError(f"runfeed exited {code}:\n{log.read_text(errors='replace')[-3000:]}")


def stored_ticks(history: Path) -> Counter:
    """Every tick row the store's manifest publishes (what any reader sees), as a multiset."""
    import pyarrow.parquet as pq

    from persistence.store import read_manifest
    from persistence.writer import TICK_COLUMNS

    rows: Counter = Counter()
    for rel in read_manifest(history).paths("ticks"):
        table = pq.read_table(history / rel, columns=list(TICK_COLUMNS))
        rows.update(zip(*(table[c].to_pylist() for c in TICK_COLUMNS), strict=True))
    return rows


def identity(tick) -> tuple:
    return (
        tick.instrument_key,
        tick.ts_ms,
        tick.ltp,
        tick.ltq,
        tick.volume,
        tick.oi,
        tick.bid,
        tick.bid_qty,
        tick.ask,
        tick.ask_qty,
    )


def streamed_ticks(client, prefix: str) -> dict[str, list]:
    """Each instrument's stream under `prefix`, decoded, in stream order."""
    from feeds.groups import tick_stream_key
    from feeds.ticks import unpack_tick

    head = prefix + tick_stream_key("")
    out = {}
    for key in client.scan_iter(match=head + "*", count=1000):
        name = key.decode()[len(head) :]
        out[name] = [unpack_tick(fields[b"t"]) for _, fields in client.xrange(key, "-", "+")]
    return out


def minus(a: Counter, b: Counter) -> Counter:
    return Counter({k: n - b.get(k, 0) for k, n in a.items() if n > b.get(k, 0)})


def candles(ticks: list) -> list[tuple]:
    from strategies.live.evaluation import CandleBuilder

    builder, out = CandleBuilder(), []
    for t in ticks:
        done = builder.add(t.ts_ms, t.ltp, t.ltq)
        if done is not None:
            out.append(tuple(done))
    last = builder.take()
    return out + ([tuple(last)] if last is not None else [])


def measure(
    redis_url: str,
    workdir: Path,
    *,
    end: str = "09:25",
    speed: float = 100,
    kill_at_fraction: float = 0.4,
    flush_ms: int = 500,
) -> dict:
    """Run the uninterrupted and the faulted feed (see the module docstring); returns the report."""
    import redis

    from feeds.groups import tick_stream_key

    run_id = secrets.token_hex(4)
    prefixes = {"reference": f"fault-ref-{run_id}-", "faulted": f"fault-kill-{run_id}-"}
    client = redis.Redis.from_url(redis_url)
    try:
        stores, logs = {}, {}
        for name in prefixes:
            (workdir / name / "var").mkdir(parents=True)
            stores[name] = workdir / name / "history"
            logs[name] = workdir / name / "feed.log"
        envs = {name: feed_env(workdir / name, redis_url, stores[name], flush_ms) for name in prefixes}

        started = time.monotonic()
        ref = start_feed(envs["reference"], prefixes["reference"], FLAT_OUT, end, logs["reference"])
        finish(ref, logs["reference"])
        reference_s = time.monotonic() - started
        reference = stored_ticks(stores["reference"])
        index_total = sum(1 for row in reference if row[0] == NIFTY)

        # The faulted run, paced, SIGKILLed once its index stream holds `kill_at_fraction` of the slice.
        feed = start_feed(envs["faulted"], prefixes["faulted"], speed, end, logs["faulted"])
        index_stream = prefixes["faulted"] + tick_stream_key(NIFTY)
        deadline = time.monotonic() + TIMEOUT_S
        while client.xlen(index_stream) < kill_at_fraction * index_total:
            if feed.poll() is not None:
                raise RuntimeError(f"the feed ended before the kill:\n{logs['faulted'].read_text()[-3000:]}")
            if time.monotonic() > deadline:
                feed.kill()
                raise RuntimeError("the feed never reached the kill point")
            time.sleep(0.02)
        os.kill(feed.pid, signal.SIGKILL)
        feed.wait()
        at_kill_store = stored_ticks(stores["faulted"])
        at_kill_stream = streamed_ticks(client, prefixes["faulted"])
        received = Counter(identity(t) for ticks in at_kill_stream.values() for t in ticks)
        unflushed = minus(received, at_kill_store)
        newest_stored = max((row[1] for row in at_kill_store), default=0)
        holes = sum(n for row, n in unflushed.items() if row[1] < newest_stored)
        missing_ts = sorted(row[1] for row in unflushed)
        window_ms = missing_ts[-1] - missing_ts[0] if missing_ts else 0

        started = time.monotonic()
        again = start_feed(envs["faulted"], prefixes["faulted"], FLAT_OUT, end, logs["faulted"])
        finish(again, logs["faulted"])
        restart_s = time.monotonic() - started
        after = stored_ticks(stores["faulted"])

        ref_streams = streamed_ticks(client, prefixes["reference"])
        got_streams = streamed_ticks(client, prefixes["faulted"])
        ref_entries = Counter(identity(t) for ticks in ref_streams.values() for t in ticks)
        got_entries = Counter(identity(t) for ticks in got_streams.values() for t in ticks)
        differing = {}
        for name in sorted(ref_streams):
            want, got = candles(ref_streams[name]), candles(got_streams.get(name, []))
            diff = [(w, g) for w, g in zip(want, got, strict=False) if w != g]
            if diff or len(want) != len(got):
                differing[name] = {
                    "candles": len(want),
                    "differ": len(diff) + abs(len(want) - len(got)),
                    "first": [list(diff[0][0]), list(diff[0][1])] if diff else None,
                }
        index_diff = differing.get(NIFTY)
        return {
            "day": DAY.isoformat(),
            "slice": f"09:15-{end}",
            "speed": speed,
            "feed_flush_ms": flush_ms,
            "reference_rows": sum(reference.values()),
            "reference_s": round(reference_s, 2),
            "restart_s": round(restart_s, 2),
            "rows_after_restart": sum(after.values()),
            "rows_lost": sum(minus(reference, after).values()),
            "rows_duplicated": sum(minus(after, reference).values()),
            "lost_window_ms": window_ms,
            "at_kill": {
                "rows_streamed": sum(received.values()),
                "rows_stored": sum(at_kill_store.values()),
                "rows_unflushed": sum(unflushed.values()),
                "holes": holes,
                "newest_stored_ts_ms": newest_stored,
                "first_missing_ts_ms": missing_ts[0] if missing_ts else None,
                "last_missing_ts_ms": missing_ts[-1] if missing_ts else None,
                "lost_window_ms": window_ms,
                "lost_window_wall_ms": round(window_ms / speed, 1),
                "rows_duplicated": sum(minus(at_kill_store, reference).values()),
            },
            "stream": {
                "entries_reference": sum(ref_entries.values()),
                "entries_after_restart": sum(got_entries.values()),
                "entries_duplicated": sum(minus(got_entries, ref_entries).values()),
                "entries_lost": sum(minus(ref_entries, got_entries).values()),
                "instruments_with_candles_differing": len(differing),
                "index_candles_differing": index_diff["differ"] if index_diff else 0,
                "candles_differing_example": next(iter(differing.items()), None),
            },
        }
    finally:
        keys = [k for p in prefixes.values() for k in client.scan_iter(match=p + "*", count=1000)]
        if keys:
            client.delete(*keys)
        client.close()


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auctionsite.settings")
    import django

    django.setup()
    from django.conf import settings

    quick = "--quick" in sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="fault-feed-") as tmp:
        report = measure(
            settings.REDIS_URL,
            Path(tmp),
            end="09:25" if quick else "10:15",
            speed=100 if quick else 60,
            flush_ms=int(settings.FEED_FLUSH_MS),
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
