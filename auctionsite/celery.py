"""The Celery application: Redis broker, JSON only (never pickle), Django's logging.

Routing: each strategy's live work goes to its own queue `strategy.<slug>` (one long-lived solo
worker per enabled strategy keeps that strategy's state in memory); backtests go to `backtests`.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auctionsite.settings")

app = Celery("auctionsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

BACKTESTS_QUEUE = "backtests"
MAINTENANCE_QUEUE = "maintenance"


def strategy_queue(slug: str) -> str:
    """The queue that carries one strategy's live evaluation tasks."""
    return f"strategy.{slug}"


def route_task(name, args, kwargs, options, task=None, **kw):
    """Send strategy evaluation to `strategy.<slug>` and backtests to `backtests`."""
    if name.startswith("strategies.tasks.evaluate"):
        slug = kwargs.get("slug") or (args[0] if args else None)
        if slug:
            return {"queue": strategy_queue(slug)}
    if name.startswith("strategies.backtests."):
        return {"queue": BACKTESTS_QUEUE}
    return {"queue": MAINTENANCE_QUEUE}


app.conf.task_routes = (route_task,)
app.conf.task_default_queue = MAINTENANCE_QUEUE
app.conf.beat_schedule = {}


@setup_logging.connect
def _use_django_logging(**kwargs) -> None:
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
