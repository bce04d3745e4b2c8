"""Nothing reaches the real broker unless all three keys are turned: LIVE_TRADING=true, the
strategy's mode live, a valid OAuth token. The default settings can never build a live broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from feeds.upstox import client
from strategies import trading
from strategies.execution import orders
from strategies.execution.upstox import LiveBrokerRefused, UpstoxBroker, reaches_real_upstox
from strategies.models import StrategyConfig, TradingMode

from .conftest import TOKEN

ROOT = Path(__file__).resolve().parents[3]


def test_default_settings_can_never_construct_a_live_broker(tmp_path):
    """In a fresh process with no LIVE_TRADING and no UPSTOX_* in the environment (the defaults
    point at the real api.upstox.com), every way to a live broker is refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVE_TRADING", "UPSTOX_"))}
    env["DJANGO_SETTINGS_MODULE"] = "auctionsite.settings"
    env["UPSTOX_ACCESS_TOKEN"] = "a-token-that-must-not-matter"
    script = """
import django
django.setup()
from django.conf import settings
from feeds.upstox import client
from strategies.execution import orders
from strategies.execution.upstox import LiveBrokerRefused, UpstoxBroker
assert settings.LIVE_TRADING is False, settings.LIVE_TRADING
assert settings.UPSTOX_API_URL == "https://api.upstox.com"
refused = 0
try:
    orders.live_broker()
except LiveBrokerRefused:
    refused += 1
api = client.api_client("a-token-that-must-not-matter")
try:
    UpstoxBroker(api)
except LiveBrokerRefused:
    refused += 1
client.close_api_client(api)
print("refused", refused)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("refused 2")
    assert "a-token-that-must-not-matter" not in done.stdout + done.stderr


def test_real_hosts_are_recognised_live_and_sandbox(settings):
    settings.UPSTOX_API_URL = "https://api.upstox.com"
    for sandbox in (False, True):
        settings.UPSTOX_SANDBOX = sandbox
        api = client.api_client("t")
        try:
            assert reaches_real_upstox(api)
            with pytest.raises(LiveBrokerRefused):
                UpstoxBroker(api)
        finally:
            client.close_api_client(api)
    settings.UPSTOX_SANDBOX = False


@pytest.mark.django_db
def test_each_missing_key_means_paper_with_a_visible_reason(fake, config, settings):
    settings.LIVE_TRADING = False
    StrategyConfig.objects.filter(pk=config.pk).update(mode=TradingMode.LIVE)
    config.refresh_from_db()
    venue, reason = orders.venue_for(config)
    assert venue.name == "paper" and "LIVE_TRADING" in reason

    settings.LIVE_TRADING = True
    StrategyConfig.objects.filter(pk=config.pk).update(mode=TradingMode.PAPER)
    config.refresh_from_db()
    venue, reason = orders.venue_for(config)
    assert venue.name == "paper" and "mode is paper" in reason

    StrategyConfig.objects.filter(pk=config.pk).update(mode=TradingMode.LIVE)
    config.refresh_from_db()
    venue, reason = orders.venue_for(config)  # no token anywhere
    assert venue.name == "paper" and "token" in reason
    with pytest.raises(LiveBrokerRefused):
        orders.live_broker()

    settings.UPSTOX_ACCESS_TOKEN = TOKEN  # all three keys: live, against the fake
    assert trading.live_status(config).live
    venue, reason = orders.venue_for(config)
    try:
        assert venue.name == "upstox" and reason == "" and venue.api_client.configuration.host == fake.api_url
        assert venue.order_book() == []
    finally:
        client.close_api_client(venue.api_client)


@pytest.mark.django_db
def test_switching_to_live_in_the_admin_needs_the_account_typed(client, django_user_model, config, settings):
    from feeds.upstox.tokens import store_token
    from strategies.models import AuditEvent

    settings.LIVE_TRADING = True
    store_token(access_token="secret-never-shown", user_id="AB1234")
    staff = django_user_model.objects.create_superuser("desk", password="x")
    client.force_login(staff)
    url = "/admin/strategies/strategyconfig/"
    ask = {"action": "switch_to_live", "_selected_action": [config.pk]}

    page = client.post(url, ask)
    text = page.content.decode()
    assert page.status_code == 200 and "AB1234" in text and "exec-test" in text
    assert "secret-never-shown" not in text
    config.refresh_from_db()
    assert config.mode == TradingMode.PAPER

    wrong = client.post(url, ask | {"confirm_account": "XY9999"})
    assert "not the account id" in wrong.content.decode()
    config.refresh_from_db()
    assert config.mode == TradingMode.PAPER

    client.post(url, ask | {"confirm_account": "AB1234"})
    config.refresh_from_db()
    assert config.mode == TradingMode.LIVE
    assert AuditEvent.objects.filter(action="strategy.mode_changed", actor="desk").exists()

    # Without LIVE_TRADING the service refuses (and says why); no confirmation page is shown.
    settings.LIVE_TRADING = False
    StrategyConfig.objects.filter(pk=config.pk).update(mode=TradingMode.PAPER)
    refused = client.post(url, ask, follow=True)
    assert "LIVE_TRADING" in refused.content.decode()
    config.refresh_from_db()
    assert config.mode == TradingMode.PAPER
