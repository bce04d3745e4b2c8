"""Celery tasks of the live strategies. Thin: each calls the worker process's `StrategyWorker`.

`evaluate(slug=..., ranges={stream_key: [first_id, last_id]}, prefix="")` is the claim check the
feed's dispatcher (`strategies.dispatch`) sends about every 100 ms to each enabled strategy whose
instruments ticked; `auctionsite.celery.route_task` routes it to the queue `strategy.<slug>`, which
one solo worker consumes, so tasks of one strategy run one at a time, in order, in one process that
keeps the strategy's state in memory. acks_late (the project default): a task whose worker was
killed is redelivered, and a redelivered range is a no-op (`strategies.live.worker`). Results are
not stored: nothing waits for them, and ten a second per strategy would only fill Redis.

A killed worker's in-flight task comes back only after the broker's visibility timeout, and an
ended or quiet feed sends nothing more; so when a strategy worker starts it sends itself its
strategy's last claim check (`strategies.dispatch.LAST_CLAIM_KEY`) and catches up at once.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready

log = logging.getLogger(__name__)

EVALUATE = "strategies.tasks.evaluate"


@shared_task(name=EVALUATE, acks_late=True, ignore_result=True)
def evaluate(*, slug: str, ranges: dict[str, list[str]], prefix: str = "") -> dict:
    """Evaluate the ticks of `ranges` (and any the strategy has not seen before them) for `slug`."""
    from strategies.live.worker import process_worker

    result = process_worker().evaluate(slug, ranges, prefix=prefix)
    if result.signals or result.orders or result.rebuilt or result.retuned:
        log.info("evaluate %s", result.as_dict())
    return result.as_dict()


STRATEGY_QUEUE_PREFIX = "strategy."


@worker_ready.connect
def _catch_up_on_start(sender=None, **kwargs) -> None:
    """A strategy worker's first task: its strategy's last claim check, sent to its own queue.
    (Also: the database settings of a long-lived strategy worker.)"""
    import json

    import redis
    from django.conf import settings

    from strategies.dispatch import LAST_CLAIM_KEY
    from strategies.live.worker import prepare_worker_process

    try:
        queues = list(sender.app.amqp.queues.consume_from)
    except AttributeError:
        return
    slugs = [q[len(STRATEGY_QUEUE_PREFIX) :] for q in queues if q.startswith(STRATEGY_QUEUE_PREFIX)]
    if not slugs:
        return
    prepare_worker_process()
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    try:
        for slug, raw in zip(slugs, client.hmget(LAST_CLAIM_KEY, slugs), strict=True):
            if raw:
                evaluate.apply_async(kwargs=json.loads(raw))
                log.info("strategy %s: catching up from its last claim check", slug)
    except redis.RedisError as exc:
        log.warning("strategy workers %s: no catch-up on start (%s)", slugs, exc.__class__.__name__)
    finally:
        client.close()
