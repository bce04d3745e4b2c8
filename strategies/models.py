"""The strategies' Django records: configuration, signals, orders and their history, fills,
positions, checkpoints of the live workers, and the audit log.

These are storage and invariants only. Every write that matters (an order changing state, a fill,
a strategy switched on or to live, new parameters) goes through `strategies.services`, which keeps
the history (OrderEvent, AuditEvent) and the derived figures (Position) consistent; nothing here
may call a broker, Redis or Celery. Money is Decimal, never float.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

MONEY = {"max_digits": 16, "decimal_places": 2}
# Prices keep four places: averages of 0.05-tick prices need more than paise to stay exact enough.
PRICE = {"max_digits": 16, "decimal_places": 4}


def strategy_registry() -> dict[str, type]:
    """The strategy library (slug -> class); imported late so the models load before the library."""
    from strategies.library import REGISTRY

    return REGISTRY


def strategy_class_choices() -> list[tuple[str, str]]:
    """Choices for `StrategyConfig.strategy_class`, read from the library at validation time."""
    return [(slug, getattr(cls, "title", None) or slug) for slug, cls in sorted(strategy_registry().items())]


class TradingMode(models.TextChoices):
    PAPER = "paper", "Paper"
    LIVE = "live", "Live"


class StrategyConfig(models.Model):
    """One configured strategy: which library class, on which instruments, with which parameters.

    `version` grows by one on every change made through the services, so a running worker compares
    it with the version it loaded and picks up new parameters without a restart.
    """

    slug = models.SlugField(
        max_length=64, unique=True, help_text="Also names the worker queue strategy.<slug>."
    )
    strategy_class = models.CharField(max_length=64, choices=strategy_class_choices)
    enabled = models.BooleanField(default=False)
    mode = models.CharField(max_length=8, choices=TradingMode.choices, default=TradingMode.PAPER)
    instruments = models.JSONField(default=list, help_text='Instrument keys, e.g. ["NSE_INDEX|Nifty 50"].')
    parameters = models.JSONField(default=dict, blank=True)
    capital = models.DecimalField(**MONEY, validators=[MinValueValidator(Decimal("0"))])
    lots = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    max_daily_loss = models.DecimalField(
        **MONEY,
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text="Realised + open loss in rupees at which the strategy stops trading for the day.",
    )
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(condition=models.Q(lots__gte=1), name="strategyconfig_lots_positive"),
            models.CheckConstraint(
                condition=models.Q(capital__gte=0), name="strategyconfig_capital_not_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(max_daily_loss__gt=0), name="strategyconfig_max_daily_loss_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    def strategy(self) -> type:
        """The library class this configuration runs."""
        return strategy_registry()[self.strategy_class]

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if not isinstance(self.instruments, list) or not self.instruments:
            errors["instruments"] = ["Give a non-empty list of instrument keys."]
        elif not all(isinstance(key, str) and "|" in key for key in self.instruments):
            errors["instruments"] = ['Each instrument key looks like "NSE_INDEX|Nifty 50".']
        elif len(set(self.instruments)) != len(self.instruments):
            errors["instruments"] = ["An instrument is listed twice."]
        cls = strategy_registry().get(self.strategy_class)
        if cls is not None:
            if not isinstance(self.parameters, dict):
                errors["parameters"] = ["Parameters are a JSON object of name: value."]
            else:
                _, field_errors = cls.validate_params(self.parameters)
                if field_errors:
                    errors["parameters"] = [f"{name}: {msg}" for name, msg in sorted(field_errors.items())]
        if errors:
            raise ValidationError(errors)


class SignalSide(models.TextChoices):
    LONG = "long", "Long"
    SHORT = "short", "Short"


class SignalKind(models.TextChoices):
    ENTRY = "entry", "Entry"
    EXIT = "exit", "Exit"


class Signal(models.Model):
    """What a strategy decided, with the auction facts that made it decide so.

    Keyed by the Redis stream id of the tick that produced it: a redelivered evaluation task
    produces the same key and cannot store the signal twice. The instrument is part of the key
    because each instrument has its own stream and stream ids repeat across streams.
    """

    strategy = models.ForeignKey(StrategyConfig, on_delete=models.PROTECT, related_name="signals")
    instrument_key = models.CharField(max_length=64)
    ts = models.DateTimeField(db_index=True)
    side = models.CharField(max_length=8, choices=SignalSide.choices)
    kind = models.CharField(max_length=8, choices=SignalKind.choices, default=SignalKind.ENTRY)
    price = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="The underlying's price the decision refers to."
    )
    entry = models.DecimalField(**PRICE, null=True, blank=True)
    stop = models.DecimalField(**PRICE, null=True, blank=True)
    target = models.DecimalField(**PRICE, null=True, blank=True)
    reason = models.TextField()
    facts = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    stream_id = models.CharField(max_length=32, help_text="Redis stream id of the tick that produced it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-ts", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["strategy", "instrument_key", "stream_id", "kind"], name="signal_once_per_stream_id"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.strategy_id} {self.kind} {self.side} {self.instrument_key} @ {self.ts:%Y-%m-%d %H:%M:%S}"
        )


class OrderSide(models.TextChoices):
    BUY = "BUY", "Buy"
    SELL = "SELL", "Sell"


class OrderType(models.TextChoices):
    MARKET = "MARKET", "Market"
    LIMIT = "LIMIT", "Limit"


class OrderState(models.TextChoices):
    NEW = "new", "New"
    SUBMITTED = "submitted", "Submitted"
    OPEN = "open", "Open"
    PARTIALLY_FILLED = "partially_filled", "Partially filled"
    FILLED = "filled", "Filled"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"
    # The bot lost track (a timeout after sending): only reconciliation with the broker resolves it.
    UNKNOWN = "unknown", "Unknown"


class BrokerName(models.TextChoices):
    PAPER = "paper", "Paper"
    UPSTOX = "upstox", "Upstox"


class Order(models.Model):
    """An order the bot made. Its state changes only through `services.order_transition`."""

    client_order_id = models.CharField(
        max_length=20,
        unique=True,
        # Sent as the broker's order tag: Indian brokers cap tags at 20 characters and reject
        # (not truncate) longer ones, so the bot's key must fit.
        validators=[RegexValidator(r"^[A-Za-z0-9_-]{1,20}$", "Up to 20 letters, digits, '-' or '_'.")],
        help_text="The bot's idempotency key, sent to the broker as the order tag.",
    )
    broker_order_id = models.CharField(max_length=64, blank=True, db_index=True)
    strategy = models.ForeignKey(StrategyConfig, on_delete=models.PROTECT, related_name="orders")
    signal = models.ForeignKey(Signal, on_delete=models.PROTECT, null=True, blank=True, related_name="orders")
    instrument_key = models.CharField(max_length=64)
    side = models.CharField(max_length=4, choices=OrderSide.choices)
    quantity = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    order_type = models.CharField(max_length=8, choices=OrderType.choices, default=OrderType.MARKET)
    price = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="Limit price; empty for market orders."
    )
    state = models.CharField(max_length=20, choices=OrderState.choices, default=OrderState.NEW, db_index=True)
    filled_quantity = models.PositiveIntegerField(default=0)
    average_price = models.DecimalField(**PRICE, null=True, blank=True)
    broker = models.CharField(max_length=8, choices=BrokerName.choices, default=BrokerName.PAPER)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="order_quantity_positive"),
            models.CheckConstraint(
                condition=models.Q(filled_quantity__lte=models.F("quantity")), name="order_not_overfilled"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.quantity} {self.instrument_key} [{self.state}]"

    def clean(self) -> None:
        if self.order_type == OrderType.LIMIT and self.price is None:
            raise ValidationError({"price": "A limit order needs a price."})
        if self.order_type == OrderType.MARKET and self.price is not None:
            raise ValidationError({"price": "A market order has no price."})
        if self.price is not None and self.price <= 0:
            raise ValidationError({"price": "A price is positive."})


class OrderEvent(models.Model):
    """One state transition of an order, as `services.order_transition` made it."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=20, choices=OrderState.choices, blank=True)
    to_state = models.CharField(max_length=20, choices=OrderState.choices)
    ts = models.DateTimeField(db_index=True)
    detail = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["ts", "id"]

    def __str__(self) -> str:
        return f"{self.order_id}: {self.from_state or '-'} -> {self.to_state}"


class Fill(models.Model):
    """One execution reported by the broker (or the paper broker). Unique per broker fill id."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="fills")
    fill_id = models.CharField(max_length=64, help_text="The broker's trade id.")
    quantity = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    price = models.DecimalField(**PRICE)
    ts = models.DateTimeField(db_index=True)
    charges = models.DecimalField(**PRICE, default=Decimal("0"))

    class Meta:
        ordering = ["ts", "id"]
        constraints = [
            models.UniqueConstraint(fields=["order", "fill_id"], name="fill_once_per_order"),
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="fill_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.fill_id}: {self.quantity} @ {self.price}"


class Position(models.Model):
    """A strategy's net position in one instrument on one trading day, derived from its fills.

    Written only by `services.refresh_position`; never edited by hand.
    """

    strategy = models.ForeignKey(StrategyConfig, on_delete=models.PROTECT, related_name="positions")
    instrument_key = models.CharField(max_length=64)
    trading_day = models.DateField(db_index=True)
    net_quantity = models.IntegerField(default=0, help_text="Positive long, negative short.")
    average_price = models.DecimalField(**PRICE, null=True, blank=True)
    realised_pnl = models.DecimalField(**PRICE, default=Decimal("0"))
    charges = models.DecimalField(**PRICE, default=Decimal("0"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-trading_day", "strategy_id", "instrument_key"]
        constraints = [
            models.UniqueConstraint(
                fields=["strategy", "instrument_key", "trading_day"], name="position_once_per_day"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.strategy_id} {self.instrument_key} {self.trading_day}: {self.net_quantity}"


class StrategyCheckpoint(models.Model):
    """The last stream id a strategy's worker processed, stored with the signals it produced."""

    strategy = models.ForeignKey(StrategyConfig, on_delete=models.CASCADE, related_name="checkpoints")
    stream_key = models.CharField(max_length=128)
    last_stream_id = models.CharField(max_length=32)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["strategy", "stream_key"], name="checkpoint_once_per_stream"),
        ]

    def __str__(self) -> str:
        return f"{self.strategy_id} {self.stream_key} @ {self.last_stream_id}"


class ActorType(models.TextChoices):
    USER = "user", "User"
    STRATEGY = "strategy", "Strategy"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """Who did what to which object, and why. Written by the services, never edited."""

    ts = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=10, choices=ActorType.choices)
    actor = models.CharField(max_length=150, help_text="User name, strategy slug or system component.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, db_index=True, blank=True)
    object_id = models.CharField(max_length=64, db_index=True, blank=True)
    detail = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-ts", "-id"]

    def __str__(self) -> str:
        return f"{self.ts:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type}:{self.object_id}"


from strategies.backtests.models import BacktestRun, BacktestSweep  # noqa: E402,F401  (backtests from the web)
from strategies.execution.models import TradingState  # noqa: E402,F401  (trading states: strategies.trading)
