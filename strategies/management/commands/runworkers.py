"""`python manage.py runworkers`: only the strategy workers, for a machine that runs nothing else.

One long-lived Celery worker per enabled strategy (`celery worker -Q strategy.<slug> --pool solo
-c 1`, the same spec `manage.py up` uses), supervised by `auctionsite.supervisor.Supervisor`: a
worker that dies is restarted with backoff, and the enabled set is re-read from the database every
few seconds, so enabling or disabling a strategy in the admin starts or stops only its worker.
SIGTERM / SIGINT / SIGHUP stop every worker (SIGTERM, then SIGKILL after --grace seconds).

Starts and stops processes only; the evaluation lives in `strategies.tasks` / `strategies.live`.
"""

from __future__ import annotations

import signal
import sys
import time

from django.core.management.base import BaseCommand

from auctionsite.management.commands.up import RECONCILE_EVERY_S, strategy_worker_spec
from auctionsite.supervisor import ProcessSpec, Supervisor


def wanted_workers(only: list[str] | None = None) -> list[ProcessSpec]:
    """A worker spec for each enabled strategy (restricted to `only` when given)."""
    from strategies.selectors import enabled_strategies

    slugs = list(enabled_strategies().values_list("slug", flat=True))
    return [strategy_worker_spec(slug) for slug in slugs if not only or slug in only]


class Command(BaseCommand):
    help = "Run one Celery worker per enabled strategy (and only those), restarting what dies."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--only", default="", help="comma-separated slugs: run only these (if enabled)")
        parser.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
        parser.add_argument(
            "--reconcile-every",
            type=float,
            default=RECONCILE_EVERY_S,
            help="seconds between reads of the enabled set",
        )

    def handle(self, *args, **options) -> None:
        only = [s.strip() for s in options["only"].split(",") if s.strip()] or None
        self._stop_reason: str | None = None
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        supervisor = Supervisor(output=sys.stdout, grace=options["grace"])
        try:
            next_read = 0.0
            while self._stop_reason is None:
                if time.monotonic() >= next_read:
                    try:
                        supervisor.reconcile(wanted_workers(only))
                    except Exception as exc:  # the database is briefly away: keep what runs
                        supervisor.log("runworkers", f"could not read the enabled strategies ({exc!r})")
                    next_read = time.monotonic() + options["reconcile_every"]
                supervisor.step()
                time.sleep(0.2)
        finally:
            supervisor.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            supervisor.log("runworkers", f"stopped ({self._stop_reason or 'done'})")

    def _on_signal(self, signum, frame) -> None:
        self._stop_reason = signal.Signals(signum).name
