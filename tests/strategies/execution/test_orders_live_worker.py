"""The live strategy worker's orders go through the risk gate: a halted account or a limit stores
them as rejected with the rule, the exit of a refused entry is refused too (reduce-only), and no
position appears. Uses the worker tests' simulated day and helpers (real Redis, real database)."""

from __future__ import annotations

import secrets

import pytest
import redis as redis_lib

from strategies import trading
from strategies.live.worker import StrategyWorker
from strategies.models import AuditEvent, Order, OrderState, Position
from tests.strategies.test_live_worker import NIFTY, claim_checks, make_config, publish, session_ticks


@pytest.fixture
def redis_client(test_redis_url):
    client = redis_lib.Redis.from_url(test_redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    value = f"test-gate-{secrets.token_hex(4)}:"
    yield value
    keys = list(redis_client.scan_iter(match=value + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


def run_day(redis_client, prefix, slug):
    ticks, _ = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    config = make_config(slug)
    worker = StrategyWorker(redis_client)
    for ranges in claim_checks(prefix, ids[NIFTY]):
        worker.evaluate(slug, ranges, prefix=prefix)
    return config


def risk_rules(config) -> list[tuple[str, str, str]]:
    return [
        (o.side, o.state, o.events.last().detail.get("risk", ""))
        for o in Order.objects.filter(strategy=config).order_by("created_at", "id")
    ]


@pytest.mark.django_db
def test_a_halted_account_refuses_the_workers_orders(redis_client, prefix):
    trading.set_state(
        trading.ACCOUNT, trading.HALTED, actor="test", reason="drill", source=trading.SOURCE_USER
    )
    config = run_day(redis_client, prefix, "gate-halted")
    assert risk_rules(config) == [
        ("BUY", OrderState.REJECTED, "halted"),
        ("SELL", OrderState.REJECTED, "halted"),
    ]
    assert not Position.objects.filter(strategy=config).exclude(net_quantity=0).exists()
    assert AuditEvent.objects.filter(action="risk.blocked", actor=config.slug).count() == 2


@pytest.mark.django_db
def test_a_limit_refuses_the_entry_and_then_its_exit(redis_client, prefix, settings):
    settings.RISK_LIMITS = {"strategy_max_open_lots": 0, "entry_cutoff": None, "square_off": None}
    config = run_day(redis_client, prefix, "gate-lots")
    assert risk_rules(config) == [
        ("BUY", OrderState.REJECTED, "open_lots"),
        ("SELL", OrderState.REJECTED, "reduce_only"),
    ]
    assert not Position.objects.filter(strategy=config).exclude(net_quantity=0).exists()


@pytest.mark.django_db
def test_within_limits_the_worker_trades_as_before(redis_client, prefix, settings):
    settings.RISK_LIMITS = {"entry_cutoff": None, "square_off": None}
    config = run_day(redis_client, prefix, "gate-open")
    assert risk_rules(config) == [("BUY", OrderState.FILLED, ""), ("SELL", OrderState.FILLED, "")]
    allowed = AuditEvent.objects.filter(action="risk.allowed", actor=config.slug).order_by("ts", "id")
    assert [e.detail["closing"] for e in allowed] == [False, True]
    assert allowed[0].detail["lot_size"] == 75 and allowed[0].detail["premium_source"] in (
        "traded",
        "modelled",
    )


@pytest.mark.django_db
def test_a_live_strategy_sends_its_orders_to_upstox_after_commit(
    redis_client, prefix, settings, fake, django_capture_on_commit_callbacks
):
    """All three keys turned (against the fake): the worker's orders are gated, stored inside its
    transaction and sent to the broker when it commits; the bot and the broker then agree."""
    from strategies.execution import reconcile
    from strategies.execution.orders import live_venue
    from strategies.models import StrategyConfig, TradingMode

    from .conftest import TOKEN

    settings.RISK_LIMITS = {"entry_cutoff": None, "square_off": None}
    settings.LIVE_TRADING = True
    settings.UPSTOX_ACCESS_TOKEN = TOKEN
    ticks, options = session_ticks()
    for key in options:
        fake.set_price(key, 100.0)
    ids = publish(redis_client, prefix, ticks)
    config = make_config("gate-live")
    StrategyConfig.objects.filter(pk=config.pk).update(mode=TradingMode.LIVE)
    worker = StrategyWorker(redis_client)
    for ranges in claim_checks(prefix, ids[NIFTY]):
        with django_capture_on_commit_callbacks(execute=True):
            worker.evaluate("gate-live", ranges, prefix=prefix)
    assert risk_rules(config) == [("BUY", OrderState.FILLED, ""), ("SELL", OrderState.FILLED, "")]
    assert sorted(o["tag"] for o in fake.orders.order_book()) == sorted(
        Order.objects.filter(strategy=config).values_list("client_order_id", flat=True)
    )
    assert {o.broker for o in Order.objects.filter(strategy=config)} == {"upstox"}
    try:
        report = reconcile.reconcile(live_venue())
        assert report.ok and not report.corrections, report.as_dict()
    finally:
        from feeds.upstox.client import close_api_client
        from strategies.execution import orders

        for broker in orders._live_brokers.values():
            close_api_client(broker.api_client)
        orders._live_brokers.clear()
