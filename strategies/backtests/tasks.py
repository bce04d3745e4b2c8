"""Celery tasks of the backtests queue (names `strategies.backtests.*`, routed to `backtests`).

Thin: each task calls one service. JSON arguments only (a run's id).
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="strategies.backtests.run", bind=True, acks_late=True)
def run_backtest_task(self, run_id: int) -> str:
    """Execute one stored BacktestRun; returns its final state."""
    from strategies.backtests.services import execute_run

    return execute_run(run_id, task_id=self.request.id)
