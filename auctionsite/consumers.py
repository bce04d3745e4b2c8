"""WebSocket consumers for the dashboard."""

from __future__ import annotations

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from feeds.groups import MARKET_GROUP


class MarketConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(MARKET_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(MARKET_GROUP, self.channel_name)

    async def market_snapshot(self, event):
        await self.send_json(event)
