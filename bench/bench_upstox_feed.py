"""Upstox feed throughput and lag: the fake Upstox (another process) → the real SDK socket →
decode → normalise → UpstoxSource → sink (FeedPipeline when present: store + Redis Streams).

Prints one JSON object:
* `stages`: per-stage cost of one 50-instrument full-mode frame (protobuf decode, the SDK's
  `MessageToDict`, normalising the dict, normalising the protobuf directly, and the C decoder doing
  both) as ticks/s ceilings;
* `runs`: for each configuration, ticks/s received over a sustained window (60 s, `--quick` 10 s)
  while the fake offers `--rate` ticks/s (default 50,000, the goal) over 2,000 full-mode
  instruments, and lag p50/p99/max in ms from the fake's send time (stamped in each frame's
  currentTs) to the tick handed to the sink (`lag_ms_*`). Configurations: `proto` (the SDK's
  socket and protobuf decode, our protobuf normaliser, on the SDK's thread), `proto_saturated`
  (offered twice the rate: the ceiling), `sdk_dict` (the SDK's own MessageToDict path), `process`
  (frames decoded and normalised in the decoder process, feeds.upstox.decoder: its C decoder when
  built, `c_decoder` says), and with
  FeedPipeline behind (the history writer in its own process, as runfeed wires it):
  `proto_pipeline` and `process_pipeline` (runfeed's path). For the pipeline runs the lag goes on
  to the end: `published_lag_ms_*` until the tick is in its
  Redis Stream (the XADD batch holding it has completed: what strategies and the dashboard read),
  and `persisted_lag_ms_*` until the history store has published it (the flush holding it has
  completed; the pipeline flushes every FEED_FLUSH_MS, so this is bounded below by that interval).
  `feed_gc_full_collections`: full collections of the feed process's cyclic GC during the window
  (the loop waits through each).
Redis keys use a unique prefix and are deleted afterwards; the store is a temporary directory.
Usage: python bench/bench_upstox_feed.py [--quick] [--rate TICKS_PER_S] [--instruments N] [--only RUN,...]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auctionsite.settings")

import django  # noqa: E402

django.setup()

import logging  # noqa: E402

from django.conf import settings  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as pb  # noqa: E402

from feeds.upstox import client  # noqa: E402
from feeds.upstox.decoder import _fast_rows  # noqa: E402
from feeds.upstox.fake.market import SimulatedMarket, feed_frame  # noqa: E402
from feeds.upstox.normalise import ticks_from_message, ticks_from_response  # noqa: E402
from feeds.upstox.source import SubscriptionPlan, UpstoxSource  # noqa: E402

FRAME_SIZE = 50
WARMUP_S = 3.0


def stage_costs() -> dict:
    market = SimulatedMarket()
    frame = feed_frame(market, [(f"NSE_FO|{i}", "full") for i in range(FRAME_SIZE)], 1, 1)

    def per_frame(fn, seconds: float = 0.5) -> float:
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            fn()
            n += 1
        return (time.perf_counter() - started) / n

    response = pb.FeedResponse.FromString(frame)
    message = json_format.MessageToDict(response)
    costs = {
        "decode_protobuf": per_frame(lambda: pb.FeedResponse.FromString(frame)),
        "sdk_message_to_dict": per_frame(lambda: json_format.MessageToDict(response)),
        "normalise_dict": per_frame(lambda: ticks_from_message(message)),
        "normalise_protobuf": per_frame(lambda: ticks_from_response(response)),
    }
    fast_rows = _fast_rows()
    if fast_rows is not None:  # the decoder process's C path: decode + normalise in one
        costs["c_decoder"] = per_frame(lambda: fast_rows(frame))
    out = {
        "frame_bytes": len(frame),
        "instruments_per_frame": FRAME_SIZE,
        **{f"{k}_us_per_frame": round(v * 1e6, 1) for k, v in costs.items()},
        **{f"{k}_ticks_per_s": round(FRAME_SIZE / v) for k, v in costs.items()},
    }
    sdk = costs["decode_protobuf"] + costs["sdk_message_to_dict"] + costs["normalise_dict"]
    fast = costs["decode_protobuf"] + costs["normalise_protobuf"]
    out["sdk_dict_path_ceiling_ticks_per_s"] = round(FRAME_SIZE / sdk)
    out["protobuf_path_ceiling_ticks_per_s"] = round(FRAME_SIZE / fast)
    return out


class Probe:
    """The sink the source sees: stamps lag and counts, then hands ticks on (or drops them)."""

    def __init__(self, inner=None):
        self.inner = inner
        self.measuring = False
        self.count = 0
        self.total = 0
        self.lags = array("q")
        # Per measured put: its wall time (ms) and where its ticks' lags start in `lags`.
        self.put_at = array("d")
        self.put_start = array("q")
        self.status: dict = {}

    def put(self, ticks) -> None:
        now_ns = time.time_ns()
        now = now_ns // 1_000_000
        self.total += len(ticks)
        if self.measuring:
            self.count += len(ticks)
            self.put_at.append(now_ns / 1e6)
            self.put_start.append(len(self.lags))
            lags = self.lags
            for t in ticks:
                lags.append(now - t.ts_ms)
        if self.inner is not None:
            self.inner.put(ticks)

    def put_packed(self, keys, ts, payloads, records) -> None:
        now_ns = time.time_ns()
        self.total += len(ts)
        if self.measuring:
            self.count += len(ts)
            self.put_at.append(now_ns / 1e6)
            self.put_start.append(len(self.lags))
            self.lags.extend(map((now_ns // 1_000_000).__sub__, ts))
        if self.inner is not None:
            self.inner.put_packed(keys, ts, payloads, records)

    def set_status(self, **fields) -> None:
        self.status.update(fields)
        if self.inner is not None:
            self.inner.set_status(**fields)


class ProbedSource:
    def __init__(self, source: UpstoxSource, probe: Probe):
        self.source = source
        self.probe = probe
        self.name = source.name

    async def run(self, sink) -> None:
        self.probe.inner = sink
        await self.source.run(self.probe)


def later_lags(probe: Probe, done: list[tuple[float, float]]) -> array:
    """Each measured tick's lag until the batch holding it completed: `done` lists, in order,
    (the wall ms a batch was cut from the buffer, the wall ms it completed); a tick put at p went
    out with the first batch cut after p. Ticks of no completed batch are left out."""
    out = array("d")
    cuts = [cut for cut, _ in done]
    starts = list(probe.put_start) + [len(probe.lags)]
    for i, p in enumerate(probe.put_at):
        j = bisect.bisect_left(cuts, p)
        if j == len(cuts):
            break
        extra = done[j][1] - p
        out.extend(lag + extra for lag in probe.lags[starts[i] : starts[i + 1]])
    return out


def percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    return float(values[min(len(values) - 1, int(q * len(values)))])


async def measure(probe: Probe, seconds: float) -> tuple[float, int]:
    deadline = time.monotonic() + 30
    while probe.total == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no ticks from the fake (status {probe.status})")
        await asyncio.sleep(0.05)
    await asyncio.sleep(WARMUP_S)
    probe.measuring = True
    started = time.monotonic()
    await asyncio.sleep(seconds)
    probe.measuring = False
    return time.monotonic() - started, probe.count


def make_source(decode: str, instruments: int) -> UpstoxSource:
    plan = SubscriptionPlan(fixed={f"NSE_FO|{100_000 + i}": "full" for i in range(instruments)})
    return UpstoxSource(
        [],
        token_provider=lambda: "bench-token",
        plan=plan,
        decode=decode,
        watchdog_s=60,
        depth_every_ms=settings.FEED_DEPTH_EVERY_MS,
    )


async def run_plain(decode: str, instruments: int, seconds: float) -> dict:
    probe = Probe()
    source = make_source(decode, instruments)
    task = asyncio.create_task(source.run(probe))
    try:
        elapsed, count = await measure(probe, seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return summarise(probe, elapsed, count, source)


async def run_pipeline(
    decode: str, instruments: int, seconds: float, tmp: Path, prefix: str, fake_pid: int
) -> dict:
    import redis.asyncio as aioredis
    from channels.layers import get_channel_layer

    from feeds.pipeline import FeedPipeline
    from persistence.writer_process import HistoryWriterProcess

    published: list[tuple[float, float]] = []
    persisted: list[tuple[float, float]] = []

    class TimedPipeline(FeedPipeline):
        async def flush_store(self) -> None:
            cut = time.time() * 1000.0  # no later than the real cut: errs towards more lag
            pending = bool(self._pending)
            await super().flush_store()
            if pending:
                persisted.append((cut, time.time() * 1000.0))

    def on_flush(report) -> None:
        published.append((report.cut_at * 1000.0, time.time() * 1000.0))

    r = aioredis.from_url(settings.REDIS_URL)
    layer = get_channel_layer()
    source = make_source(decode, instruments)
    probe = Probe()
    keys = sorted(source.plan.fixed)
    writer = HistoryWriterProcess(tmp)
    pipeline = TimedPipeline(
        source_name="upstox",
        writer=writer,
        redis=r,
        channel_layer=layer,
        snapshot_keys=keys[:20],
        flush_ms=settings.FEED_FLUSH_MS,
        stream_ms=settings.FEED_STREAM_MS,
        snapshot_ms=settings.FEED_SNAPSHOT_MS,
        stream_maxlen=settings.TICK_STREAM_MAXLEN,
        key_prefix=prefix,
    )
    pipeline.on_flush.append(on_flush)
    full_collections = GcPauses()
    task = asyncio.create_task(pipeline.run(ProbedSource(source, probe)))
    try:
        with full_collections:
            elapsed, count = await measure(probe, seconds)
        pids = {"writer_process": writer.pid, "decoder_process": source.decoder_pid, "fake_upstox": fake_pid}
        cpu = await cpu_shares(min(10.0, seconds), pids)
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 120)
        await layer.flush()
        await r.aclose()
    out = summarise(probe, elapsed, count, source)
    for name, done in (("published", published), ("persisted", persisted)):
        lags = sorted(later_lags(probe, done))
        out[f"{name}_lag_ms_p50"] = percentile(lags, 0.50)
        out[f"{name}_lag_ms_p99"] = percentile(lags, 0.99)
        out[f"{name}_lag_ms_max"] = round(lags[-1], 1) if lags else None
        out[f"{name}_ticks"] = len(lags)
    out["pipeline_ticks_in"] = pipeline.stats.ticks_in
    out["ticks_streamed"] = pipeline.stats.ticks_streamed
    out["rows_written"] = pipeline.stats.rows_written
    out["feed_flush_ms"] = settings.FEED_FLUSH_MS
    out["feed_stream_ms"] = settings.FEED_STREAM_MS
    out["stream_batches"] = pipeline.stats.stream_flush_summary()  # each XADD batch's duration
    out["store_flushes"] = pipeline.stats.flush_summary()  # each history write + flush
    out["cpu_cores_after_run"] = cpu
    out["feed_gc_full_collections"] = full_collections.summary()  # the loop waits through each
    return out


class GcPauses:
    """Full (generation 2) collections of the cyclic GC in this process while inside the block:
    how many, and the longest, in ms."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._started) * 1000.0)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict:
        return {"count": len(self.pauses), "max_ms": round(max(self.pauses, default=0.0), 1)}


async def cpu_shares(seconds: float, pids: dict[str, int | None]) -> dict:
    """CPU (in cores) over `seconds` right after the measured window, while the run goes on: this
    process (socket thread + loop), the named processes, and the Redis server."""
    import psutil

    procs = {"feed_process": psutil.Process()}
    procs.update({name: psutil.Process(pid) for name, pid in pids.items() if pid})
    import redis as redis_sync

    redis_info = redis_sync.Redis.from_url(settings.REDIS_URL).info("server")
    procs["redis_server"] = psutil.Process(redis_info["process_id"])
    before = {k: p.cpu_times() for k, p in procs.items()}
    await asyncio.sleep(seconds)
    out = {}
    for k, p in procs.items():
        after = p.cpu_times()
        out[k] = round((after.user + after.system - before[k].user - before[k].system) / seconds, 2)
    return out


def summarise(probe: Probe, elapsed: float, count: int, source: UpstoxSource) -> dict:
    lags = sorted(probe.lags)
    return {
        "ticks_per_s": round(count / elapsed),
        "measured_s": round(elapsed, 1),
        "ticks": count,
        "lag_ms_p50": percentile(lags, 0.50),
        "lag_ms_p99": percentile(lags, 0.99),
        "lag_ms_max": float(lags[-1]) if lags else None,
        "decode_errors": source.decode_errors,
        "reconnects": source.reconnects,
    }


def start_fake(rate: float) -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "fakeupstox",
            "--port",
            "0",
            "--ws-port",
            "0",
            "--prebuilt",
            "--rate",
            str(rate),
            "--frame-size",
            str(FRAME_SIZE),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, LOG_LEVEL="WARNING"),
        cwd=ROOT,
    )
    line = proc.stdout.readline()
    match = re.search(r"UPSTOX_API_URL=(\S+) UPSTOX_WS_URL=(\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"fakeupstox did not start: {line!r}")
    return proc, match[1], match[2]


def cleanup_redis(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i : i + 500])
    r.close()


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=50_000.0, help="ticks/s the fake offers (the goal)")
    parser.add_argument("--instruments", type=int, default=2000)
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # reconnect chatter would only slow the run
    seconds = 10.0 if args.quick else 60.0
    result: dict = {
        "bench": "upstox_feed",
        "quick": args.quick,
        "offered_ticks_per_s": args.rate,
        "depth_every_ms": settings.FEED_DEPTH_EVERY_MS,
        "c_decoder": _fast_rows() is not None,  # what the decoder process uses (feeds/upstox/_fastfeed.c)
    }
    result["instruments"] = args.instruments
    result["stages"] = stage_costs()
    try:
        import feeds.pipeline  # noqa: F401

        has_pipeline = True
    except ImportError:
        has_pipeline = False
    # (name, decode, through the pipeline, offered ticks/s). The saturated run offers twice the
    # goal, so its ticks/s is the ceiling of this machine and its lag shows the queue building.
    configs = [
        ("proto", "proto", False, args.rate),
        ("proto_saturated", "proto", False, 2 * args.rate),
        ("sdk_dict", "dict", False, args.rate),
        ("process", "process", False, args.rate),
    ]
    if has_pipeline:
        configs.append(("proto_pipeline", "proto", True, args.rate))
        # What runfeed runs: frames decoded in the decoder process, the store in the writer process.
        configs.append(("process_pipeline", "process", True, args.rate))
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in configs if c[0] in wanted]
    prefix = f"benchupstox{uuid.uuid4().hex[:8]}."
    runs = {}
    try:
        for name, decode, with_pipeline, rate in configs:
            fake, api_url, ws_url = start_fake(rate)
            try:
                settings.UPSTOX_API_URL, settings.UPSTOX_WS_URL = api_url, ws_url
                client.install_ws_url_rewrite(ws_url)
                if with_pipeline:
                    with tempfile.TemporaryDirectory() as tmp:
                        runs[name] = asyncio.run(
                            run_pipeline(
                                decode, args.instruments, seconds, Path(tmp), prefix + name + ".", fake.pid
                            )
                        )
                else:
                    runs[name] = asyncio.run(run_plain(decode, args.instruments, seconds))
                runs[name]["offered_ticks_per_s"] = rate
            finally:
                fake.terminate()
                fake.wait(20)
    finally:
        if has_pipeline:
            cleanup_redis(prefix)
    result["runs"] = runs
    result["pipeline_present"] = has_pipeline
    result["goal"] = {"ticks_per_s": 50_000, "lag_ms_p99": 250}
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
