"""MarketConsumer through the real ASGI application (origin check, session auth, routing) and the
real Redis pub/sub channel layer (under a private prefix)."""

from __future__ import annotations

import json

import msgpack
import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from auctionsite.asgi import application
from feeds.groups import FEED_STATUS_KEY, LAST_SNAPSHOT_KEY, MARKET_GROUP

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
    """The consumer reads the fixed snapshot keys from the test Redis database, cleared around the test."""
    settings.REDIS_URL = test_redis_url
    client = redis.Redis.from_url(test_redis_url)
    client.delete(LAST_SNAPSHOT_KEY, FEED_STATUS_KEY)
    yield client
    client.delete(LAST_SNAPSHOT_KEY, FEED_STATUS_KEY)
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
