"""Benchmark of the auction engine (strategies.engine) on real index data.

    .venv/bin/python bench/bench_engine.py [--quick] [--profile]

Prints one JSON object:
* ticks: incremental updates per second on one core over the 1-second Nifty 50 snapshots
  (nifty50_ticks_1s_2022-08_2022-10.parquet, 29 sessions), one engine per session:
  - on_tick: one call per tick (the live path), state() asked once at the end of each session;
  - on_tick_state_every_1000: the same, plus state() after every 1,000th tick (developing
    POC/VA/structure recomputed only when counts changed);
  - on_tick_with_qty: one call per tick with a traded quantity (volume profile updated per tick);
  - on_ticks: the batch fast path (one call per session with parallel lists).
* candles: the 77 sessions of each 1-minute file (Nifty 50, Nifty Bank):
  - batch_s: seconds for compute_sessions over all 77 (best of N runs);
  - incremental_s: seconds to feed all 77 sessions candle by candle through AuctionEngine.
Data is loaded (duckdb → Python lists) outside the timed regions. --quick uses 5 sessions of ticks
and 1 run. --profile adds the top functions of a cProfile run of the on_tick loop.
Skips (prints {"skipped": reason}) when ../shared/data is absent.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from strategies.engine import AuctionEngine, compute_sessions, params_for  # noqa: E402
from strategies.engine.batch import split_sessions  # noqa: E402
from strategies.engine.loading import load_file  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TICKS = "nifty50_ticks_1s_2022-08_2022-10.parquet"
CANDLES = {
    "nifty50": ("nifty50_1m_2024-01_2024-04.parquet", "NSE_INDEX|Nifty 50"),
    "niftybank": ("niftybank_1m_2024-01_2024-04.parquet", "NSE_INDEX|Nifty Bank"),
}


def tick_loop(sessions, params, state_every: int = 0, with_qty: bool = False) -> float:
    """Seconds spent feeding every session tick by tick."""
    total = 0.0
    for day in sessions:
        ts, prices = day.ts_ms, day.price
        qtys = [1 + (t // 1000) % 50 for t in ts] if with_qty else None
        engine = AuctionEngine(params)
        on_tick = engine.on_tick
        t0 = time.perf_counter()
        if qtys is not None:
            for t, p, q in zip(ts, prices, qtys, strict=True):
                on_tick(t, p, q)
        elif state_every:
            state = engine.state
            n = 0
            for t, p in zip(ts, prices, strict=True):
                on_tick(t, p)
                n += 1
                if n == state_every:
                    state()
                    n = 0
        else:
            for t, p in zip(ts, prices, strict=True):
                on_tick(t, p)
        engine.state()
        total += time.perf_counter() - t0
    return total


def bulk_loop(sessions, params) -> float:
    t0 = time.perf_counter()
    for day in sessions:
        engine = AuctionEngine(params)
        engine.on_ticks(day.ts_ms, day.price)
        engine.state()
    return time.perf_counter() - t0


def candle_incremental(sessions, params) -> float:
    t0 = time.perf_counter()
    for day in sessions:
        engine = AuctionEngine(params)
        on_candle = engine.on_candle
        for t, o, h, lo, c in zip(day.ts_ms, day.open, day.high, day.low, day.close, strict=True):
            on_candle(t, o, h, lo, c)
        engine.state()
    return time.perf_counter() - t0


def best(fn, runs: int) -> float:
    return min(fn() for _ in range(runs))


def main() -> None:
    quick = "--quick" in sys.argv
    runs = 1 if quick else 5
    if not (DATA / TICKS).exists():
        print(json.dumps({"skipped": f"no market data at {DATA}"}))
        return
    key = "NSE_INDEX|Nifty 50"
    params = params_for(key)
    ticks = split_sessions(load_file(DATA / TICKS, key))
    if quick:
        ticks = ticks[:5]
    n_ticks = sum(len(d) for d in ticks)

    result: dict = {"python": sys.version.split()[0], "quick": quick, "runs": runs}
    timings = {
        "on_tick": best(lambda: tick_loop(ticks, params), runs),
        "on_tick_state_every_1000": best(lambda: tick_loop(ticks, params, state_every=1000), runs),
        "on_tick_with_qty": best(lambda: tick_loop(ticks, params, with_qty=True), runs),
        "on_ticks": best(lambda: bulk_loop(ticks, params), runs),
    }
    result["ticks"] = {
        "file": TICKS,
        "sessions": len(ticks),
        "ticks": n_ticks,
        **{name: {"seconds": round(s, 4), "ticks_per_s": round(n_ticks / s)} for name, s in timings.items()},
        "goal_ticks_per_s": 1_000_000,
    }

    result["candles"] = {}
    for name, (file, ckey) in CANDLES.items():
        cparams = params_for(ckey)
        data = load_file(DATA / file, ckey)
        days = split_sessions(data)
        batch_s = best(lambda data=data, cparams=cparams: _timed(compute_sessions, data, cparams), runs)
        result["candles"][name] = {
            "file": file,
            "sessions": len(days),
            "candles": len(data),
            "batch_s": round(batch_s, 4),
            "incremental_s": round(
                best(lambda days=days, cparams=cparams: candle_incremental(days, cparams), runs), 4
            ),
            "goal_batch_s": 0.2,
        }

    if "--profile" in sys.argv:
        prof = cProfile.Profile()
        prof.enable()
        tick_loop(ticks[:5], params)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(6)
        result["profile_on_tick"] = [line.strip() for line in out.getvalue().splitlines() if "(" in line][:8]
    print(json.dumps(result))


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
