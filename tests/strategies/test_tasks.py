"""The evaluate task (run in-process through Celery's own `apply`) and the catch-up a strategy
worker sends itself on start."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import date
from decimal import Decimal
from types import SimpleNamespace

import pytest
import redis as redis_lib

from auctionsite.celery import route_task
from feeds.groups import tick_stream_key
from feeds.sim import SimSession
from feeds.ticks import pack_tick
from strategies import services
from strategies.dispatch import LAST_CLAIM_KEY
from strategies.live import worker as worker_module
from strategies.models import StrategyCheckpoint
from strategies.tasks import EVALUATE, _catch_up_on_start, evaluate

NIFTY = "NSE_INDEX|Nifty 50"


@pytest.fixture
def fresh_process_worker(settings, test_redis_url):
    settings.REDIS_URL = test_redis_url
    worker_module._worker = None
    yield
    worker_module._worker = None


@pytest.mark.django_db
def test_evaluate_task_runs_the_process_worker(fresh_process_worker, test_redis_url):
    prefix = f"test-task-{secrets.token_hex(4)}:"
    client = redis_lib.Redis.from_url(test_redis_url)
    key = prefix + tick_stream_key(NIFTY)
    try:
        ticks = list(SimSession(date(2025, 12, 2), [NIFTY]).ticks())[:600]
        ids = [client.xadd(key, {"t": pack_tick(t)}).decode() for t in ticks]
        config = services.create_strategy_config(
            slug="task-a",
            strategy_class="ib_breakout",
            instruments=[NIFTY],
            capital=Decimal("100000"),
            max_daily_loss=Decimal("1000"),
            enabled=True,
            actor="test",
        )
        result = evaluate.apply(
            kwargs={"slug": "task-a", "ranges": {key: [ids[0], ids[-1]]}, "prefix": prefix}
        ).get()
        assert result["ticks"] == 600 and result["rebuilt"]
        assert StrategyCheckpoint.objects.get(strategy=config).last_stream_id == ids[-1]
        again = evaluate.apply(
            kwargs={"slug": "task-a", "ranges": {key: [ids[0], ids[-1]]}, "prefix": prefix}
        ).get()
        assert again["ticks"] == 0 and not again["rebuilt"]
    finally:
        client.delete(key)
        client.close()


def test_evaluate_is_routed_to_the_strategys_queue_and_acks_late():
    assert route_task(EVALUATE, (), {"slug": "ib", "ranges": {}}, {}) == {"queue": "strategy.ib"}
    assert evaluate.acks_late and evaluate.ignore_result


def test_a_starting_strategy_worker_sends_itself_its_last_claim(fresh_process_worker, test_redis_url):
    slug = f"catchup-{secrets.token_hex(4)}"
    claim = {"slug": slug, "ranges": {"p-ticks:X": ["1-0", "9-0"]}, "prefix": "p-"}
    client = redis_lib.Redis.from_url(test_redis_url)
    broker = redis_lib.Redis.from_url(evaluate.app.conf.broker_url)
    client.hset(LAST_CLAIM_KEY, slug, json.dumps(claim))
    queues = {f"strategy.{slug}": None, "celery": None}
    sender = SimpleNamespace(
        app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=queues)))
    )
    try:
        _catch_up_on_start(sender=sender)
        (raw,) = broker.lrange(f"strategy.{slug}", 0, -1)
        _, kwargs, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
        assert kwargs == claim
    finally:
        broker.delete(f"strategy.{slug}")
        client.hdel(LAST_CLAIM_KEY, slug)
        client.close()
        broker.close()
