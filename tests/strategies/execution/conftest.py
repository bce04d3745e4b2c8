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
def option_row(db):
    """The option in the instrument master (lot 65, freeze 1800): what the risk gate counts lots by."""
    from feeds.models import Instrument

    return Instrument.objects.create(
        instrument_key=OPTION,
        exchange_token="43919",
        segment="NSE_FO",
        name="NIFTY",
        trading_symbol="NIFTY 26000 CE",
        instrument_type="CE",
        lot_size=65,
        freeze_quantity=1800,
    )


@pytest.fixture
def config(db, option_row):
    from strategies import services

    return services.create_strategy_config(
        slug="exec-test",
        strategy_class="ib_breakout",
        instruments=["NSE_INDEX|Nifty 50"],
        capital=Decimal("500000"),
        max_daily_loss=Decimal("5000"),
        actor="test",
    )
