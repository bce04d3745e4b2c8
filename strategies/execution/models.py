"""The trading state of each scope (the whole account, or one strategy): ACTIVE, REDUCING or HALTED.

Stored in the database so every process (strategy workers, the reconciler, the kill switch, the
dashboard, /healthz) sees the same state. Written only through `strategies.trading`, which audits
every change; nothing here calls a broker.

- ACTIVE: orders pass the risk limits.
- REDUCING: only orders that close (part of) a position pass; set when a daily loss limit is
  reached, and only for that trading day.
- HALTED: no order passes except the kill switch's own closing orders; set by the kill switch
  (lifted only by a staff user) or by a reconciliation that failed (lifted by the next one that
  succeeds).
"""

from __future__ import annotations

from django.db import models


class TradingStateName(models.TextChoices):
    ACTIVE = "active", "Active"
    REDUCING = "reducing", "Reducing (closing orders only)"
    HALTED = "halted", "Halted"


class TradingState(models.Model):
    """The trading state of one scope: `account` or `strategy:<slug>`. No row means ACTIVE."""

    scope = models.CharField(max_length=80, unique=True)
    state = models.CharField(max_length=10, choices=TradingStateName.choices, default=TradingStateName.ACTIVE)
    reason = models.TextField(blank=True)
    # Who set it: "killswitch", "reconcile", "risk", "user" — decides what may lift it.
    source = models.CharField(max_length=32, blank=True)
    # REDUCING from a daily loss applies to this exchange day only.
    trading_day = models.DateField(null=True, blank=True)
    changed_at = models.DateTimeField()
    changed_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["scope"]

    def __str__(self) -> str:
        return f"{self.scope}: {self.state}"
