"""Processes the multi-process history tests start: a paced writer and a checking reader.

Run as `python -m tests.persistence.procs writer|reader …` from the project root; each prints JSON
lines on stdout. Ticks are a deterministic function of (batch, instrument, index) so the test can
say exactly which rows must exist.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

from feeds.ticks import Tick

# 2024-03-12 09:15:00 IST
SESSION_OPEN_MS = 1_710_215_100_000
SESSION_DAY = date(2024, 3, 12)
INSTRUMENTS = ("NSE_FO|T1", "NSE_FO|T2", "NSE_INDEX|Test")
PER_INSTRUMENT = 100
STEP_MS = 250


def batch(b: int) -> list[Tick]:
    """Batch b: PER_INSTRUMENT ticks per instrument, 250 ms apart in exchange time."""
    out = []
    for j in range(PER_INSTRUMENT):
        n = b * PER_INSTRUMENT + j
        ts = SESSION_OPEN_MS + n * STEP_MS
        for k, key in enumerate(INSTRUMENTS):
            ltp = round(100 + 10 * k + ((n * 7) % 41) * 0.05, 2)
            if key.startswith("NSE_INDEX"):
                out.append(Tick(key, ts, ltp))
            else:
                out.append(Tick(key, ts, ltp, 25, (n + 1) * 25, 1000.0 + n, ltp - 0.05, 50, ltp + 0.05, 75))
    return out


def ticks_up_to(last_batch: int) -> int:
    """Ticks per instrument in batches 0..last_batch."""
    return (last_batch + 1) * PER_INSTRUMENT


def run_writer(args: argparse.Namespace) -> None:
    from persistence.writer import HistoryWriter

    writer = HistoryWriter(
        Path(args.root), flush_interval=None, compact_after=args.compact_after, grace_s=0.3
    )
    print(json.dumps({"started": True}), flush=True)
    last_flush = time.monotonic()
    deadline = time.monotonic() + args.seconds
    b = args.first
    while time.monotonic() < deadline and (args.batches is None or b < args.first + args.batches):
        writer.write_ticks(batch(b))
        if time.monotonic() - last_flush >= args.flush_every:
            writer.flush()
            last_flush = time.monotonic()
            print(json.dumps({"flushed": b}), flush=True)
        b += 1
        time.sleep(args.pause)
    writer.flush()
    print(json.dumps({"flushed": b - 1}), flush=True)
    writer.close()
    print(json.dumps({"closed": b - 1, "stats": writer.stats}), flush=True)


def run_reader(args: argparse.Namespace) -> None:
    from persistence import readers

    root = Path(args.root)
    done = root.parent / "writer-done"
    report = {"reads": 0, "errors": [], "duplicates": 0, "backwards": 0, "candle_duplicates": 0}
    last_count = 0
    last_candles = 0
    final = False
    while True:
        final = done.exists()  # read once more after the writer finished
        try:
            ticks = readers.read_ticks(args.instrument, SESSION_DAY, SESSION_DAY, root=root)
            keys = list(zip(ticks["ts_ms"].to_pylist(), ticks["ltp"].to_pylist(), strict=True))
            report["duplicates"] += len(keys) - len(set(keys))
            if len(keys) < last_count:
                report["backwards"] += 1
            last_count = len(keys)
            candles = readers.read_candles_1m(args.instrument, SESSION_DAY, SESSION_DAY, root=root)
            starts = candles["ts"].to_pylist()
            report["candle_duplicates"] += len(starts) - len(set(starts))
            if len(starts) < last_candles:
                report["backwards"] += 1
            last_candles = len(starts)
            days = readers.session_days(args.instrument, root=root)
            if ticks.num_rows and days != [SESSION_DAY]:
                report["errors"].append(f"session_days {days}")
        except Exception as exc:  # every error is a failure the test reports
            report["errors"].append(f"{type(exc).__name__}: {exc}")
        report["reads"] += 1
        if final:
            break
    report["final_ticks"] = last_count
    report["final_candles"] = last_candles
    print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    w = sub.add_parser("writer")
    w.add_argument("root")
    w.add_argument("--seconds", type=float, default=6.0)
    w.add_argument("--batches", type=int, default=None)
    w.add_argument("--first", type=int, default=0)
    w.add_argument("--flush-every", type=float, default=0.5)
    w.add_argument("--pause", type=float, default=0.05)
    w.add_argument("--compact-after", type=int, default=4)
    r = sub.add_parser("reader")
    r.add_argument("root")
    r.add_argument("--instrument", default=INSTRUMENTS[0])
    args = parser.parse_args()
    run_writer(args) if args.role == "writer" else run_reader(args)


if __name__ == "__main__":
    sys.exit(main())
