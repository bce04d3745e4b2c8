"""The live auction publisher inside a real FeedPipeline: ticks go through the pipeline's Redis
Streams (real Redis, private key prefix), the publisher reads them back from the flush reports'
ranges, and what it publishes (Channels group and Redis) is the engine's answer on the same data
(`compute_session`). Also: seeding from a real history store, candles, futures volume."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import threading
import time as time_module
from datetime import date, datetime, time, timedelta

import pytest
import redis.asyncio as aioredis
from channels_redis.pubsub import RedisPubSubChannelLayer

from auctionsite.auction_feed import (
    AUCTION_GROUP,
    AuctionPublisher,
    _future_underlying,
    auction_state_key,
    seeded_engine,
)
from feeds.groups import tick_stream_key
from feeds.pipeline import FeedPipeline
from feeds.ticks import IST, Tick, pack_tick
from strategies.engine import NIFTY50, Ticks, compute_session, compute_sessions, state_to_dict

NIFTY = "NSE_INDEX|Nifty 50"
FUTURE = "NSE_FO|62867104"
DAY = date(2025, 11, 24)


def session_ticks(
    day: date = DAY, *, seed: int = 7, every_s: int = 5, start: float = 26_000.0, key: str = NIFTY
):
    """A whole session (09:15–15:30 IST) of index ticks, a seeded random walk with a trend leg,
    one tick every `every_s` seconds: 13 letters and a profile of a few dozen rows."""
    rng = random.Random(seed)
    t = int(datetime.combine(day, time(9, 15), tzinfo=IST).timestamp() * 1000)
    end = int(datetime.combine(day, time(15, 30), tzinfo=IST).timestamp() * 1000)
    price = start
    out = []
    i = 0
    while t < end:
        drift = 0.12 if 2_000 < i < 2_600 else 0.0
        price = round((price + rng.gauss(drift, 2.2)) * 20) / 20
        out.append(Tick(key, t, price))
        t += every_s * 1000
        i += 1
    return out


def as_engine_ticks(ticks: list[Tick]) -> Ticks:
    return Ticks([t.ts_ms for t in ticks], [t.ltp for t in ticks])


def run_async(make_coro):
    """Run a coroutine on a fresh loop in its own thread: safe even when Playwright's sync API
    (session-wide browser fixture) holds a running loop in this one."""
    result: list = []
    errors: list[BaseException] = []

    def target():
        try:
            result.append(asyncio.run(make_coro()))
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=120)
    if errors:
        raise errors[0]
    return result[0]


@pytest.fixture
def redis_prefix():
    return f"test-auction-{secrets.token_hex(5)}:"


async def _cleanup(client, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)


def test_publisher_in_the_pipeline_matches_compute_session(settings, redis_prefix, tmp_path):
    ticks = session_ticks()
    future_ticks = [Tick(FUTURE, t.ts_ms, round((t.ltp + 80) * 20) / 20, ltq=75) for t in ticks[::3]]
    expected = compute_session(as_engine_ticks(ticks), NIFTY50)

    async def scenario():
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        layer = RedisPubSubChannelLayer(hosts=[settings.REDIS_URL], prefix=redis_prefix.rstrip(":"))
        channel = await layer.new_channel()
        await layer.group_add(redis_prefix + AUCTION_GROUP, channel)
        pipeline = FeedPipeline(
            source_name="test",
            writer=None,
            redis=client,
            snapshot_keys=[NIFTY, FUTURE],
            names={NIFTY: "Nifty 50", FUTURE: "NIFTY FUT 30 DEC 25"},
            key_prefix=redis_prefix,
        )
        publisher = AuctionPublisher(
            redis=client,
            channel_layer=layer,
            instruments={NIFTY: "Nifty 50"},
            futures={NIFTY: FUTURE},
            key_prefix=redis_prefix,
            history_root=tmp_path / "no-store",
            autostart=False,
        )
        pipeline.on_flush.append(publisher.on_flush)
        try:
            merged = sorted(ticks + future_ticks, key=lambda t: t.ts_ms)
            half = len(merged) // 2
            # Two flushes with a publish between them: the publisher reads each range once.
            pipeline.put(merged[:half])
            await pipeline.flush_streams()
            assert await publisher.step() == 1
            pipeline.put(merged[half:])
            await pipeline.flush_streams()
            assert await publisher.step() == 1
            assert await publisher.step() == 0  # nothing new: nothing sent (conflated)
            received = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(2)]
            stored = json.loads(await client.get(redis_prefix + auction_state_key(NIFTY)))
        finally:
            await _cleanup(client, redis_prefix)
            await layer.flush()
            await client.aclose()
        return publisher, received, stored

    publisher, received, stored = run_async(scenario)
    assert publisher.ticks_read == len(ticks) + len(future_ticks)
    last = received[-1]
    assert last["type"] == "auction.state" and last["instrument_key"] == NIFTY
    want = state_to_dict(expected)
    got = last["state"]
    for field in ("tpo_counts", "poc", "vah", "val", "ibh", "ibl", "periods", "open_type", "day_type"):
        assert got[field] == want[field], field
    assert len(got["periods"]) == 13
    assert stored["state"]["poc"] == want["poc"] and stored["state"]["tpo_counts"] == want["tpo_counts"]
    # 1-minute candles: one per minute of the session, OHLC of that minute's ticks. Redis keeps the
    # whole day; the group gets the whole day first, then (within FULL_CANDLES_EVERY_S) the last few.
    assert len(stored["candles"]) == 375 and stored["candles_partial"] is False
    first_minute = [t.ltp for t in ticks if t.ts_ms < ticks[0].ts_ms + 60_000]
    assert stored["candles"][0][1:] == [
        first_minute[0],
        max(first_minute),
        min(first_minute),
        first_minute[-1],
    ]
    assert received[0]["candles_partial"] is False and len(received[0]["candles"]) > 2
    assert last["candles_partial"] is True and last["candles"] == stored["candles"][-2:]
    # The index has no volume: the future's, moved onto the index rows by the basis (80 points).
    assert last["volume_source"] == "futures"
    volume = last["state"]["volume_by_row"]
    assert sum(volume.values()) == 75 * len(future_ticks)
    # Each future tick is its index tick + 80 points, so every row lands on a row the index traded.
    assert set(volume) <= set(got["tpo_counts"])


def test_seeded_engine_takes_prior_from_the_history_store(tmp_path):
    from persistence.writer import HistoryWriter

    days = [DAY - timedelta(days=d) for d in (4, 3, 2)]  # Thu, Fri, Sat-less: plain calendar days
    history = [t for i, d in enumerate(days) for t in session_ticks(d, seed=i, every_s=20)]
    writer = HistoryWriter(tmp_path, flush_interval=None)
    try:
        writer.write_ticks(history)
        writer.flush()
    finally:
        writer.close()
    engine = seeded_engine(NIFTY, DAY, tmp_path)
    from persistence.readers import read_candles_1m
    from strategies.engine.loading import candles_from_arrow

    states = compute_sessions(
        candles_from_arrow(read_candles_1m(NIFTY, days[0], days[-1], tmp_path)), NIFTY50
    )
    assert [s.session_date for s in states] == days
    for t in session_ticks(DAY, seed=9)[:200]:
        engine.on_tick(t.ts_ms, t.ltp)
    state = engine.state()
    assert state.prior is not None and state.prior.date == days[-1]
    assert (state.prior.poc, state.prior.vah, state.prior.val) == (
        states[-1].poc,
        states[-1].vah,
        states[-1].val,
    )
    assert states[-1].poc in state.naked_pocs or state.low <= states[-1].poc <= state.high


def test_unseeded_engine_without_a_store(tmp_path):
    engine = seeded_engine(NIFTY, DAY, tmp_path / "missing")
    assert engine.state().prior is None


def test_future_is_matched_to_its_index():
    names = {NIFTY: "Nifty 50", "NSE_INDEX|Nifty Bank": "Nifty Bank"}
    keys = list(names)
    assert _future_underlying("NIFTY FUT 30 DEC 25", keys, names) == NIFTY
    assert _future_underlying("BANKNIFTY25DECFUT", keys, names) == "NSE_INDEX|Nifty Bank"
    assert _future_underlying("NIFTY 26000 CE 30 DEC 25", keys, names) is None


def test_stream_keys_are_the_pipelines(redis_prefix):
    publisher = AuctionPublisher(redis=None, instruments={NIFTY: "Nifty 50"}, key_prefix=redis_prefix)
    assert publisher._stream(NIFTY) == redis_prefix + tick_stream_key(NIFTY)


def test_a_publisher_started_mid_session_rebuilds_the_day_from_the_stream(settings, redis_prefix, tmp_path):
    """Restarted feed: a new publisher's first read takes the day's ticks already in the stream
    (not only the latest batch), and skips what the stream holds from before that day."""
    ticks = session_ticks()
    expected = compute_session(as_engine_ticks(ticks), NIFTY50)

    async def scenario():
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        stream = redis_prefix + tick_stream_key(NIFTY)
        try:
            # An entry added "yesterday" (by the stream's clock), then today's session.
            yesterday_ms = int(time_module.time() * 1000) - 86_400_000
            await client.xadd(
                stream,
                {"t": pack_tick(Tick(NIFTY, ticks[0].ts_ms - 86_400_000, 1.0))},
                id=f"{yesterday_ms}-0",
            )
            pipeline = FeedPipeline(source_name="test", writer=None, redis=client, key_prefix=redis_prefix)
            pipeline.put(ticks[:-10])
            await pipeline.flush_streams()  # written before the publisher existed
            publisher = AuctionPublisher(
                redis=client,
                instruments={NIFTY: "Nifty 50"},
                key_prefix=redis_prefix,
                history_root=tmp_path,
                autostart=False,
            )
            pipeline.on_flush.append(publisher.on_flush)
            pipeline.put(ticks[-10:])
            await pipeline.flush_streams()
            await publisher.step()
            return publisher.ticks_read, publisher.auctions[NIFTY].message()
        finally:
            await _cleanup(client, redis_prefix)
            await client.aclose()

    read, message = run_async(scenario)
    assert read == len(ticks)
    assert message["state"]["tpo_counts"] == state_to_dict(expected)["tpo_counts"]
    assert message["state"]["poc"] == expected.poc


def test_close_stops_a_publisher_whose_step_swallows_the_cancellation(redis_prefix):
    """A cancellation that lands inside a library call can be swallowed (it hung runfeed's exit):
    close() still ends the task, promptly."""
    publisher = AuctionPublisher(redis=None, instruments={NIFTY: "Nifty 50"}, key_prefix=redis_prefix)
    swallowed = []

    async def step() -> int:
        try:
            await asyncio.sleep(30)  # a slow library call: the cancellation lands in here
        except asyncio.CancelledError:
            swallowed.append(1)  # what a library that catches it too broadly does
        return 0

    publisher.step = step

    async def scenario() -> float:
        publisher._task = asyncio.get_running_loop().create_task(publisher.run())
        await asyncio.sleep(0.1)
        task = publisher._task
        started = time_module.monotonic()
        await asyncio.wait_for(publisher.close(), 8)  # the old close() waited forever here
        assert task.done()
        return time_module.monotonic() - started

    # In a thread, so a regression fails here instead of hanging the suite.
    result: list[float] = []
    runner = threading.Thread(target=lambda: result.append(asyncio.run(scenario())), daemon=True)
    runner.start()
    runner.join(15)
    assert not runner.is_alive(), "close() hung on a task that swallowed its cancellation"
    assert result and result[0] < 5.0
    assert swallowed == [1]
