"""WebSocket consumers for the dashboard.

They only forward what the feed publishes to Channels groups (and, on connect, the session's price
line and the last snapshot it left in Redis); they never compute market state and never accept an
unauthenticated connection.
"""

from __future__ import annotations

import logging

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from auctionsite import selectors
from feeds.groups import MARKET_GROUP

logger = logging.getLogger(__name__)

# Close code for "not logged in" (4000–4999 are application codes; 4401 mirrors HTTP 401).
CLOSE_UNAUTHENTICATED = 4401


class MarketConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/market/`: conflated market snapshots for a logged-in user."""

    joined = False

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.channel_layer.group_add(MARKET_GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        try:
            history, snapshot = await self.first_messages()
        except Exception as exc:  # a page without its first messages still gets the live ones
            logger.warning("market history/snapshot unavailable: %s", type(exc).__name__)
            return
        if history is not None:
            await self.send_json(history)
        if snapshot is not None:
            await self.send_json(snapshot)

    async def first_messages(self) -> tuple[dict | None, dict | None]:
        """The session's price line so far and the last snapshot, so a page is never blank."""
        client = selectors.market_redis()
        try:
            snapshot = await selectors.latest_market_snapshot(client)
            keys = [i.key for i in selectors.watchlist()]
            keys += [k for k in (snapshot or {}).get("instruments", {}) if k not in keys]
            series = await selectors.price_history(client, keys)
        finally:
            await client.aclose()
        history = {"type": selectors.HISTORY_TYPE, "series": series} if series else None
        return history, snapshot

    async def disconnect(self, code):
        if self.joined:
            await self.channel_layer.group_discard(MARKET_GROUP, self.channel_name)

    async def market_snapshot(self, event):
        await self.send_json(event)
