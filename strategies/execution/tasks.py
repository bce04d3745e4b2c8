"""Celery tasks of the execution layer (queue `maintenance`, sent by beat). Thin: each calls a
service and returns its report as JSON.

- `strategies.execution.reconcile` every RECONCILE_EVERY_S seconds: the live account against
  Upstox (a no-op when no live broker can be built: paper only).
- `strategies.execution.square_off` at the square-off time (15:15 IST, Mon-Fri): every working
  order cancelled, every position closed, without halting.
"""

from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)

RECONCILE = "strategies.execution.reconcile"
SQUARE_OFF = "strategies.execution.square_off"
RECONCILE_EVERY_S = 30


@shared_task(name=RECONCILE, ignore_result=True, expires=RECONCILE_EVERY_S)
def reconcile_task() -> dict | None:
    from strategies.execution.reconcile import reconcile_live

    report = reconcile_live()
    if report is not None and (report.corrections or report.problems):
        log.warning("reconcile: %s", report.as_dict())
    return report.as_dict() if report is not None else None


@shared_task(name=SQUARE_OFF, ignore_result=True, acks_late=True)
def square_off_task() -> dict:
    from strategies.execution.killswitch import square_off

    result = square_off("square-off")
    log.info("square-off: %s", result.as_dict())
    return result.as_dict()
