"""WebSocket routes. Every consumer refuses connections without an authenticated user."""

from django.urls import path

from auctionsite.consumers import MarketConsumer
from strategies.backtests.consumers import BacktestProgressConsumer

websocket_urlpatterns = [
    path("ws/market/", MarketConsumer.as_asgi()),
    path("ws/backtests/<int:run_id>/", BacktestProgressConsumer.as_asgi()),
]
