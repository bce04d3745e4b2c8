"""The order service against the fake Upstox server with the real SDK: every scenario ends with
the broker's state and the bot's state asserted to agree."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from feeds.upstox import client
from strategies import trading
from strategies.execution import orders, reconcile, risk
from strategies.execution.paper import PaperBroker
from strategies.execution.upstox import UpstoxBroker
from strategies.models import AuditEvent, Order, OrderState, Position

from .conftest import OPTION, TOKEN

pytestmark = pytest.mark.django_db

# The risk gate's clock: a trading morning, so entry cut-offs do not depend on when tests run.
MORNING = dt.datetime(2026, 11, 20, 10, 30, tzinfo=orders.IST)
OPEN_LIMITS = risk.RiskLimits(entry_cutoff=None, square_off=None)


def submit(config, venue, coid, side="BUY", qty=65, **kw):
    kw.setdefault("limits", OPEN_LIMITS)
    return orders.submit_order(
        strategy=config,
        client_order_id=coid,
        instrument_key=OPTION,
        side=side,
        quantity=qty,
        venue=venue,
        **kw,
    )


def assert_agree(fake, upstox, *, strategy=None):
    """The bot's orders and positions equal the broker's: states, fills, net positions."""
    book = {o.tag: o for o in upstox.order_book()}
    for order in Order.objects.filter(broker="upstox"):
        if order.state == OrderState.REJECTED and not order.broker_order_id:
            assert order.client_order_id not in book  # refused before reaching the broker
            continue
        theirs = book[order.client_order_id]
        assert (order.broker_order_id, order.state, order.filled_quantity) == (
            theirs.broker_order_id,
            theirs.state,
            theirs.filled_quantity,
        ), order
    ours = {
        k: q
        for (_, k), q in orders.positions_from_fills(
            "upstox", timezone.localdate(timezone.now(), orders.IST)
        ).items()
    }
    theirs = {p.instrument_key: p.quantity for p in upstox.positions() if p.quantity}
    assert ours == theirs
    report = reconcile.reconcile(upstox)
    assert report.ok and not report.corrections, report.as_dict()


def test_happy_path_signal_entry_fill_position_exit(fake, upstox, config):
    from strategies import services

    signal, _ = services.record_signal(
        config,
        instrument_key="NSE_INDEX|Nifty 50",
        ts=MORNING,
        side="long",
        kind="entry",
        reason="IB breakout up",
        stream_id="1-0",
        price=26000,
    )
    entry = submit(config, upstox, "E-happy", now=MORNING, signal=signal)
    assert entry.orders[0].signal == signal
    (order,) = entry.orders
    assert entry.decision.allowed and order.state == OrderState.FILLED and order.broker_order_id
    assert order.average_price == Decimal("100") and order.fills.get().charges > 0
    position = Position.objects.get(strategy=config, instrument_key=OPTION)
    assert position.net_quantity == 65
    assert_agree(fake, upstox)

    fake.set_price(OPTION, 110.0)
    (exit_order,) = submit(config, upstox, "X-happy", side="SELL", now=MORNING).orders
    assert exit_order.state == OrderState.FILLED
    position.refresh_from_db()
    assert position.net_quantity == 0 and position.realised_pnl == Decimal("650")
    assert [e.to_state for e in exit_order.events.all()] == ["new", "submitted", "filled"]
    assert AuditEvent.objects.filter(action="risk.allowed", object_id="X-happy").exists()
    assert_agree(fake, upstox)


def test_a_redelivered_submit_sends_nothing_twice(fake, upstox, config):
    first = submit(config, upstox, "E-twice").orders[0]
    again = submit(config, upstox, "E-twice").orders[0]
    assert first.pk == again.pk and len(fake.orders.order_book()) == 1


def test_exchange_rejection_and_broker_refusal_are_stored_with_the_reason(fake, upstox, config):
    fake.orders.reject_next.append("Insufficient funds")
    (rejected,) = submit(config, upstox, "E-rej").orders
    assert rejected.state == OrderState.REJECTED and rejected.broker_order_id
    assert rejected.events.last().detail["message"] == "Insufficient funds"
    fake.fail_next_rest.append(401)
    (refused,) = submit(config, upstox, "E-401").orders
    assert refused.state == OrderState.REJECTED and not refused.broker_order_id
    assert refused.events.last().detail["error_code"] == "UDAPI100050"
    assert_agree(fake, upstox)


def test_partial_fill_then_cancel(fake, upstox, config):
    (order,) = submit(config, upstox, "L-part", qty=130, order_type="LIMIT", price=Decimal("99.5")).orders
    assert order.state == OrderState.OPEN
    fake.orders.fill(order.broker_order_id, 65, 99.5)
    report = reconcile.reconcile(upstox)
    order.refresh_from_db()
    assert report.ok and order.state == OrderState.PARTIALLY_FILLED and order.filled_quantity == 65
    order = orders.cancel_order(order, upstox, actor="test")
    assert order.state == OrderState.CANCELLED and order.filled_quantity == 65
    assert Position.objects.get(strategy=config, instrument_key=OPTION).net_quantity == 65
    assert_agree(fake, upstox)


def test_a_lost_place_response_is_found_by_its_tag_without_a_duplicate(fake, upstox, config):
    fake.lose_next_order_responses = 1
    (order,) = submit(config, upstox, "E-lost").orders
    # The service looked for the tag at once and adopted the broker's order.
    assert order.state == OrderState.FILLED and order.broker_order_id
    states = [e.to_state for e in order.events.all()]
    assert states == ["new", "unknown", "filled"]
    assert len(fake.orders.order_book()) == 1
    assert_agree(fake, upstox)


def test_a_lost_response_with_the_book_unreadable_waits_for_reconciliation(fake, upstox, config):
    fake.lose_next_order_responses = 1
    fake.fail_next_rest.append(503)  # the look-up right after fails too
    (order,) = submit(config, upstox, "E-lost2").orders
    assert order.state == OrderState.UNKNOWN
    # A redelivered task does not resend an UNKNOWN order.
    submit(config, upstox, "E-lost2")
    assert len(fake.orders.order_book()) == 1
    report = reconcile.reconcile(upstox)
    order.refresh_from_db()
    assert report.ok and order.state == OrderState.FILLED
    assert AuditEvent.objects.filter(action="reconcile.corrected", object_id=str(order.pk)).exists()
    assert_agree(fake, upstox)


def test_repeated_429s_are_retried_into_one_order(fake, upstox, config):
    fake.fail_next_rest.extend([429, 429, 429, 429])
    (order,) = submit(config, upstox, "E-429").orders
    assert order.state == OrderState.FILLED and upstox.retries_429 == 4
    assert len(fake.orders.order_book()) == 1
    assert_agree(fake, upstox)


def test_worker_killed_between_submit_and_fill(fake, upstox, config):
    """The dead worker stored its order (NEW) and sent it; the broker filled it later. A new
    process's reconciliation adopts it, and the redelivered task does not send it again."""
    from strategies import services

    dead = services.create_order(
        strategy=config,
        client_order_id="E-dead",
        instrument_key=OPTION,
        side="BUY",
        quantity=65,
        order_type="LIMIT",
        price=Decimal("100"),
        broker="upstox",
    )
    api = client.api_client(TOKEN)
    try:
        sent = UpstoxBroker(api).place(
            client_order_id="E-dead",
            instrument_key=OPTION,
            side="BUY",
            quantity=65,
            order_type="LIMIT",
            price=Decimal("100"),
        )
    finally:
        client.close_api_client(api)  # the process is gone
    fake.orders.fill(sent.broker_order_id, 65, 100.0)

    report = reconcile.reconcile(upstox, grace=dt.timedelta(0))
    dead.refresh_from_db()
    assert report.ok and dead.state == OrderState.FILLED and dead.broker_order_id == sent.broker_order_id
    (again,) = submit(config, upstox, "E-dead", order_type="LIMIT", price=Decimal("100")).orders
    assert again.pk == dead.pk and len(fake.orders.order_book()) == 1
    assert_agree(fake, upstox)


def test_a_new_order_that_never_reached_the_broker_is_resent_once_on_redelivery(fake, upstox, config):
    from strategies import services

    services.create_order(
        strategy=config,
        client_order_id="E-unsent",
        instrument_key=OPTION,
        side="BUY",
        quantity=65,
        broker="upstox",
    )
    (order,) = submit(config, upstox, "E-unsent").orders
    assert order.state == OrderState.FILLED and len(fake.orders.order_book()) == 1
    assert_agree(fake, upstox)


def test_reconcile_rejects_stale_orders_unknown_to_the_broker_and_halts_on_strangers(fake, upstox, config):
    from strategies import services

    stale = services.create_order(
        strategy=config,
        client_order_id="E-stale",
        instrument_key=OPTION,
        side="BUY",
        quantity=65,
        broker="upstox",
    )
    report = reconcile.reconcile(upstox, grace=dt.timedelta(0))
    stale.refresh_from_db()
    assert report.ok and stale.state == OrderState.REJECTED and len(fake.orders.order_book()) == 0
    # A position the bot knows nothing about (a trade by hand): cannot reconcile -> HALTED.
    upstox.place(client_order_id="manual", instrument_key=OPTION, side="BUY", quantity=65)
    report = reconcile.reconcile(upstox)
    assert not report.ok and trading.state_of(trading.ACCOUNT).state == trading.HALTED
    (blocked,) = submit(config, upstox, "E-halted").orders
    assert blocked.state == OrderState.REJECTED and len(fake.orders.order_book()) == 1
    # The position closed by hand: the next reconciliation lifts its own HALT.
    upstox.place(client_order_id="manual2", instrument_key=OPTION, side="SELL", quantity=65)
    report = reconcile.reconcile(upstox)
    assert report.ok and report.resumed and trading.state_of(trading.ACCOUNT).state == trading.ACTIVE


def test_an_unreadable_broker_halts_trading(fake, upstox, config):
    fake.fail_next_rest.append(500)
    report = reconcile.reconcile(upstox)
    assert not report.ok and report.halted
    assert AuditEvent.objects.filter(action="reconcile.failed").exists()


def test_freeze_quantity_splits_a_live_order_into_tagged_slices(fake, upstox, config):
    result = submit(
        config,
        upstox,
        "E-big",
        qty=3900,
        limits=risk.RiskLimits(
            entry_cutoff=None, square_off=None, strategy_max_open_lots=None, account_max_open_lots=None
        ),
    )
    assert [(o.client_order_id, o.quantity, o.state) for o in result.orders] == [
        ("E-big", 1755, "filled"),
        ("E-big-01", 1755, "filled"),
        ("E-big-02", 390, "filled"),
    ]
    assert sorted(r["tag"] for r in fake.orders.requests) == ["E-big", "E-big-01", "E-big-02"]
    assert_agree(fake, upstox)


def test_risk_gate_blocks_and_records_then_daily_loss_reduces(fake, upstox, config):
    late = MORNING.replace(hour=15, minute=5)
    (blocked,) = orders.submit_order(
        strategy=config,
        client_order_id="E-late",
        instrument_key=OPTION,
        side="BUY",
        quantity=65,
        venue=upstox,
        now=late,
    ).orders
    assert blocked.state == OrderState.REJECTED and blocked.events.last().detail["risk"] == "entry_cutoff"
    assert AuditEvent.objects.filter(action="risk.blocked", object_id="E-late").exists()
    assert fake.orders.order_book() == []

    # The strategy's own max_daily_loss (5000) with the clock checks off.
    limits = dataclasses.replace(orders.risk_limits(config), entry_cutoff=None, square_off=None)
    submit(config, upstox, "E-loss", qty=130, limits=limits)
    fake.set_price(OPTION, 60.0)
    submit(config, upstox, "X-loss", side="SELL", limits=limits)  # -40 x 65 = -2600 realised
    assert trading.effective_state(config.slug).state == trading.ACTIVE
    (entry,) = submit(config, upstox, "E-more", limits=limits).orders
    assert entry.state == OrderState.FILLED  # within the limit: still trading
    fake.set_price(OPTION, 20.0)
    submit(config, upstox, "X-loss2", side="SELL", limits=limits)  # -80 x 65 more: -5200 realised
    (entry,) = submit(config, upstox, "E-after", limits=limits).orders
    assert entry.state == OrderState.REJECTED and entry.events.last().detail["risk"] == "reducing"
    assert trading.effective_state(config.slug).state == trading.REDUCING
    assert trading.state_of(trading.ACCOUNT).state == trading.ACTIVE
    # Reducing lets the remaining position be closed.
    (closing,) = submit(config, upstox, "X-close", side="SELL", qty=65, limits=limits).orders
    assert closing.state == OrderState.FILLED
    assert Position.objects.get(strategy=config, instrument_key=OPTION).net_quantity == 0
    assert_agree(fake, upstox)


def test_paper_orders_take_the_same_path(config):
    paper = PaperBroker(square_off_time=None)
    paper.on_quote(OPTION, int(MORNING.timestamp() * 1000), Decimal("100"), Decimal("99.9"), Decimal("100.1"))
    venue = orders.PaperVenue(paper)
    (order,) = submit(config, venue, "P-1", now=MORNING).orders
    assert (
        order.broker == "paper"
        and order.state == OrderState.FILLED
        and order.average_price == Decimal("100.1")
    )
    assert Position.objects.get(strategy=config).net_quantity == 65
    assert AuditEvent.objects.filter(action="risk.allowed", object_id="P-1").exists()


def test_a_contract_lot_size_named_once_is_remembered_for_exposure(config):
    paper = PaperBroker(square_off_time=None)
    key = "NSE_FO|777"
    paper.on_quote(key, int(MORNING.timestamp() * 1000), Decimal("50"))
    venue = orders.PaperVenue(paper)
    assert orders.instrument_terms(key) == (1, None)
    orders.submit_order(
        strategy=config,
        client_order_id="P-lot",
        instrument_key=key,
        side="BUY",
        quantity=130,
        venue=venue,
        limits=OPEN_LIMITS,
        lot_size=65,
        now=MORNING,
    )
    assert orders.instrument_terms(key) == (65, None)
    exposure = orders.exposure(config, key, now=MORNING)
    assert (exposure.strategy_position, exposure.strategy_open_lots, exposure.open_positions) == (130, 2, 1)


def test_a_live_exit_closes_what_the_entry_actually_filled(fake, upstox, config):
    (entry,) = submit(config, upstox, "E-half", qty=130, order_type="LIMIT", price=Decimal("99")).orders
    fake.orders.fill(entry.broker_order_id, 65, 99.0)
    orders.cancel_order(entry, upstox, actor="test")
    result = submit(config, upstox, "X-half", side="SELL", qty=130, reduce_only=True)
    (exit_order,) = result.orders
    assert (exit_order.quantity, exit_order.state) == (65, OrderState.FILLED)
    assert AuditEvent.objects.get(action="risk.allowed", object_id="X-half").detail["asked_quantity"] == 130
    assert Position.objects.get(strategy=config, instrument_key=OPTION).net_quantity == 0
    # With nothing left, another exit is refused rather than opening a short.
    (again,) = submit(config, upstox, "X-again", side="SELL", qty=65, reduce_only=True).orders
    assert again.state == OrderState.REJECTED and again.events.last().detail["risk"] == "reduce_only"
    assert_agree(fake, upstox)
