"""Strategy dispatch in the feed process: one claim check per enabled strategy whose instruments
ticked, ranges coalesced between sends, the enabled set read off the loop; real tasks land on the
strategy's own queue in the broker; `up`/`runworkers` want one worker per enabled strategy."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
from decimal import Decimal

import pytest
import redis as redis_lib

from auctionsite.management.commands.up import UpPlan, strategy_worker_specs
from feeds.groups import tick_stream_key
from feeds.pipeline import FlushReport
from strategies import services
from strategies.dispatch import LAST_CLAIM_KEY, StrategyDispatcher, flush_hook
from strategies.management.commands.runworkers import wanted_workers
from strategies.tasks import evaluate

NIFTY, BANK = "NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank"


def report(**ranges) -> FlushReport:
    keys = {"nifty": NIFTY, "bank": BANK}
    return FlushReport(ranges={keys[k]: tuple(v) for k, v in ranges.items()}, ticks=1, last_tick_ms=0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_task_per_strategy_whose_instruments_ticked_with_ranges_coalesced():
    sent, clock, loads = [], Clock(), []

    def load():
        loads.append(threading.current_thread() is threading.main_thread())
        return {"both": (NIFTY, BANK), "nifty-only": (NIFTY,), "bank-only": (BANK,)}

    dispatcher = StrategyDispatcher(
        prefix="p-", load=load, send=lambda *a: sent.append(a), clock=clock, interval_s=0.1, refresh_s=1.0
    )

    async def main():
        await dispatcher(report(nifty=("1-0", "5-0")))
        assert sorted(s[0] for s in sent) == ["both", "nifty-only"]
        assert dict((s[0], s[1]) for s in sent)["both"] == {"p-" + tick_stream_key(NIFTY): ["1-0", "5-0"]}
        sent.clear()
        # Ranges of one stream are merged between sends (first of the first, last of the last).
        dispatcher._pending = {NIFTY: ["6-0", "9-0"]}
        clock.now += 0.2
        await dispatcher(report(nifty=("10-0", "12-0"), bank=("7-0", "14-0")))
        by_slug = {slug: ranges for slug, ranges, _ in sent}
        assert by_slug == {
            "both": {
                "p-" + tick_stream_key(NIFTY): ["6-0", "12-0"],
                "p-" + tick_stream_key(BANK): ["7-0", "14-0"],
            },
            "nifty-only": {"p-" + tick_stream_key(NIFTY): ["6-0", "12-0"]},
            "bank-only": {"p-" + tick_stream_key(BANK): ["7-0", "14-0"]},
        }
        sent.clear()
        # A flush right after a send waits out the gap, then sends: nothing is held for later.
        clock.now += 0.01
        waited = asyncio.get_running_loop().time()
        await dispatcher(report(bank=("15-0", "16-0")))
        assert asyncio.get_running_loop().time() - waited >= 0.03
        assert [s[0] for s in sent] == ["bank-only", "both"]
        assert {prefix for *_, prefix in sent} == {"p-"}

    asyncio.run(main())
    assert loads and not any(loads)  # the database is read off the feed's loop thread


def test_the_enabled_set_is_cached_and_a_failing_database_keeps_the_last_one():
    sent, clock = [], Clock()
    answers = [{"a": (NIFTY,)}, RuntimeError("database is away"), {"b": (NIFTY,)}]

    def load():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    dispatcher = StrategyDispatcher(load=load, send=lambda *a: sent.append(a[0]), clock=clock, refresh_s=1.0)

    async def flush(first):
        await dispatcher(report(nifty=(first, first)))
        await asyncio.sleep(0.05)  # let a background refresh finish

    async def main():
        await flush("1-0")
        clock.now += 0.5
        await flush("2-0")  # cached: no reload within refresh_s
        clock.now += 1.0
        await flush("3-0")  # reload starts (and fails) off the loop; the old set is used
        clock.now += 0.2
        await flush("4-0")  # the failure is noted; the last known set stays
        clock.now += 1.0
        await flush("5-0")
        clock.now += 0.2
        await flush("6-0")

    asyncio.run(main())
    assert sent == ["a", "a", "a", "a", "a", "b"]
    assert answers == []


def test_no_enabled_strategy_sends_nothing():
    sent = []
    dispatcher = StrategyDispatcher(load=dict, send=lambda *a: sent.append(a))
    asyncio.run(dispatcher(report(nifty=("1-0", "2-0"))))
    assert sent == []


@pytest.mark.django_db(transaction=True)
def test_real_tasks_reach_the_strategys_own_queue_and_the_last_claim_is_kept(test_redis_url):
    """The real path: enabled set from the database, task through Celery to `strategy.<slug>`."""
    slug = f"dispatch-{secrets.token_hex(4)}"
    services.create_strategy_config(
        slug=slug,
        strategy_class="ib_breakout",
        instruments=[NIFTY],
        capital=Decimal("100000"),
        max_daily_loss=Decimal("1000"),
        enabled=True,
        actor="test",
    )
    broker = redis_lib.Redis.from_url(evaluate.app.conf.broker_url)
    client = redis_lib.Redis.from_url(test_redis_url)

    class Pipeline:  # what flush_hook reads from the feed's pipeline
        key_prefix = "q-"
        redis = None

    async def main():
        import redis.asyncio as aioredis

        Pipeline.redis = aioredis.from_url(test_redis_url)
        dispatcher = flush_hook(Pipeline)
        try:
            await dispatcher(report(nifty=("1764650000000-0", "1764650000100-3"), bank=("1-0", "2-0")))
        finally:
            await Pipeline.redis.aclose()
        return dispatcher

    try:
        dispatcher = asyncio.run(main())
        assert dispatcher.tasks_sent == 1
        (raw,) = broker.lrange(f"strategy.{slug}", 0, -1)
        message = json.loads(raw)
        assert message["headers"]["task"] == "strategies.tasks.evaluate"
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        expected = {
            "slug": slug,
            "ranges": {"q-" + tick_stream_key(NIFTY): ["1764650000000-0", "1764650000100-3"]},
            "prefix": "q-",
        }
        assert args == [] and kwargs == expected
        assert message["headers"]["expires"]  # a stale claim check is dropped unstarted
        assert json.loads(client.hget(LAST_CLAIM_KEY, slug)) == expected
    finally:
        broker.delete(f"strategy.{slug}")
        client.hdel(LAST_CLAIM_KEY, slug)
        broker.close()
        client.close()


@pytest.mark.django_db
def test_up_and_runworkers_want_one_solo_worker_per_enabled_strategy(tmp_path):
    for slug, enabled in (("alpha", True), ("beta", False), ("gamma", True)):
        services.create_strategy_config(
            slug=slug,
            strategy_class="ib_breakout",
            instruments=[NIFTY],
            capital=Decimal("100000"),
            max_daily_loss=Decimal("1000"),
            enabled=enabled,
            actor="test",
        )
    plan = UpPlan("127.0.0.1", 8000, "sim", 1.0, 1, True, tmp_path)
    specs = strategy_worker_specs(plan)
    assert [s.name for s in specs] == ["worker-alpha", "worker-gamma"]
    argv = specs[0].argv
    assert argv[argv.index("-Q") + 1] == "strategy.alpha" and argv[argv.index("--pool") + 1] == "solo"
    assert [s.name for s in wanted_workers()] == ["worker-alpha", "worker-gamma"]
    assert [s.name for s in wanted_workers(["gamma", "beta"])] == ["worker-gamma"]
    # Disabling one stops only that one (the supervisor removes what is no longer wanted).
    services.set_strategy_enabled(services.StrategyConfig.objects.get(slug="alpha"), False, actor="test")
    assert [s.name for s in strategy_worker_specs(plan)] == ["worker-gamma"]
