"""Fixtures for the execution tests: a fake Upstox server with the settings pointed at it, the real
SDK client and an UpstoxBroker on it, and a strategy configuration."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from feeds.upstox import client
from feeds.upstox.fake import FakeUpstox
from feeds.upstox.fake.testing import point_settings_at

TOKEN = "good-token"
OPTION = "NSE_FO|43919"


@pytest.fixture
def fake(settings):
    with FakeUpstox(accepted_tokens={TOKEN}, on_date=date(2026, 11, 20)) as server:
        point_settings_at(settings, server)
        server.set_price(OPTION, 100.0)
        yield server
    point_settings_at(settings, None)


@pytest.fixture
def upstox(fake):
    from strategies.execution.upstox import UpstoxBroker

    api = client.api_client(TOKEN)
    broker = UpstoxBroker(api, backoff_s=0.01, max_backoff_s=0.05)
    yield broker
    client.close_api_client(api)


@pytest.fixture
def config(db):
    from strategies import services

    return services.create_strategy_config(
        slug="exec-test",
        strategy_class="ib_breakout",
        instruments=["NSE_INDEX|Nifty 50"],
        capital=Decimal("500000"),
        max_daily_loss=Decimal("5000"),
        actor="test",
    )
