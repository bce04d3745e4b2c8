"""The portfolio stream through the real SDK against the fake: updates move stored orders, and a
dropped stream that reconnects adopts what it missed through the reconciliation."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from feeds.upstox import client
from strategies.execution import orders, reconcile, risk
from strategies.execution.portfolio_stream import PortfolioStream
from strategies.models import AuditEvent, OrderState

from .conftest import OPTION, TOKEN

pytestmark = pytest.mark.django_db(transaction=True)
LIMITS = risk.RiskLimits(entry_cutoff=None, square_off=None)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def state_of(coid: str) -> tuple[str, int] | None:
    """The stored order's state and filled quantity (None while the test database, an in-memory
    SQLite shared between threads, has the table locked by the stream's writer)."""
    from django.db import OperationalError

    from strategies.models import Order

    try:
        order = Order.objects.get(client_order_id=coid)
    except OperationalError:
        return None
    return order.state, order.filled_quantity


@pytest.fixture
def open_order(fake, upstox, config):
    """A resting limit order, placed before the stream starts (SQLite: one writer at a time)."""
    (order,) = orders.submit_order(
        strategy=config,
        client_order_id="S-stream",
        instrument_key=OPTION,
        side="BUY",
        quantity=195,
        order_type="LIMIT",
        price=Decimal("99"),
        venue=upstox,
        limits=LIMITS,
    ).orders
    return order


@pytest.fixture
def stream(fake, upstox, open_order):
    clients = []

    def factory():
        api = client.api_client(TOKEN)
        clients.append(api)
        return api

    on_update, on_connect = reconcile.stream_handlers(upstox)
    stream = PortfolioStream(factory, on_update=on_update, on_connect=on_connect, restart_after_s=0.5).start()
    wait_for(lambda: stream.connected, what="the portfolio stream to connect")
    yield stream
    stream.stop()
    for api in clients:
        client.close_api_client(api)


def test_updates_move_the_order_and_a_drop_is_repaired_on_reconnect(fake, upstox, open_order, stream):
    order = open_order
    assert order.state == OrderState.OPEN
    fake.orders.fill(order.broker_order_id, 65, 99.0)  # pushed on the stream
    wait_for(
        lambda: state_of("S-stream") == (OrderState.PARTIALLY_FILLED, 65), what="the streamed partial fill"
    )
    assert stream.updates >= 1

    # The stream drops and cannot come back at once (the broker refuses the handshake); a fill
    # happens meanwhile, which no stream delivers.
    connects = stream.connects
    fake.refuse_401 = True
    fake.drop_portfolio_connections()
    wait_for(lambda: not stream.connected, what="the drop to be noticed")
    fake.orders.fill(order.broker_order_id, 65, 98.0)
    assert state_of("S-stream") == (OrderState.PARTIALLY_FILLED, 65)
    fake.refuse_401 = False
    wait_for(lambda: stream.connects > connects, what="the stream to reconnect")
    wait_for(
        lambda: state_of("S-stream") == (OrderState.PARTIALLY_FILLED, 130),
        what="reconciliation after reconnect",
    )
    assert AuditEvent.objects.filter(action="reconcile.corrected", actor="reconcile").exists()

    # Back on the stream: the rest fills and arrives as an update.
    fake.orders.fill(order.broker_order_id, 65, 97.0)
    wait_for(lambda: state_of("S-stream") == (OrderState.FILLED, 195), what="the final fill")
    broker_view = upstox.order(order.broker_order_id)
    stream.stop()  # no writer left: the checks below read freely
    order.refresh_from_db()
    assert (order.filled_quantity, order.average_price) == (
        broker_view.filled_quantity,
        broker_view.average_price,
    )
    report = reconcile.reconcile(upstox)
    assert report.ok and not report.corrections
