"""The Upstox broker against the fake Upstox server, through the real SDK."""

from __future__ import annotations

from decimal import Decimal

import pytest

from strategies.execution.upstox import (
    CANCELLED,
    FILLED,
    OPEN,
    PARTIALLY_FILLED,
    REJECTED,
    BrokerError,
    RateLimiter,
    ResponseLost,
    broker_order_from,
    map_state,
)

from .conftest import OPTION


def test_a_market_order_carries_the_tag_and_fills(fake, upstox):
    placed = upstox.place(client_order_id="E-happy-1", instrument_key=OPTION, side="BUY", quantity=65)
    (request,) = fake.orders.requests
    assert request["tag"] == "E-happy-1" and request["product"] == "I" and request["order_type"] == "MARKET"
    (order,) = upstox.orders_by_tag("E-happy-1")
    assert order.broker_order_id == placed.broker_order_id
    assert (order.state, order.filled_quantity, order.average_price) == (FILLED, 65, Decimal("100.0"))
    (position,) = upstox.positions()
    assert (position.instrument_key, position.quantity) == (OPTION, 65)


def test_limit_order_partial_fill_then_cancel(fake, upstox):
    placed = upstox.place(
        client_order_id="L-part-1",
        instrument_key=OPTION,
        side="BUY",
        quantity=130,
        order_type="LIMIT",
        price=Decimal("99.5"),
    )
    assert upstox.order(placed.broker_order_id).state == OPEN
    fake.orders.fill(placed.broker_order_id, 65, 99.5)
    order = upstox.order(placed.broker_order_id)
    assert (order.state, order.filled_quantity, order.average_price) == (
        PARTIALLY_FILLED,
        65,
        Decimal("99.5"),
    )
    after = upstox.cancel(broker_order_id=placed.broker_order_id)
    assert (after.state, after.filled_quantity) == (CANCELLED, 65)


def test_an_exchange_rejection_and_a_refusal_with_upstox_error_code(fake, upstox):
    fake.orders.reject_next.append("Insufficient margin")
    placed = upstox.place(client_order_id="R-1", instrument_key=OPTION, side="BUY", quantity=65)
    order = upstox.order(placed.broker_order_id)
    assert (order.state, order.message) == (REJECTED, "Insufficient margin")
    with pytest.raises(BrokerError) as err:
        upstox.cancel(broker_order_id="nope")
    assert (err.value.status, err.value.code) == (400, "UDAPI100010") and "not found" in err.value.message


def test_repeated_429s_back_off_and_retry_without_duplicating(fake, upstox):
    fake.fail_next_rest.extend([429, 429, 429])
    upstox.place(client_order_id="T-429-1", instrument_key=OPTION, side="BUY", quantity=65)
    assert upstox.retries_429 == 3
    assert [o["tag"] for o in fake.orders.order_book()] == ["T-429-1"]


def test_429_past_the_retries_surfaces_the_error_code(fake, upstox):
    upstox.max_retries = 2
    fake.fail_next_rest.extend([429] * 5)
    with pytest.raises(BrokerError) as err:
        upstox.place(client_order_id="T-429-2", instrument_key=OPTION, side="BUY", quantity=65)
    assert (err.value.status, err.value.code) == (429, "UDAPI10005")
    assert fake.orders.order_book() == []


def test_a_lost_response_raises_and_the_order_is_found_by_its_tag(fake, upstox):
    fake.lose_next_order_responses = 1
    with pytest.raises(ResponseLost):
        upstox.place(client_order_id="LOST-1", instrument_key=OPTION, side="BUY", quantity=65)
    (found,) = upstox.orders_by_tag("LOST-1")
    assert found.state == FILLED and len(fake.orders.order_book()) == 1


def test_an_unreachable_broker_is_a_lost_response(settings):
    from feeds.upstox import client
    from feeds.upstox.fake.testing import point_settings_at
    from strategies.execution.upstox import UpstoxBroker

    point_settings_at(settings, None)
    api = client.api_client("t")
    try:
        with pytest.raises(ResponseLost):
            UpstoxBroker(api).order_book()
    finally:
        client.close_api_client(api)


def test_rate_limiter_holds_order_requests_to_the_rate():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(25):
        limiter.acquire()
    # 10 at once (the bucket), then one every 0.1 s: 25 requests need 1.5 s.
    assert now[0] == pytest.approx(1.5)


def test_status_mapping_and_stream_updates():
    assert map_state("complete", 65, 65) == FILLED
    assert map_state("open", 130, 65) == PARTIALLY_FILLED
    assert map_state("cancelled", 130, 65) == CANCELLED
    assert map_state("trigger pending", 65, 0) == OPEN
    assert map_state("validation pending", 65, 0) == "submitted"
    update = {
        "update_type": "order",
        "order_id": "1",
        "tag": "X1",
        "instrument_token": OPTION,
        "transaction_type": "SELL",
        "quantity": 65,
        "filled_quantity": 65,
        "average_price": 101.25,
        "status": "complete",
    }
    order = broker_order_from(update)
    assert (order.tag, order.side, order.state, order.average_price) == (
        "X1",
        "SELL",
        FILLED,
        Decimal("101.25"),
    )


def test_modify_a_resting_order(fake, upstox):
    placed = upstox.place(
        client_order_id="M-1",
        instrument_key=OPTION,
        side="BUY",
        quantity=65,
        order_type="LIMIT",
        price=Decimal("95"),
    )
    upstox.modify(placed.broker_order_id, quantity=130, price=Decimal("96"))
    order = upstox.order(placed.broker_order_id)
    assert (order.quantity, order.price, order.state, order.tag) == (130, Decimal("96.0"), OPEN, "M-1")
    assert [r["action"] for r in fake.orders.requests] == ["place", "modify"]


def test_the_account_rate_is_shared_by_every_process(test_redis_url):
    """Two limiters (two worker processes) over one Redis: no second carries more than the rate."""
    import secrets
    import threading

    from strategies.execution.orders import AccountRateLimiter

    key = f"test-order-rate-{secrets.token_hex(4)}"
    stamps: list[int] = []
    lock = threading.Lock()

    def worker(limiter):
        for _ in range(12):
            limiter.acquire()
            with lock:
                stamps.append(limiter.granted_second)

    limiters = [AccountRateLimiter(10, key=key, redis_url=test_redis_url) for _ in range(2)]
    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    per_second: dict[int, int] = {}
    for stamp in stamps:
        per_second[int(stamp)] = per_second.get(int(stamp), 0) + 1
    assert len(stamps) == 24 and max(per_second.values()) <= 10, per_second
