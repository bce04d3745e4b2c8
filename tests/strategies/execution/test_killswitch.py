"""The kill switch against the fake Upstox server: no open order and no position left at the
broker, the account HALTED, every step audited; the square-off closes without halting."""

from __future__ import annotations

from decimal import Decimal

import pytest

from strategies import trading
from strategies.execution import killswitch, orders, risk
from strategies.execution.paper import PaperBroker
from strategies.models import AuditEvent, Order, OrderState, Position

from .conftest import OPTION

pytestmark = pytest.mark.django_db
LIMITS = risk.RiskLimits(
    entry_cutoff=None,
    square_off=None,
    strategy_max_open_lots=None,
    account_max_open_lots=None,
    max_open_positions=None,
)
OTHER = "NSE_FO|43920"


def submit(config, venue, coid, side="BUY", qty=65, key=OPTION, **kw):
    return orders.submit_order(
        strategy=config,
        client_order_id=coid,
        instrument_key=key,
        side=side,
        quantity=qty,
        venue=venue,
        limits=LIMITS,
        **kw,
    ).orders[0]


def open_book(fake, upstox, config):
    """A filled position, a resting limit order and a partly filled one at the broker, and a
    paper position."""
    fake.set_price(OTHER, 50.0)
    submit(config, upstox, "E-pos")
    submit(config, upstox, "L-rest", order_type="LIMIT", price=Decimal("90"))
    part = submit(config, upstox, "L-part", key=OTHER, qty=130, order_type="LIMIT", price=Decimal("49"))
    fake.orders.fill(part.broker_order_id, 65, 49.0)
    paper = PaperBroker(square_off_time=None)
    paper.on_quote("NSE_FO|1", 0, Decimal("10"))
    submit(config, orders.PaperVenue(paper), "P-pos", key="NSE_FO|1")


def test_kill_switch_cancels_closes_and_halts(fake, upstox, config):
    open_book(fake, upstox, config)
    result = killswitch.engage(
        "ops", "test drill", venues={"upstox": upstox}, paper_price=lambda key: Decimal("11")
    )

    assert result.problems == [] and result.not_closed == [], result.as_dict()
    assert [o for o in fake.orders.order_book() if o["status"] == "open"] == []
    assert {p.instrument_key: p.quantity for p in upstox.positions() if p.quantity} == {}
    assert result.broker_positions_left == {}
    assert not Order.objects.exclude(
        state__in=[OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED]
    ).exists()
    assert set(Position.objects.filter(strategy=config).values_list("net_quantity", flat=True)) == {0}
    assert trading.state_of(trading.ACCOUNT).state == trading.HALTED
    assert AuditEvent.objects.filter(action="killswitch.engaged", actor="ops", reason="test drill").exists()

    # Halted: nothing new passes, and a reconciliation does not lift a kill switch's HALT.
    blocked = submit(config, upstox, "E-after-kill")
    assert blocked.state == OrderState.REJECTED and blocked.events.last().detail["risk"] == "halted"
    from strategies.execution import reconcile

    assert reconcile.reconcile(upstox).ok and trading.state_of(trading.ACCOUNT).state == trading.HALTED
    trading.resume(actor="ops")
    assert submit(config, upstox, "E-resumed").state == OrderState.FILLED


def test_square_off_closes_everything_without_halting(fake, upstox, config):
    open_book(fake, upstox, config)
    result = killswitch.square_off(venues={"upstox": upstox}, paper_price=lambda key: Decimal("9"))
    assert result.problems == [] and result.not_closed == []
    assert {p.instrument_key: p.quantity for p in upstox.positions() if p.quantity} == {}
    assert trading.state_of(trading.ACCOUNT).state == trading.ACTIVE
    assert AuditEvent.objects.filter(action="squareoff.done").exists()


def test_a_paper_position_without_a_price_is_reported_not_invented(config):
    paper = PaperBroker(square_off_time=None)
    paper.on_quote("NSE_FO|1", 0, Decimal("10"))
    submit(config, orders.PaperVenue(paper), "P-noprice", key="NSE_FO|1")
    result = killswitch.engage("ops", "no prices", venues={}, paper_price=lambda key: None)
    assert len(result.not_closed) == 1 and "no price" in result.not_closed[0]
    assert Position.objects.get(strategy=config, instrument_key="NSE_FO|1").net_quantity == 65


def test_admin_kill_switch_and_resume_actions(client, django_user_model, config):
    from strategies import services
    from strategies.execution.models import TradingState

    services.set_strategy_enabled(config, True, actor="test")
    admin_user = django_user_model.objects.create_superuser("boss", password="x")
    client.force_login(admin_user)
    url = "/admin/strategies/tradingstate/"
    page = client.get(url)
    assert page.status_code == 200 and b"KILL SWITCH" in page.content
    account = TradingState.objects.get(scope=trading.ACCOUNT)
    response = client.post(
        url, {"action": "engage_kill_switch", "_selected_action": [account.pk]}, follow=True
    )
    assert response.status_code == 200 and b"Kill switch engaged" in response.content
    assert trading.state_of(trading.ACCOUNT).state == trading.HALTED
    config.refresh_from_db()
    assert not config.enabled
    assert AuditEvent.objects.filter(action="killswitch.engaged", actor="boss").exists()
    client.post(url, {"action": "resume_trading", "_selected_action": [account.pk]})
    assert trading.state_of(trading.ACCOUNT).state == trading.ACTIVE
    assert AuditEvent.objects.filter(action="trading.state_changed", actor="boss").count() == 2
