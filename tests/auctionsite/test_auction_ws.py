"""MarketConsumer and the auction: on connect a page gets the last auction state of each watched
index from Redis; afterwards the `auction` and `strategies` groups' messages are forwarded (the
real ASGI application, session auth and the real Redis pub/sub layer under a private prefix)."""

from __future__ import annotations

import json
import secrets

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from auctionsite.asgi import application
from auctionsite.auction_feed import AUCTION_GROUP, auction_state_key
from auctionsite.consumers import encoded
from feeds.groups import STRATEGY_GROUP

ORIGIN = (b"origin", b"http://testserver")


@pytest.fixture
def session_cookie(client, django_user_model):
    user = django_user_model.objects.create_user("auction-ws", password="not-used-here")
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


@pytest.fixture
def watched(settings, test_redis_url):
    settings.REDIS_URL = test_redis_url
    key = f"NSE_INDEX|Test {secrets.token_hex(4)}"
    settings.WATCHLIST = [key]
    client = redis.Redis.from_url(test_redis_url)
    yield key, client
    client.delete(auction_state_key(key))
    client.close()


async def first_auction_message(ws) -> dict:
    """Skip the market snapshot and price line another test's feed may have left in the shared
    test database; the auction state follows them."""
    while True:
        message = await ws.receive_json_from(timeout=5)
        if not message["type"].startswith("market."):
            return message


@pytest.mark.django_db(transaction=True)
def test_last_auction_state_on_connect_then_live_messages(private_channel_layer, session_cookie, watched):
    key, client = watched
    stored = {
        "type": "auction.state",
        "instrument_key": key,
        "ts_ms": 5,
        "state": {"poc": 100.0},
        "candles": [],
    }
    client.set(auction_state_key(key), json.dumps(stored))

    async def scenario():
        ws = WebsocketCommunicator(application, "/ws/market/", headers=[ORIGIN, session_cookie])
        connected, _ = await ws.connect()
        assert connected
        assert await first_auction_message(ws) == stored
        layer = get_channel_layer()
        live = {**stored, "ts_ms": 6, "state": {"poc": 105.0}}
        await layer.group_send(AUCTION_GROUP, live)
        assert await ws.receive_json_from(timeout=5) == live
        update = {
            "type": "strategy.update",
            "slug": "s",
            "signals": [],
            "orders": [],
            "positions": [],
            "pnl": {},
        }
        await layer.group_send(STRATEGY_GROUP, update)
        assert await ws.receive_json_from(timeout=5) == update
        await ws.disconnect()

    async_to_sync(scenario)()


def test_group_messages_are_encoded_once_per_send():
    a = {"type": "auction.state", "instrument_key": "K", "ts_ms": 7, "state": {"poc": 1.0}}
    first = encoded(a)
    assert json.loads(first) == a
    assert encoded(dict(a)) is first  # another page's copy of the same message: the same text
    assert encoded({**a, "ts_ms": 8}) is not first
