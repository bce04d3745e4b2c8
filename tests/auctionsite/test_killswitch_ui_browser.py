"""The kill switch end to end in a real Chromium against a real Daphne: a staff user opens the
confirmation dialog (which names what will happen), cancels (nothing changes), confirms; every
strategy is disabled, the open paper position is squared off at the instrument's last tick (from
its Redis stream), and the audit log records who did it. A non-staff user sees status only."""

from __future__ import annotations

import importlib.util
import json
import secrets

import pytest
import redis
from playwright.sync_api import expect

from feeds.groups import tick_stream_key
from feeds.ticks import Tick, pack_tick
from tests.auctionsite.test_browser_dashboard import log_in
from tests.conftest import ARTIFACTS_DIR

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("strategies.execution.killswitch") is None,
        reason="the kill switch service (strategies.execution.killswitch) is not installed",
    ),
]

SETUP = """
import json, secrets
from decimal import Decimal
from django.contrib.auth import get_user_model
from strategies import services
from strategies.execution import orders, risk
from strategies.execution.paper import PaperBroker
get_user_model().objects.create_user({user!r}, password={password!r}, is_staff=True)
configs = [services.create_strategy_config(slug=f"{prefix}-{{i}}", strategy_class="ib_breakout",
    instruments=["NSE_INDEX|Nifty 50"], capital=Decimal("100000"), max_daily_loss=Decimal("1000"),
    enabled=True, actor="test") for i in range(2)]
paper = PaperBroker(square_off_time=None)
paper.on_quote({option!r}, 0, Decimal("10"))
limits = risk.RiskLimits(entry_cutoff=None, square_off=None, strategy_max_open_lots=None,
    account_max_open_lots=None, max_open_positions=None)
orders.submit_order(strategy=configs[0], client_order_id={prefix!r} + "-P", instrument_key={option!r},
    side="BUY", quantity=65, venue=orders.PaperVenue(paper), limits=limits)
"""

CHECK = """
import json
from strategies.models import AuditEvent, Position, StrategyConfig
print(json.dumps({{
    "enabled": list(StrategyConfig.objects.filter(slug__startswith={prefix!r}, enabled=True).values_list("slug", flat=True)),
    "net": [p.net_quantity for p in Position.objects.filter(instrument_key={option!r})],
    "audit": list(AuditEvent.objects.filter(action__startswith="killswitch").values_list("actor", "reason")),
}}))
"""


def check(server, prefix: str, option: str) -> dict:
    out = server.manage("shell", "-c", CHECK.format(prefix=prefix, option=option)).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_kill_switch_from_the_dashboard(daphne_server, daphne_user, page, browser):
    prefix = f"ks{secrets.token_hex(3)}"
    option = f"NSE_FO|9{secrets.randbelow(10**6):06d}"
    user, password = f"staff-{prefix}", secrets.token_urlsafe(10)
    daphne_server.manage(
        "shell", "-c", SETUP.format(user=user, password=password, prefix=prefix, option=option)
    )
    client = redis.Redis.from_url(daphne_server.redis_url)
    stream = tick_stream_key(option)
    client.xadd(stream, {"t": pack_tick(Tick(option, 1, 12.5))})
    try:
        assert check(daphne_server, prefix, option)["net"] == [65]
        log_in(page, daphne_server, (user, password))
        dialog = page.locator("#kill-dialog")
        page.get_by_role("button", name="Kill switch…").click()
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("disable all")
        expect(dialog).to_contain_text("square off every open paper position")
        expect(dialog).to_contain_text(f"{prefix}-0")
        dialog.screenshot(path=str(ARTIFACTS_DIR / "kill-switch-dialog.png"))
        page.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        assert len(check(daphne_server, prefix, option)["enabled"]) == 2  # cancel changes nothing

        page.get_by_role("button", name="Kill switch…").click()
        dialog.get_by_label("Reason").fill("browser drill")
        page.get_by_role("button", name="Disable all and square off").click()
        expect(page.locator("#messages")).to_contain_text("Kill switch engaged")
        expect(page.locator(f'[data-strategy="{prefix}-0"] [data-field="enabled"]')).to_have_text("disabled")
        page.screenshot(path=str(ARTIFACTS_DIR / "kill-switch-done.png"), full_page=True)
        after = check(daphne_server, prefix, option)
        assert after["enabled"] == []
        assert after["net"] == [0]
        assert [user, "browser drill"] in after["audit"] or any(a[0] == user for a in after["audit"])

        # A plain user sees the strategies' status but no controls.
        context = browser.new_context()
        try:
            other = context.new_page()
            log_in(other, daphne_server, daphne_user)
            expect(other.locator(f'[data-strategy="{prefix}-0"]')).to_be_visible()
            expect(other.locator("#kill-switch-open")).to_have_count(0)
            expect(other.locator(f'[data-strategy="{prefix}-0"] button')).to_have_count(0)
        finally:
            context.close()
    finally:
        client.delete(stream)
        client.close()
        # The server is shared by the session's browser tests: lift the halt for the next ones.
        daphne_server.manage(
            "shell",
            "-c",
            "from strategies import trading; trading.resume(trading.ACCOUNT, actor='test')",
            check=False,
        )
