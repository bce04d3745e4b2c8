"""Benchmark of the history store: writer throughput, reader latency while writing, imports.

    .venv/bin/python bench/bench_history.py [--quick]

Prints one JSON object:
* write_paced_60k_per_s: 20 s of generated exchange data (60,000 ticks per second over 200
  instruments; --quick: 5 s) fed to HistoryWriter in 2,000-tick calls, as the feed would, with a
  flush after every second of data and no faster than real time; `duty` is the fraction of wall
  time the writer was busy. write_flat_out: the next 20 s of data as fast as possible (a flush per
  second of data, so several per wall-clock second). ticks_per_s = ticks / time spent in
  write_ticks + flush (tick generation excluded). The store already holds a previous day of
  candles.
* read_while_*: another process runs read_ticks (one instrument, today), read_candles_1m (both
  days) and session_days in a loop during each phase; latencies in ms. read_idle: the same after
  the writer closed (one file per day).
* write_records: batches of full-depth ticks (5 levels, 2,000 instruments, 24,000 ticks a batch,
  half a second at the feed benchmark's 50k ticks/s) written and flushed, CPU µs per tick
  (process time, so another busy process on the machine barely moves it): as runfeed's writer
  process gets them (`persistence.records`, what the decoder process builds) through
  `HistoryWriter.write_records`, and as Tick objects through `write_ticks`.
* import: `import_history` of each file in ../shared/data when present (skipped otherwise), then
  the same file again (must add nothing).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from feeds.ticks import Tick  # noqa: E402
from persistence import readers, records  # noqa: E402
from persistence.writer import HistoryWriter  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
OPEN_MS = 1_710_215_100_000  # 2024-03-12 09:15 IST
DAY = date(2024, 3, 12)
PRIOR_DAY = date(2024, 3, 11)
INSTRUMENTS = [f"NSE_FO|{40000 + i}" for i in range(200)]
PER_SECOND = 60_000
BATCH = 2_000


def generate(second: int) -> list[Tick]:
    per_instrument = PER_SECOND // len(INSTRUMENTS)
    step = 1000 // per_instrument
    out = []
    for j in range(per_instrument):
        n = second * per_instrument + j
        ts = OPEN_MS + second * 1000 + j * step
        for k, key in enumerate(INSTRUMENTS):
            ltp = 100.0 + k + ((n * 13 + k) % 97) * 0.05
            out.append(Tick(key, ts, ltp, 25, (n + 1) * 25, 5000.0 + n, ltp - 0.05, 75, ltp + 0.05, 50))
    return out


def prior_day_candles() -> pa.Table:
    """A full previous session (375 minutes) of candles for every instrument."""
    start = OPEN_MS - 86_400_000
    keys, ts, prices = [], [], []
    for k, key in enumerate(INSTRUMENTS):
        for m in range(375):
            keys.append(key)
            ts.append(start + m * 60_000)
            prices.append(100.0 + k + (m % 50) * 0.05)
    return pa.table(
        {
            "instrument_key": keys,
            "ts_ms": ts,
            "open": prices,
            "high": [p + 0.5 for p in prices],
            "low": [p - 0.5 for p in prices],
            "close": prices,
            "volume": [1000] * len(keys),
        }
    )


def _ms(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p95": round(ordered[int(len(ordered) * 0.95) - 1 if len(ordered) > 1 else 0] * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def reader_loop(root: str, stop, results) -> None:
    timings: dict[str, list[float]] = {"read_ticks": [], "read_candles_1m": [], "session_days": []}
    errors, rows = [], 0
    while not stop.is_set():
        try:
            t = time.perf_counter()
            rows = readers.read_ticks(INSTRUMENTS[7], DAY, DAY, root=root).num_rows
            timings["read_ticks"].append(time.perf_counter() - t)
            t = time.perf_counter()
            readers.read_candles_1m(INSTRUMENTS[7], PRIOR_DAY, DAY, root=root)
            timings["read_candles_1m"].append(time.perf_counter() - t)
            t = time.perf_counter()
            readers.session_days(INSTRUMENTS[7], root=root)
            timings["session_days"].append(time.perf_counter() - t)
        except Exception as exc:  # counted, not fatal: the bench reports it
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.05)
    results.put(
        {"latency_ms": {k: _ms(v) for k, v in timings.items()}, "errors": errors[:5], "rows_last": rows}
    )


def _with_reader(root: Path, ctx, work) -> tuple[object, dict]:
    """Run `work()` while another process reads the store in a loop; returns both results."""
    stop, results = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=reader_loop, args=(str(root), stop, results))
    reader.start()
    time.sleep(1.5)  # let the reader import and connect before timing
    outcome = work()
    stop.set()
    report = results.get(timeout=120)
    reader.join(timeout=60)
    return outcome, report


def _feed(writer: HistoryWriter, first: int, seconds: int, paced: bool) -> dict:
    """Feed `seconds` seconds of data in BATCH-tick calls with a flush after each second of data;
    paced: no faster than real time (the feed's case), else flat out."""
    flushes, busy, ticks = [], 0.0, 0
    for s in range(first, first + seconds):
        second = generate(s)
        ticks += len(second)
        t0 = time.perf_counter()
        for i in range(0, len(second), BATCH):
            writer.write_ticks(second[i : i + BATCH])
        t1 = time.perf_counter()
        writer.flush()
        t2 = time.perf_counter()
        flushes.append(t2 - t1)
        busy += t2 - t0
        if paced:
            time.sleep(max(0.0, 1.0 - (t2 - t0)))
    return {
        "seconds_of_data": seconds,
        "ticks": ticks,
        "busy_s": round(busy, 2),
        "ticks_per_s": round(ticks / busy),
        "flush_ms": _ms(flushes),
    }


def bench_write(seconds: int) -> dict:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "history"
        writer = HistoryWriter(root, flush_interval=None)
        writer.write_candles(prior_day_candles())  # so readers query candles while ticks stream in
        writer.flush()
        paced, read_paced = _with_reader(root, ctx, lambda: _feed(writer, 0, seconds, paced=True))
        paced["duty"] = round(paced["busy_s"] / seconds, 3)
        flat_out, read_flat_out = _with_reader(
            root, ctx, lambda: _feed(writer, seconds, seconds, paced=False)
        )
        t = time.perf_counter()
        writer.close()
        close_s = time.perf_counter() - t
        stats = dict(writer.stats)
        _, read_idle = _with_reader(root, ctx, lambda: time.sleep(4))
        files = len(list(root.glob("*/*/*.parquet")))
        size_mb = sum(p.stat().st_size for p in root.glob("*/*/*.parquet")) / 1e6
    return {
        "write_paced_60k_per_s": paced,
        "write_flat_out": flat_out,
        "writer": {
            "instruments": len(INSTRUMENTS),
            "written": stats["written"],
            "merges": stats["compactions"],
            "close_s": round(close_s, 2),
            "files_after_close": files,
            "parquet_mb": round(size_mb, 1),
        },
        "read_while_paced_writing": read_paced,
        "read_while_flat_out_writing": read_flat_out,
        "read_idle": read_idle,
    }


def bench_import(quick: bool) -> dict:
    from persistence.importing import import_history

    names = ["nifty50_1m_2024-01_2024-04.parquet"]
    if not quick:
        names += ["nifty50_ticks_1s_2022-08_2022-10.parquet", "fo_trades_2022-11-18.parquet"]
    out: dict[str, object] = {}
    for name in names:
        path = DATA / name
        if not path.exists():
            out[name] = {"skipped": f"{path} not found"}
            continue
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            first = import_history([path], root=Path(tmp))
            first_s = time.perf_counter() - t
            t = time.perf_counter()
            again = import_history([path], root=Path(tmp))
            again_s = time.perf_counter() - t
        rows = first.ticks_read + first.candles
        out[name] = {
            "rows": rows,
            "seconds": round(first_s, 2),
            "rows_per_s": round(rows / first_s),
            "reimport_seconds": round(again_s, 2),
            "reimport_new_ticks": again.ticks_written,
        }
    return out


def tick_batches(count: int, instruments: int = 2_000, per_instrument: int = 12) -> list[list[Tick]]:
    batches = []
    for b in range(count):
        ticks = []
        for j in range(per_instrument):
            ts = OPEN_MS + (b * per_instrument + j) * 40
            for i in range(instruments):
                p = 100.0 + i % 50 + ((b * per_instrument + j) % 13) * 0.05
                depth = tuple(
                    (p - k * 0.05, 75 * (k + 1), p + 0.05 + k * 0.05, 50 * (k + 1)) for k in range(5)
                )
                ticks.append(
                    Tick(f"NSE_FO|{100_000 + i}", ts, p, 75, 75 * (b + 1), 1000.0 + i, *depth[0], 99.0, depth)
                )
        batches.append(ticks)
    return batches


def bench_records(quick: bool) -> dict:
    from feeds.ticks import tick_fields

    batches = tick_batches(4 if quick else 12)
    encoded = [records.encode_rows(list(map(tick_fields, batch))) for batch in batches]

    def cpu_us(write, parts) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            writer = HistoryWriter(tmp, flush_interval=None)
            started = time.process_time()
            for part in parts:
                write(writer, part)
            spent = time.process_time() - started
            writer.close()
        return round(spent / sum(map(len, batches)) * 1e6, 2)

    return {
        "ticks": sum(map(len, batches)),
        "write_records_flush_cpu_us_per_tick": cpu_us(lambda w, r: w.write_records(*r, flush=True), encoded),
        "write_ticks_flush_cpu_us_per_tick": cpu_us(lambda w, b: (w.write_ticks(b), w.flush()), batches),
    }


def main() -> None:
    quick = "--quick" in sys.argv
    result = bench_write(5 if quick else 20)
    result["write_records"] = bench_records(quick)
    result["import"] = bench_import(quick)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
