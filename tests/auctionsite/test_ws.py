"""MarketConsumer through the real ASGI application (origin check, session auth, routing) and the
real Redis pub/sub channel layer (under a private prefix)."""

from __future__ import annotations

import json
import secrets
from datetime import datetime

import msgpack
import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from auctionsite import selectors
from auctionsite.asgi import application
from feeds.groups import FEED_STATUS_KEY, LAST_SNAPSHOT_KEY, MARKET_GROUP, tick_stream_key
from feeds.ticks import IST, Tick, pack_tick

ORIGIN = (b"origin", b"http://testserver")

SNAPSHOT = {
    "type": "market.snapshot",
    "ts_ms": 1_764_050_000_000,
    "instruments": {
        "NSE_INDEX|Nifty 50": {
            "name": "Nifty 50",
            "ltp": 26012.35,
            "prev_close": 25980.1,
            "change": 32.25,
            "change_pct": 0.12,
            "open": 25990.0,
            "high": 26040.0,
            "low": 25970.5,
            "volume": 0,
            "oi": 0,
            "ts_ms": 1_764_050_000_000,
        }
    },
    "feed": {
        "source": "sim",
        "connected": True,
        "session_state": "open",
        "ticks_per_s": 12.5,
        "last_tick_ms": 1_764_050_000_000,
        "alert": "",
    },
}


@pytest.fixture
def session_cookie(client, django_user_model):
    user = django_user_model.objects.create_user("ws-trader", password="not-used-here")
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


@pytest.fixture
def market_redis(settings, test_redis_url):
    """The consumer reads the fixed snapshot keys from the test Redis database, cleared around the
    test, and the tick stream of a watchlist instrument of its own."""
    settings.REDIS_URL = test_redis_url
    settings.WATCHLIST = [f"NSE_INDEX|Test {secrets.token_hex(4)}"]
    client = redis.Redis.from_url(test_redis_url)
    keys = [LAST_SNAPSHOT_KEY, FEED_STATUS_KEY, tick_stream_key(settings.WATCHLIST[0])]
    client.delete(*keys)
    yield client
    client.delete(*keys)
    client.close()


def communicator(*headers):
    return WebsocketCommunicator(application, "/ws/market/", headers=list(headers))


@pytest.mark.django_db(transaction=True)
def test_anonymous_connection_is_closed_with_4401(private_channel_layer):
    async def scenario():
        ws = communicator(ORIGIN)
        connected, code = await ws.connect()
        assert (connected, code) == (False, 4401)

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_foreign_origin_is_refused(private_channel_layer, session_cookie):
    async def scenario():
        ws = communicator((b"origin", b"https://evil.example"), session_cookie)
        connected, _ = await ws.connect()
        assert connected is False

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_logged_in_user_receives_group_snapshots(private_channel_layer, session_cookie, market_redis):
    async def scenario():
        ws = communicator(ORIGIN, session_cookie)
        connected, _ = await ws.connect()
        assert connected
        assert await ws.receive_nothing(timeout=0.3)  # nothing stored yet: no first snapshot
        layer = get_channel_layer()
        await layer.group_send(MARKET_GROUP, SNAPSHOT)
        assert await ws.receive_json_from(timeout=5) == SNAPSHOT
        partial = {
            "type": "market.snapshot",
            "ts_ms": 2,
            "instruments": {"NSE_FO|43919": {"ltp": 1.5}},
            "feed": {},
        }
        await layer.group_send(MARKET_GROUP, partial)
        assert await ws.receive_json_from(timeout=5) == partial
        await ws.disconnect()

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_connect_sends_last_snapshot_with_fresher_feed_status(
    private_channel_layer, session_cookie, market_redis
):
    market_redis.set(LAST_SNAPSHOT_KEY, json.dumps(SNAPSHOT))
    market_redis.hset(
        FEED_STATUS_KEY,
        mapping={
            "source": "sim",
            "connected": "0",
            "state": "closed",
            "ticks_per_s": "0",
            "heartbeat_ms": "17",
        },
    )

    async def scenario():
        ws = communicator(ORIGIN, session_cookie)
        connected, _ = await ws.connect()
        assert connected
        first = await ws.receive_json_from(timeout=5)
        assert first["type"] == "market.snapshot"
        assert first["instruments"] == SNAPSHOT["instruments"]
        assert first["feed"]["connected"] is False
        assert first["feed"]["session_state"] == "closed"
        assert first["feed"]["heartbeat_ms"] == 17
        assert first["feed"]["last_tick_ms"] == SNAPSHOT["feed"]["last_tick_ms"]  # kept from the snapshot
        await ws.disconnect()

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_connect_accepts_a_msgpack_snapshot(private_channel_layer, session_cookie, market_redis):
    market_redis.set(LAST_SNAPSHOT_KEY, msgpack.packb(SNAPSHOT))

    async def scenario():
        ws = communicator(ORIGIN, session_cookie)
        assert (await ws.connect())[0]
        assert (await ws.receive_json_from(timeout=5))["instruments"] == SNAPSHOT["instruments"]
        await ws.disconnect()

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_redis_down_still_connects_without_first_snapshot(private_channel_layer, session_cookie, settings):
    # The channel layer keeps its own (working) Redis; only the snapshot read fails.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] != [settings.REDIS_URL]

    async def scenario():
        ws = communicator(ORIGIN, session_cookie)
        assert (await ws.connect())[0]
        assert await ws.receive_nothing(timeout=0.3)
        await get_channel_layer().group_send(MARKET_GROUP, SNAPSHOT)
        assert (await ws.receive_json_from(timeout=5))["ts_ms"] == SNAPSHOT["ts_ms"]
        await ws.disconnect()

    async_to_sync(scenario)()


def add_session_ticks(client, key: str, day_start_ms: int, count: int, *, step_ms: int = 1000) -> list[Tick]:
    """`count` ticks one `step_ms` apart from 09:15 IST of the day, with stream ids in the same order."""
    ticks = [Tick(key, day_start_ms + i * step_ms, 22_000 + (i % 50) * 0.05) for i in range(count)]
    pipe = client.pipeline(transaction=False)
    for tick in ticks:
        pipe.xadd(tick_stream_key(key), {"t": pack_tick(tick)}, id=f"{tick.ts_ms}-0")
    pipe.execute()
    return ticks


OPEN_NOV_24 = int(datetime(2026, 11, 24, 9, 15, tzinfo=IST).timestamp() * 1000)
OPEN_NOV_25 = int(datetime(2026, 11, 25, 9, 15, tzinfo=IST).timestamp() * 1000)


@pytest.mark.django_db(transaction=True)
def test_connect_sends_the_session_price_line_first(
    private_channel_layer, session_cookie, market_redis, settings
):
    key = settings.WATCHLIST[0]
    add_session_ticks(market_redis, key, OPEN_NOV_24, 30)  # yesterday: not on today's chart
    today = add_session_ticks(market_redis, key, OPEN_NOV_25, 3_000)
    market_redis.set(LAST_SNAPSHOT_KEY, json.dumps(SNAPSHOT))

    async def scenario():
        ws = communicator(ORIGIN, session_cookie)
        assert (await ws.connect())[0]
        history = await ws.receive_json_from(timeout=5)
        assert history["type"] == "market.history"
        assert set(history["series"]) == {key}  # the snapshot's Nifty has no stream here
        line = history["series"][key]
        assert 100 <= len(line) <= selectors.HISTORY_POINTS
        assert line[-1] == [today[-1].ts_ms, today[-1].ltp]
        assert all(a[0] < b[0] for a, b in zip(line, line[1:], strict=False))
        assert line[0][0] >= OPEN_NOV_25
        assert (await ws.receive_json_from(timeout=5))["type"] == "market.snapshot"
        await ws.disconnect()

    async_to_sync(scenario)()


def test_price_history_samples_evenly_and_skips_missing_streams(test_redis_url):
    key = f"NSE_FO|test{secrets.token_hex(4)}"
    client = redis.Redis.from_url(test_redis_url)
    try:
        add_session_ticks(client, key, OPEN_NOV_25, 20_000, step_ms=250)

        async def read():
            aclient = selectors.market_redis(test_redis_url)
            try:
                return await selectors.price_history(aclient, [key, "NSE_FO|absent"], points=101)
            finally:
                await aclient.aclose()

        history = async_to_sync(read)()
    finally:
        client.delete(tick_stream_key(key))
        client.close()
    assert list(history) == [key]
    times = [t for t, _ in history[key]]
    assert len(times) == 101
    gaps = {b - a for a, b in zip(times, times[1:], strict=False)}
    assert max(gaps) - min(gaps) <= 250  # evenly spaced, to one tick
    assert times[0] == OPEN_NOV_25 and times[-1] == OPEN_NOV_25 + 19_999 * 250
