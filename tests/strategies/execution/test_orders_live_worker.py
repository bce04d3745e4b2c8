"""The live strategy worker's orders go through the risk gate before its paper book: a halted
account or a limit stores the entry as rejected with the rule, the paper book never holds it, the
exit signal of that entry makes no order, and a worker restarted after the refusal rebuilds the
same book and records. Uses the worker tests' simulated day and helpers (real Redis, real database)."""

from __future__ import annotations

import pytest

from strategies import trading
from strategies.live.worker import StrategyWorker, stream_position
from strategies.models import AuditEvent, Order, OrderState, Position, Signal, StrategyCheckpoint
from tests.strategies.test_live_worker import (
    NIFTY,
    claim_checks,
    make_config,
    publish,
    session_ticks,
    stored,
)


def run_day(redis_client, prefix, slug):
    ticks, _ = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    config = make_config(slug)
    worker = StrategyWorker(redis_client)
    for ranges in claim_checks(prefix, ids[NIFTY]):
        worker.evaluate(slug, ranges, prefix=prefix)
    return config, worker


def assert_book_empty(worker, slug) -> None:
    """The worker's in-memory paper book: no order, no position, nothing held."""
    live = worker.live[slug]
    assert live.broker.positions() == [] and live.broker.fills == []
    assert live.runs[NIFTY].option is None


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
    config, worker = run_day(redis_client, prefix, "gate-halted")
    assert risk_rules(config) == [("BUY", OrderState.REJECTED, "halted")]
    assert not Position.objects.filter(strategy=config).exists()
    assert AuditEvent.objects.filter(action="risk.blocked", actor=config.slug).count() == 1
    assert_book_empty(worker, "gate-halted")


@pytest.mark.django_db
def test_a_refused_entry_never_reaches_the_paper_book_and_its_exit_makes_no_order(
    redis_client, prefix, settings
):
    settings.RISK_LIMITS = {"max_open_positions": 0, "entry_cutoff": None, "square_off": None}
    ticks, _ = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    checks = list(claim_checks(prefix, ids[NIFTY]))
    reference = make_config("gate-ref")
    whole = StrategyWorker(redis_client)
    for ranges in checks:
        whole.evaluate("gate-ref", ranges, prefix=prefix)

    # The entry is stored REJECTED with the limit's rule and reason; nothing else is ordered.
    (refused,) = Order.objects.filter(strategy=reference)
    assert (refused.side, refused.state) == ("BUY", OrderState.REJECTED)
    assert refused.events.last().detail == {"risk": "open_positions", "message": "0 positions open (limit 0)"}
    entry, exit_signal = Signal.objects.filter(strategy=reference).order_by("ts")
    assert (entry.kind, exit_signal.kind) == ("entry", "exit") and refused.signal == entry
    assert not Order.objects.filter(signal=exit_signal).exists()  # the exit signal: no order
    assert not Position.objects.filter(strategy=reference).exists()
    assert_book_empty(whole, "gate-ref")
    assert StrategyCheckpoint.objects.get(strategy=reference).last_stream_id == ids[NIFTY][-1]

    # A worker killed after storing the refusal, restarted before the exit: it rebuilds the same
    # (empty) book from the checkpoint, and ends with exactly the uninterrupted run's records.
    at = stream_position(entry.stream_id)
    refused_at = next(i for i, r in enumerate(checks) if at <= stream_position(next(iter(r.values()))[1]))
    assert at < stream_position(exit_signal.stream_id)
    interrupted = make_config("gate-killed")
    first = StrategyWorker(redis_client)
    for ranges in checks[: refused_at + 1]:
        first.evaluate("gate-killed", ranges, prefix=prefix)
    assert Order.objects.filter(strategy=interrupted, state=OrderState.REJECTED).count() == 1
    second = StrategyWorker(redis_client)
    results = [second.evaluate("gate-killed", ranges, prefix=prefix) for ranges in checks[refused_at:]]
    assert results[0].rebuilt and results[0].ticks == 0
    assert_book_empty(second, "gate-killed")
    assert stored(interrupted) == stored(reference)


@pytest.mark.django_db
def test_within_limits_the_worker_trades_as_before(redis_client, prefix, settings):
    settings.RISK_LIMITS = {"entry_cutoff": None, "square_off": None}
    config, _ = run_day(redis_client, prefix, "gate-open")
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
