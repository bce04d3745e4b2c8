"""Reads of the strategies' records for workers, pages and commands (HackSoft-style selectors).

Selectors only read: anything that writes belongs in `strategies.services`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from strategies.models import (
    AuditEvent,
    Order,
    OrderState,
    Position,
    Signal,
    StrategyCheckpoint,
    StrategyConfig,
)

OPEN_ORDER_STATES = (
    OrderState.NEW,
    OrderState.SUBMITTED,
    OrderState.OPEN,
    OrderState.PARTIALLY_FILLED,
    OrderState.UNKNOWN,
)


def enabled_strategies() -> QuerySet[StrategyConfig]:
    """The strategies that should have a running worker."""
    return StrategyConfig.objects.filter(enabled=True).order_by("slug")


def strategy_by_slug(slug: str) -> StrategyConfig:
    return StrategyConfig.objects.get(slug=slug)


def strategy_version(slug: str) -> int | None:
    """The current configuration version (a worker compares it with the one it loaded); None if gone."""
    return StrategyConfig.objects.filter(slug=slug).values_list("version", flat=True).first()


@dataclass(frozen=True, slots=True)
class StrategySettings:
    """What a worker needs to run one strategy, as of one configuration version."""

    slug: str
    strategy_class: str
    enabled: bool
    mode: str
    instruments: tuple[str, ...]
    parameters: dict[str, Any]
    capital: Decimal
    lots: int
    max_daily_loss: Decimal
    version: int

    def build(self, instrument_key: str) -> Any:
        """A fresh strategy instance for one instrument with these parameters."""
        from strategies.library import get_strategy

        return get_strategy(self.strategy_class)(instrument_key, self.parameters)


def strategy_settings(slug: str) -> StrategySettings:
    """The current configuration of one strategy, detached from the database row. A worker keeps
    it and reloads when `strategy_version(slug)` moves past `version`."""
    config = StrategyConfig.objects.get(slug=slug)
    return StrategySettings(
        slug=config.slug,
        strategy_class=config.strategy_class,
        enabled=config.enabled,
        mode=config.mode,
        instruments=tuple(config.instruments),
        parameters=dict(config.parameters),
        capital=config.capital,
        lots=config.lots,
        max_daily_loss=config.max_daily_loss,
        version=config.version,
    )


def checkpoint_for(config: StrategyConfig, stream_key: str) -> str | None:
    """The last stream id the strategy processed on that stream, None if it never did."""
    return (
        StrategyCheckpoint.objects.filter(strategy=config, stream_key=stream_key)
        .values_list("last_stream_id", flat=True)
        .first()
    )


def open_orders(config: StrategyConfig | None = None) -> QuerySet[Order]:
    """Orders not yet in a final state (the ones reconciliation must look at)."""
    orders = Order.objects.filter(state__in=OPEN_ORDER_STATES)
    return orders.filter(strategy=config) if config is not None else orders


def order_by_client_id(client_order_id: str) -> Order | None:
    return Order.objects.filter(client_order_id=client_order_id).first()


def positions_for_day(trading_day: dt.date, config: StrategyConfig | None = None) -> QuerySet[Position]:
    positions = Position.objects.filter(trading_day=trading_day).select_related("strategy")
    return positions.filter(strategy=config) if config is not None else positions


def recent_signals(config: StrategyConfig | None = None, *, limit: int = 50) -> QuerySet[Signal]:
    signals = Signal.objects.select_related("strategy").order_by("-ts", "-id")
    return (signals.filter(strategy=config) if config is not None else signals)[:limit]


def audit_trail(*, object_type: str, object_id: str) -> QuerySet[AuditEvent]:
    """Everything the audit log holds about one object, oldest first."""
    return AuditEvent.objects.filter(object_type=object_type, object_id=str(object_id)).order_by("ts", "id")
