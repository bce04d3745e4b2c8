"""Races the services must win on a real multi-connection database: the same fill delivered twice at
once, two workers moving the same order, signals of one range stored by two deliveries at once.

PostgreSQL only (DATABASE_URL=postgres://...): SQLite's in-memory test database serialises writers
by locking the whole file, which is not the race being tested.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.utils import timezone

from strategies import services
from strategies.models import Fill, OrderEvent, Position, Signal, StrategyCheckpoint, StrategyConfig

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL)"),
]


def race(*calls) -> list:
    """Run the calls in threads released together; their results or exceptions, in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index: int, call) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = call()
        except Exception as exc:  # the test inspects what each side got
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.fixture
def order():
    config = services.create_strategy_config(
        slug="race",
        strategy_class="ib_breakout",
        instruments=["NSE_INDEX|Nifty 50"],
        capital=Decimal("500000"),
        max_daily_loss=Decimal("5000"),
        actor="test",
    )
    created = services.create_order(
        strategy=config, client_order_id="race-1", instrument_key="NSE_FO|1", side="BUY", quantity=65
    )
    services.order_transition(created, "submitted")
    return created


def test_the_same_fill_delivered_twice_at_once_is_stored_once(order):
    ts = timezone.now()

    def deliver():
        return services.record_fill(order, fill_id="T1", qty=65, price=Decimal("101.25"), ts=ts)[1]

    for _ in range(5):
        results = race(deliver, deliver, deliver)
        assert all(isinstance(r, bool) for r in results), results
    assert Fill.objects.filter(order=order).count() == 1
    order.refresh_from_db()
    assert (order.state, order.filled_quantity, order.average_price) == ("filled", 65, Decimal("101.25"))
    assert Position.objects.get().net_quantity == 65


def test_two_workers_moving_one_order_make_one_transition(order):
    def to_open():
        return services.order_transition(order, "open", detail={"thread": threading.get_ident()})

    results = race(to_open, to_open)
    assert sum(isinstance(r, OrderEvent) for r in results) == 1
    assert sum(isinstance(r, services.IllegalOrderTransition) for r in results) == 1
    assert OrderEvent.objects.filter(order=order, to_state="open").count() == 1


def test_two_deliveries_of_one_range_store_each_signal_once(order):
    config = StrategyConfig.objects.get(slug="race")
    signals = [
        {
            "instrument_key": "NSE_INDEX|Nifty 50",
            "ts": timezone.now(),
            "side": "long",
            "kind": "entry",
            "reason": "test",
            "stream_id": f"100-{n}",
        }
        for n in range(20)
    ]

    def deliver():
        return len(
            services.record_evaluation(
                config, stream_key="ticks:race", last_stream_id="100-19", signals=signals
            )
        )

    for _ in range(3):
        results = race(deliver, deliver, deliver)
        assert all(isinstance(r, int) for r in results), results
        assert sum(results) == 20
        Signal.objects.filter(strategy=config).delete()
        StrategyCheckpoint.objects.filter(strategy=config).delete()


def test_first_checkpoints_written_at_once_do_not_fail_a_delivery(order):
    config = StrategyConfig.objects.get(slug="race")

    def deliver(last: str):
        return lambda: services.record_evaluation(
            config, stream_key="ticks:quiet", last_stream_id=last, signals=[]
        )

    for _ in range(5):
        StrategyCheckpoint.objects.filter(strategy=config).delete()
        results = race(deliver("200-1"), deliver("200-3"), deliver("200-2"))
        assert all(r == [] for r in results), results
        assert StrategyCheckpoint.objects.get(strategy=config).last_stream_id == "200-3"


def test_one_order_created_by_two_deliveries_at_once_exists_once(order):
    config = StrategyConfig.objects.get(slug="race")

    def create():
        return services.create_order(
            strategy=config, client_order_id="race-2", instrument_key="NSE_FO|1", side="SELL", quantity=65
        ).pk

    results = race(create, create, create)
    assert len(set(results)) == 1 and isinstance(results[0], int), results
    assert OrderEvent.objects.filter(order_id=results[0]).count() == 1
