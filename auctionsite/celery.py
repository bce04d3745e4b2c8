"""The Celery application: Redis broker, JSON only (never pickle), Django's logging.

Routing: each strategy's live work goes to its own queue `strategy.<slug>` (one long-lived solo
worker per enabled strategy keeps that strategy's state in memory); backtests go to `backtests`;
everything else (beat's housekeeping) to `maintenance`.

Every worker and the beat write a heartbeat into the Redis hash WORKER_HEARTBEATS_KEY
(`auctionsite.heartbeats`), started and stopped by the signals wired at the bottom.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab
from celery.signals import beat_init, setup_logging, worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auctionsite.settings")

app = Celery("auctionsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["strategies.execution"])  # reconcile and square-off (beat, below)

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

# Beat's times are exchange times (CELERY_TIMEZONE is Asia/Kolkata).
# Named entries later issues add, with their times: "square-off" 15:15 Mon-Fri and
# "end-of-day-snapshots" 15:45 Mon-Fri (strategies). Add an entry only together with its task:
# beat sending a task no worker knows is an error every time it fires.
app.conf.beat_schedule = {
    # Before the 09:15 open: the day's contracts (new weekly expiries) and lot sizes.
    "refresh-instruments": {
        "task": "feeds.tasks.refresh_instruments",
        "schedule": crontab(hour=8, minute=30, day_of_week="mon-fri"),
    },
    # After the close: the history store has the day; streams keep only the current session.
    "trim-tick-streams": {
        "task": "auctionsite.tasks.trim_tick_streams",
        "schedule": crontab(hour=16, minute=0),
    },
    # Live account against Upstox (a no-op on paper): adopts what the bot missed, HALTs if it cannot.
    "reconcile-live": {
        "task": "strategies.execution.reconcile",
        "schedule": 30.0,
    },
    # Intraday positions closed before the broker's own cut-off; new entries stop earlier (risk).
    "square-off": {
        "task": "strategies.execution.square_off",
        "schedule": crontab(hour=15, minute=15, day_of_week="mon-fri"),
    },
    "prune-worker-heartbeats": {
        "task": "auctionsite.tasks.prune_worker_heartbeats",
        "schedule": crontab(minute="*/10"),
        "kwargs": {"max_age_s": 3600},
    },
}


@setup_logging.connect
def _use_django_logging(**kwargs) -> None:
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


# --- Heartbeats -------------------------------------------------------------------------------
_heartbeat = None


def _start_heartbeat(name: str) -> None:
    global _heartbeat
    from django.conf import settings

    from auctionsite.heartbeats import Heartbeat

    _heartbeat = Heartbeat(name=name, redis_url=settings.REDIS_URL)
    _heartbeat.start()


def _stop_heartbeat() -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None


@worker_ready.connect
def _worker_heartbeat_start(sender=None, **kwargs) -> None:
    # Fires in the worker's main process after the pool has forked: only that process beats.
    _start_heartbeat(sender.hostname)


@worker_shutdown.connect
def _worker_heartbeat_stop(sender=None, **kwargs) -> None:
    _stop_heartbeat()


@beat_init.connect
def _beat_heartbeat_start(sender=None, **kwargs) -> None:
    import atexit
    import socket

    # Beat has no shutdown signal; SIGTERM ends it through SystemExit, which runs atexit.
    _start_heartbeat(f"beat@{socket.gethostname()}")
    atexit.register(_stop_heartbeat)
