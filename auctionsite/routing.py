"""WebSocket routes. Every consumer refuses connections without an authenticated user."""

from django.urls import path

from auctionsite.consumers import MarketConsumer

websocket_urlpatterns = [
    path("ws/market/", MarketConsumer.as_asgi()),
]
