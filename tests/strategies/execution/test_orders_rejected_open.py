"""Upstox rejecting an order it had accepted (open at the exchange, then refused): the stored order
moves OPEN -> REJECTED with the broker's message, audited, and the account keeps trading — by the
reconciliation reading the order book, and by the portfolio stream's update. Against the fake
Upstox with the real SDK (the fake's `reject` hook plays the exchange)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from feeds.upstox import client
from strategies import trading
from strategies.execution import orders, reconcile, risk
from strategies.execution.portfolio_stream import PortfolioStream
from strategies.models import AuditEvent, Order, OrderState

from .conftest import OPTION, TOKEN

LIMITS = risk.RiskLimits(entry_cutoff=None, square_off=None)
MESSAGE = "Order rejected by exchange: price band exceeded"


def resting_order(config, upstox, coid: str) -> Order:
    (order,) = orders.submit_order(
        strategy=config,
        client_order_id=coid,
        instrument_key=OPTION,
        side="BUY",
        quantity=65,
        order_type="LIMIT",
        price=Decimal("99"),
        venue=upstox,
        limits=LIMITS,
    ).orders
    assert order.state == OrderState.OPEN and order.broker_order_id
    return order


def assert_rejected_by_the_broker(order: Order) -> None:
    order.refresh_from_db()
    assert order.state == OrderState.REJECTED and order.filled_quantity == 0
    last = order.events.last()
    assert (last.from_state, last.to_state) == (OrderState.OPEN, OrderState.REJECTED)
    assert last.detail["message"] == MESSAGE and last.detail["broker_status"] == "rejected"
    audited = AuditEvent.objects.get(
        action="order.transition", object_id=str(order.pk), detail__to=OrderState.REJECTED
    )
    assert audited.detail["message"] == MESSAGE
    assert trading.state_of(trading.ACCOUNT).state == trading.ACTIVE
    assert not AuditEvent.objects.filter(action="reconcile.failed").exists()


@pytest.mark.django_db
def test_reconciliation_adopts_the_rejection_of_an_open_order(fake, upstox, config):
    order = resting_order(config, upstox, "L-rej-book")
    fake.orders.reject(order.broker_order_id, MESSAGE)
    report = reconcile.reconcile(upstox)
    assert report.ok and not report.halted, report.as_dict()
    assert report.corrections[0]["changes"] == ["open -> rejected"]
    assert_rejected_by_the_broker(order)
    again = reconcile.reconcile(upstox)  # nothing left to adopt
    assert again.ok and not again.corrections


@pytest.mark.django_db(transaction=True)
def test_a_streamed_rejection_of_an_open_order(fake, upstox, config):
    order = resting_order(config, upstox, "L-rej-stream")
    clients = []

    def factory():
        api = client.api_client(TOKEN)
        clients.append(api)
        return api

    on_update, on_connect = reconcile.stream_handlers(upstox)
    stream = PortfolioStream(factory, on_update=on_update, on_connect=on_connect).start()
    try:
        deadline = time.monotonic() + 20
        while not stream.connected:
            assert time.monotonic() < deadline, "the portfolio stream did not connect"
            time.sleep(0.05)
        fake.orders.reject(order.broker_order_id, MESSAGE)  # pushed on the stream
        deadline = time.monotonic() + 20
        while Order.objects.filter(pk=order.pk, state=OrderState.REJECTED).count() == 0:
            assert time.monotonic() < deadline, "the streamed rejection was not applied"
            time.sleep(0.05)
    finally:
        stream.stop()
        for api in clients:
            client.close_api_client(api)
    assert stream.updates >= 1
    assert_rejected_by_the_broker(order)
