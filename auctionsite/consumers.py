"""WebSocket consumers for the dashboard.

They only forward what the feed and the strategy workers publish to Channels groups (market
snapshots, auction states, strategy updates) and, on connect, the session's price line and the last
snapshot and auction states left in Redis; they never compute market state and never accept an
unauthenticated connection.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from auctionsite import selectors
from auctionsite.auction_feed import AUCTION_GROUP
from feeds.groups import MARKET_GROUP, STRATEGY_GROUP

logger = logging.getLogger(__name__)

# Close code for "not logged in" (4000–4999 are application codes; 4401 mirrors HTTP 401).
CLOSE_UNAUTHENTICATED = 4401


GROUPS = (MARKET_GROUP, AUCTION_GROUP, STRATEGY_GROUP)


class MarketConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/market/`: conflated market snapshots, auction states and strategy updates for a
    logged-in user (one socket per page)."""

    joined = False

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        for group in GROUPS:
            await self.channel_layer.group_add(group, self.channel_name)
        self.joined = True
        await self.accept()
        try:
            history, snapshot, auctions = await self.first_messages()
        except Exception as exc:  # a page without its first messages still gets the live ones
            logger.warning("market history/snapshot unavailable: %s", type(exc).__name__)
            return
        if history is not None:
            await self.send_json(history)
        if snapshot is not None:
            await self.send_json(snapshot)
        for message in auctions:
            await self.send_json(message)

    async def first_messages(self) -> tuple[dict | None, dict | None, list[dict]]:
        """The session's price line so far, the last snapshot and the last auction state of each
        watched index, so a page is never blank."""
        client = selectors.market_redis()
        try:
            snapshot = await selectors.latest_market_snapshot(client)
            keys = [i.key for i in selectors.watchlist()]
            auctions = await selectors.latest_auction_states(client, keys)
            keys += [k for k in (snapshot or {}).get("instruments", {}) if k not in keys]
            series = await selectors.price_history(client, keys)
        finally:
            await client.aclose()
        history = {"type": selectors.HISTORY_TYPE, "series": series} if series else None
        return history, snapshot, auctions

    async def disconnect(self, code):
        if self.joined:
            for group in GROUPS:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def market_snapshot(self, event):
        await self.send(text_data=encoded(event))

    async def auction_state(self, event):
        await self.send(text_data=encoded(event))

    async def strategy_update(self, event):
        await self.send_json(event)


# Every open page in this process receives the same group message, each decoded separately by
# the layer: encode it to JSON once, not once per page. A message is named by its type, its
# instrument and the feed's send time (`ts_ms`, stamped once per publish).
_ENCODED: OrderedDict[tuple, str] = OrderedDict()
_ENCODED_MAX = 64


def encoded(event: dict) -> str:
    key = (event.get("type"), event.get("instrument_key"), event.get("ts_ms"), event.get("full"))
    if key[2] is None:
        return json.dumps(event)
    text = _ENCODED.get(key)
    if text is None:
        text = _ENCODED[key] = json.dumps(event)
        while len(_ENCODED) > _ENCODED_MAX:
            _ENCODED.popitem(last=False)
    return text
