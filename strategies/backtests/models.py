"""Stored backtest runs and parameter sweeps (registered with the `strategies` app: imported at the end
of `strategies/models.py`).

Storage and invariants only: runs are created, executed, cancelled and finished through
`strategies.backtests.services`. Results (metrics, trades, per-session AMT summaries, the daily
equity) are stored as the runner produced them, as JSON, so a report never re-runs anything.
Nothing here calls Celery, Redis or the history store.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MinValueValidator
from django.db import models

MONEY = {"max_digits": 16, "decimal_places": 2}


class FillModel(models.TextChoices):
    UNDERLYING = "underlying", "Underlying, in points"
    MODELLED = "modelled", "Options, modelled premiums (Black-Scholes)"
    RECORDED = "recorded", "Options, recorded premiums (history store)"


class DataSource(models.TextChoices):
    CANDLES = "candles", "1-minute candles"
    TICKS = "ticks", "Ticks (and their candles)"


class RunState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATES = (RunState.DONE, RunState.FAILED, RunState.CANCELLED)


class BacktestSweep(models.Model):
    """A grid over some of a strategy's parameters: one BacktestRun per combination."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    strategy = models.CharField(max_length=64)
    grid = models.JSONField(default=dict, help_text="Parameter name -> list of values tried.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "strategies"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"sweep {self.pk} {self.strategy}"


class BacktestRun(models.Model):
    """One backtest: what was asked (strategy, parameters, instruments, dates, fill model, costs,
    capital) and, once a backtests worker has run it, its progress and results."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    sweep = models.ForeignKey(
        BacktestSweep, on_delete=models.CASCADE, null=True, blank=True, related_name="runs"
    )
    strategy = models.CharField(max_length=64)
    parameters = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    instruments = models.JSONField(default=list)
    start = models.DateField()
    end = models.DateField()
    fill = models.CharField(max_length=16, choices=FillModel.choices, default=FillModel.UNDERLYING)
    source = models.CharField(max_length=8, choices=DataSource.choices, default=DataSource.CANDLES)
    costs = models.BooleanField(default=True, help_text="Charges deducted (option fills only).")
    capital = models.DecimalField(**MONEY, validators=[MinValueValidator(Decimal("1"))])
    lots = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    iv = models.FloatField(default=0.14, help_text="Implied volatility of the modelled premiums.")
    strike_offset = models.IntegerField(default=0, help_text="0 ATM, +n ITM, -n OTM (listed strikes).")
    slippage = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0.05"))

    state = models.CharField(max_length=12, choices=RunState.choices, default=RunState.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    sessions_done = models.PositiveIntegerField(default=0)
    sessions_total = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    trades = models.JSONField(default=list, blank=True, encoder=DjangoJSONEncoder)
    session_summaries = models.JSONField(default=list, blank=True, encoder=DjangoJSONEncoder)
    equity = models.JSONField(
        default=list, blank=True, help_text="[[session date, cumulative net PnL, drawdown], ...]"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "strategies"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(end__gte=models.F("start")), name="backtestrun_dates_ordered"
            ),
            models.CheckConstraint(condition=models.Q(lots__gte=1), name="backtestrun_lots_positive"),
        ]

    def __str__(self) -> str:
        return f"backtest {self.pk} {self.strategy} {self.start}..{self.end} [{self.state}]"

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def modelled(self) -> bool:
        """Option premiums were modelled, not traded: every place showing results says so."""
        return self.fill == FillModel.MODELLED

    @property
    def pnl_unit(self) -> str:
        return "points" if self.fill == FillModel.UNDERLYING else "₹"

    @property
    def group(self) -> str:
        return progress_group(self.pk)


def progress_group(run_id: int) -> str:
    """The Channels group carrying one run's progress messages."""
    return f"backtest.{run_id}"


from strategies.backtests import tasks as _tasks  # noqa: E402,F401  (registers the Celery tasks; see __init__)
