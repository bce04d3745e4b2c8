"""Celery tasks of the live strategies. Thin: each calls the worker process's `StrategyWorker`.

`evaluate(slug=..., ranges={stream_key: [first_id, last_id]}, prefix="")` is the claim check the
feed's dispatcher (`strategies.dispatch`) sends about every 100 ms to each enabled strategy whose
instruments ticked; `auctionsite.celery.route_task` routes it to the queue `strategy.<slug>`, which
one solo worker consumes, so tasks of one strategy run one at a time, in order, in one process that
keeps the strategy's state in memory. acks_late (the project default): a task whose worker was
killed is redelivered, and a redelivered range is a no-op (`strategies.live.worker`). Results are
not stored: nothing waits for them, and ten a second per strategy would only fill Redis.
"""

from __future__ import annotations

import logging

from celery import shared_task

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
