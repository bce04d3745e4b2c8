"""Writes to the strategies' records: configuration changes, order state, fills, positions, the
audit log, signals and worker checkpoints (HackSoft-style services).

This is the ONE place an order changes state (`order_transition`) and the one place positions are
computed (`position_from_fills`). Every change to a strategy's configuration bumps its `version`
and leaves an AuditEvent; every order transition leaves an OrderEvent and an AuditEvent in the
same transaction. Nothing here talks to a broker, Redis or Celery: callers do that and report back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from strategies.base import Signal as StrategySignal
from strategies.models import (
    ActorType,
    AuditEvent,
    Fill,
    Order,
    OrderEvent,
    OrderSide,
    OrderState,
    Position,
    Signal,
    StrategyCheckpoint,
    StrategyConfig,
    TradingMode,
    strategy_registry,
)

IST = ZoneInfo("Asia/Kolkata")
PRICE_PLACES = Decimal("0.0001")

# --- Who acts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: a user (from the admin), a strategy (its worker) or the system."""

    type: str
    name: str
    user_id: int | None = None

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls(ActorType.SYSTEM, name)


ActorLike = Actor | AbstractBaseUser | StrategyConfig | str | None


def as_actor(actor: ActorLike) -> Actor:
    """An Actor from a user, a strategy configuration, a system component name or None (system)."""
    if isinstance(actor, Actor):
        return actor
    if isinstance(actor, StrategyConfig):
        return Actor(ActorType.STRATEGY, actor.slug)
    if isinstance(actor, AbstractBaseUser):
        return Actor(ActorType.USER, actor.get_username(), actor.pk)
    return Actor.system(actor or "system")


def record_audit(
    *,
    actor: ActorLike,
    action: str,
    obj: Any = None,
    object_type: str = "",
    object_id: str = "",
    detail: Mapping[str, Any] | None = None,
    reason: str = "",
) -> AuditEvent:
    """Append one AuditEvent. `obj` (a model instance) names the object unless type/id are given."""
    who = as_actor(actor)
    if obj is not None:
        object_type = object_type or obj._meta.model_name
        object_id = object_id or str(obj.pk)
    event = AuditEvent(
        ts=timezone.now(),
        actor_type=who.type,
        actor=who.name,
        user_id=who.user_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        detail=dict(detail or {}),
        reason=reason,
    )
    event.full_clean()
    event.save()
    return event


# --- Strategy configuration ------------------------------------------------------------------


class LiveTradingRefused(ValidationError):
    """Switching a strategy to live while the installation does not allow live trading."""


LIVE_REFUSED_MESSAGE = (
    "Live trading is switched off on this installation: set LIVE_TRADING=true in the environment "
    "and restart before switching a strategy to live. The strategy stays in paper mode."
)


def _jsonable(value: Any) -> Any:
    """A parameter value as stored in the JSON column (times as HH:MM[:SS], Decimals as strings)."""
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S" if value.second else "%H:%M")
    if isinstance(value, Decimal):
        return str(value)
    return value


def clean_parameters(strategy_class: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The full, JSON-storable parameter set for `raw` (defaults filled in), or a ValidationError
    with one message per bad or unknown parameter, keyed by the parameter's name."""
    cls = strategy_registry().get(strategy_class)
    if cls is None:
        raise ValidationError({"strategy_class": f"Unknown strategy {strategy_class!r}."})
    if not isinstance(raw, Mapping):
        raise ValidationError({"parameters": "Parameters are a JSON object of name: value."})
    clean, errors = cls.validate_params(dict(raw))
    if errors:
        raise ValidationError({name: [message] for name, message in errors.items()})
    return {name: _jsonable(value) for name, value in clean.items()}


def _locked_config(config: StrategyConfig) -> StrategyConfig:
    return StrategyConfig.objects.select_for_update().get(pk=config.pk)


def _save_config_change(
    config: StrategyConfig, changes: dict[str, tuple[Any, Any]], *, actor: ActorLike, action: str
) -> None:
    """Bump the version, validate, save and audit a change already applied to the locked row.

    Switching on/off or paper/live does not re-check the class: a configuration whose strategy left
    the library must still be switchable off."""
    config.version += 1
    config.full_clean(exclude=["strategy_class"] if set(changes) <= {"enabled", "mode"} else None)
    config.save()
    detail = {name: {"from": old, "to": new} for name, (old, new) in changes.items()}
    record_audit(actor=actor, action=action, obj=config, detail=detail | {"version": config.version})


def create_strategy_config(
    *,
    slug: str,
    strategy_class: str,
    instruments: list[str],
    capital: Decimal,
    max_daily_loss: Decimal,
    lots: int = 1,
    parameters: Mapping[str, Any] | None = None,
    enabled: bool = False,
    mode: str = TradingMode.PAPER,
    actor: ActorLike,
) -> StrategyConfig:
    """A new strategy configuration, parameters validated (defaults filled in); live only when
    LIVE_TRADING allows it."""
    if mode == TradingMode.LIVE and not settings.LIVE_TRADING:
        record_audit(
            actor=actor,
            action="strategy.mode_refused",
            object_type="strategyconfig",
            object_id=slug,
            detail={"requested": mode},
            reason=LIVE_REFUSED_MESSAGE,
        )
        raise LiveTradingRefused({"mode": LIVE_REFUSED_MESSAGE})
    config = StrategyConfig(
        slug=slug,
        strategy_class=strategy_class,
        instruments=list(instruments),
        capital=capital,
        max_daily_loss=max_daily_loss,
        lots=lots,
        enabled=enabled,
        mode=mode,
    )
    try:
        config.parameters = clean_parameters(strategy_class, parameters or {})
    except ValidationError as exc:
        config.parameters = dict(parameters or {})
        errors = exc.message_dict
        try:
            config.full_clean(exclude=["parameters"])
        except ValidationError as more:
            errors |= more.message_dict
        raise ValidationError(errors) from None
    with transaction.atomic():
        config.full_clean()
        config.save()
        record_audit(
            actor=actor,
            action="strategy.created",
            obj=config,
            detail={
                "strategy_class": strategy_class,
                "enabled": enabled,
                "mode": mode,
                "instruments": config.instruments,
                "parameters": config.parameters,
            },
        )
    return config


SETTINGS_FIELDS = ("instruments", "capital", "lots", "max_daily_loss")


def update_strategy_config(
    config: StrategyConfig,
    *,
    actor: ActorLike,
    parameters: Mapping[str, Any] | None = None,
    **values: Any,
) -> StrategyConfig:
    """Change any of instruments, capital, lots, max_daily_loss and (when given) the parameters, as
    one new version. Invalid values raise ValidationError keyed by field or parameter name, and then
    nothing changes. Missing parameter names take their declared defaults."""
    unknown = set(values) - set(SETTINGS_FIELDS)
    if unknown:
        raise TypeError(f"update_strategy_config() cannot change {', '.join(sorted(unknown))}")
    clean = clean_parameters(config.strategy_class, parameters) if parameters is not None else None
    with transaction.atomic():
        locked = _locked_config(config)
        changes: dict[str, tuple[Any, Any]] = {}
        for name, value in values.items():
            old = getattr(locked, name)
            if old != value:
                changes[name] = (_jsonable(old), _jsonable(value))
                setattr(locked, name, value)
        if clean is not None and clean != locked.parameters:
            names = set(clean) | set(locked.parameters)
            changes |= {
                f"parameters.{name}": (locked.parameters.get(name), clean.get(name))
                for name in sorted(names)
                if locked.parameters.get(name) != clean.get(name)
            }
            locked.parameters = clean
        if changes:
            _save_config_change(locked, changes, actor=actor, action="strategy.changed")
    config.refresh_from_db()
    return config


def update_parameters(config: StrategyConfig, raw: Mapping[str, Any], *, actor: ActorLike) -> StrategyConfig:
    """Replace the parameters with `raw` validated against the class's declaration (missing names
    take their defaults). Raises ValidationError keyed by parameter name; nothing changes then."""
    return update_strategy_config(config, actor=actor, parameters=raw)


def set_strategy_enabled(config: StrategyConfig, enabled: bool, *, actor: ActorLike) -> StrategyConfig:
    """Switch a strategy on or off (its worker notices through the version)."""
    with transaction.atomic():
        locked = _locked_config(config)
        if locked.enabled != enabled:
            changes = {"enabled": (locked.enabled, enabled)}
            locked.enabled = enabled
            _save_config_change(
                locked, changes, actor=actor, action="strategy.enabled" if enabled else "strategy.disabled"
            )
    config.refresh_from_db()
    return config


def set_strategy_mode(config: StrategyConfig, mode: str, *, actor: ActorLike) -> StrategyConfig:
    """Switch between paper and live. Live is refused (and the refusal audited) unless the
    installation sets LIVE_TRADING."""
    if mode not in TradingMode.values:
        raise ValidationError({"mode": f"Unknown mode {mode!r}; one of {', '.join(TradingMode.values)}."})
    if mode == TradingMode.LIVE and not settings.LIVE_TRADING:
        # Recorded outside any transaction of ours, so the refusal stays in the log.
        record_audit(
            actor=actor,
            action="strategy.mode_refused",
            obj=config,
            detail={"from": config.mode, "requested": mode},
            reason=LIVE_REFUSED_MESSAGE,
        )
        raise LiveTradingRefused({"mode": LIVE_REFUSED_MESSAGE})
    with transaction.atomic():
        locked = _locked_config(config)
        if locked.mode != mode:
            changes = {"mode": (locked.mode, mode)}
            locked.mode = mode
            _save_config_change(locked, changes, actor=actor, action="strategy.mode_changed")
    config.refresh_from_db()
    return config


# --- Orders ----------------------------------------------------------------------------------

TERMINAL_STATES = frozenset({OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED})

# The order state machine. `unknown` is where the bot lands when it lost track (a timeout after
# sending); reconciliation with the broker's order book moves it on to whatever the broker says.
ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    OrderState.NEW: frozenset(
        {OrderState.SUBMITTED, OrderState.REJECTED, OrderState.CANCELLED, OrderState.UNKNOWN}
    ),
    OrderState.SUBMITTED: frozenset(
        {
            OrderState.OPEN,
            OrderState.PARTIALLY_FILLED,
            OrderState.FILLED,
            OrderState.CANCELLED,
            OrderState.REJECTED,
            OrderState.UNKNOWN,
        }
    ),
    OrderState.OPEN: frozenset(
        {
            OrderState.PARTIALLY_FILLED,
            OrderState.FILLED,
            OrderState.CANCELLED,
            OrderState.REJECTED,  # the exchange refused an order the broker had accepted
            OrderState.UNKNOWN,
        }
    ),
    OrderState.PARTIALLY_FILLED: frozenset({OrderState.FILLED, OrderState.CANCELLED, OrderState.UNKNOWN}),
    OrderState.UNKNOWN: frozenset(
        {
            OrderState.SUBMITTED,
            OrderState.OPEN,
            OrderState.PARTIALLY_FILLED,
            OrderState.FILLED,
            OrderState.CANCELLED,
            OrderState.REJECTED,
        }
    ),
    OrderState.FILLED: frozenset(),
    OrderState.CANCELLED: frozenset(),
    OrderState.REJECTED: frozenset(),
}


class IllegalOrderTransition(ValueError):
    """A state change the order state machine does not allow; nothing was written."""


class FillRejected(ValueError):
    """A fill that cannot belong to its order (overfill, rejected order, conflicting redelivery)."""


def create_order(
    *,
    strategy: StrategyConfig,
    client_order_id: str,
    instrument_key: str,
    side: str,
    quantity: int,
    order_type: str = "MARKET",
    price: Decimal | None = None,
    broker: str = "paper",
    signal: Signal | None = None,
    actor: ActorLike = None,
) -> Order:
    """A new order in state `new`, its creation recorded as the first OrderEvent.

    Idempotent on `client_order_id` (the bot's key for the order): asking again for the same order
    returns the stored one; the same id with different terms raises ValidationError."""
    order = Order(
        strategy=strategy,
        client_order_id=client_order_id,
        instrument_key=instrument_key,
        side=side,
        quantity=quantity,
        order_type=order_type,
        price=price,
        broker=broker,
        signal=signal,
    )
    order.full_clean(validate_unique=False)
    existing = Order.objects.filter(client_order_id=client_order_id).first()
    if existing is not None:
        return _same_order(existing, order)
    detail = {"side": side, "quantity": quantity, "order_type": order_type, "price": price, "broker": broker}
    try:
        with transaction.atomic():
            order.save()
            OrderEvent.objects.create(
                order=order, from_state="", to_state=OrderState.NEW, ts=timezone.now(), detail=detail
            )
            record_audit(actor=actor or strategy, action="order.created", obj=order, detail=detail)
    except IntegrityError:  # the same order created by a concurrent delivery
        return _same_order(Order.objects.get(client_order_id=client_order_id), order)
    return order


ORDER_TERMS = (
    "strategy_id",
    "instrument_key",
    "side",
    "quantity",
    "order_type",
    "price",
    "broker",
    "signal_id",
)


def _same_order(existing: Order, asked: Order) -> Order:
    differ = [name for name in ORDER_TERMS if getattr(existing, name) != getattr(asked, name)]
    if differ:
        raise ValidationError(
            {
                "client_order_id": f"Order {existing.client_order_id} already exists with different "
                f"{', '.join(differ)}."
            }
        )
    return existing


def _apply_transition(
    order: Order, to_state: str, *, detail: Mapping[str, Any], actor: ActorLike
) -> OrderEvent:
    """Move a locked order to `to_state`, inside the caller's transaction."""
    from_state = order.state
    if to_state not in ORDER_TRANSITIONS.get(from_state, ()):
        raise IllegalOrderTransition(
            f"order {order.client_order_id}: {from_state} -> {to_state} is not allowed"
        )
    # Fill-driven states must agree with the fills (record_fill updates the quantity first).
    if to_state == OrderState.FILLED and order.filled_quantity != order.quantity:
        raise IllegalOrderTransition(
            f"order {order.client_order_id}: filled needs {order.quantity} filled, has {order.filled_quantity}"
        )
    if to_state == OrderState.PARTIALLY_FILLED and not 0 < order.filled_quantity < order.quantity:
        raise IllegalOrderTransition(
            f"order {order.client_order_id}: partially_filled needs 0 < filled < {order.quantity}, "
            f"has {order.filled_quantity}"
        )
    order.state = to_state
    order.save(update_fields=["state", "filled_quantity", "average_price", "broker_order_id", "updated_at"])
    event = OrderEvent.objects.create(
        order=order, from_state=from_state, to_state=to_state, ts=timezone.now(), detail=dict(detail)
    )
    record_audit(
        actor=actor or order.strategy,
        action="order.transition",
        obj=order,
        detail={"from": from_state, "to": to_state} | dict(detail),
    )
    return event


def order_transition(
    order: Order,
    to_state: str,
    *,
    detail: Mapping[str, Any] | None = None,
    broker_order_id: str | None = None,
    actor: ActorLike = None,
) -> OrderEvent:
    """THE way an order changes state: checks the state machine (IllegalOrderTransition, nothing
    written), then stores the new state, an OrderEvent and an AuditEvent in one transaction."""
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if broker_order_id:
            locked.broker_order_id = broker_order_id
        event = _apply_transition(locked, to_state, detail=detail or {}, actor=actor)
    order.refresh_from_db()
    return event


def _signed(side: str, quantity: int) -> int:
    return quantity if side == OrderSide.BUY else -quantity


def record_fill(
    order: Order,
    *,
    fill_id: str,
    qty: int,
    price: Decimal | float | str,
    ts: dt.datetime,
    charges: Decimal | float | str = Decimal("0"),
    actor: ActorLike = None,
) -> tuple[Fill, bool]:
    """Store one execution of `order` (idempotent on the broker's fill id: a repeat returns the
    stored fill and `False`), update the order's filled quantity, average price and state, then the
    strategy's position for that day. A fill after a cancel is stored without reopening the order."""
    # As stored (four places), so a redelivery compares equal to what the database holds.
    price = Decimal(str(price)).quantize(PRICE_PLACES)
    charges = Decimal(str(charges)).quantize(PRICE_PLACES)
    with transaction.atomic():
        # Lock the strategy first: fills of one strategy update the same positions, one at a time.
        StrategyConfig.objects.select_for_update().filter(pk=order.strategy_id).first()
        locked = Order.objects.select_for_update().select_related("strategy").get(pk=order.pk)
        existing = Fill.objects.filter(order=locked, fill_id=fill_id).first()
        if existing is not None:
            if existing.quantity != qty or existing.price != price:
                raise FillRejected(
                    f"fill {fill_id} of order {locked.client_order_id} was stored as "
                    f"{existing.quantity} @ {existing.price}, now reported as {qty} @ {price}"
                )
            order.refresh_from_db()
            return existing, False
        if locked.state in (OrderState.NEW, OrderState.REJECTED):
            raise FillRejected(f"order {locked.client_order_id} is {locked.state}: it cannot have fills")
        if locked.filled_quantity + qty > locked.quantity:
            raise FillRejected(
                f"fill {fill_id} of {qty} would overfill order {locked.client_order_id} "
                f"({locked.filled_quantity} of {locked.quantity} filled)"
            )
        fill = Fill(order=locked, fill_id=fill_id, quantity=qty, price=price, ts=ts, charges=charges)
        fill.full_clean(validate_unique=False)
        try:
            with transaction.atomic():
                fill.save()
        except IntegrityError:  # a concurrent delivery of the same fill got there first
            order.refresh_from_db()
            return Fill.objects.get(order=locked, fill_id=fill_id), False
        fills = list(locked.fills.all())
        locked.filled_quantity = sum(f.quantity for f in fills)
        notional = sum((f.price * f.quantity for f in fills), Decimal("0"))
        locked.average_price = (notional / locked.filled_quantity).quantize(PRICE_PLACES)
        fill_detail = {"fill_id": fill_id, "qty": qty, "price": str(price), "charges": str(charges)}
        target = (
            OrderState.FILLED if locked.filled_quantity == locked.quantity else OrderState.PARTIALLY_FILLED
        )
        if locked.state == OrderState.CANCELLED or locked.state == target:
            locked.save(update_fields=["filled_quantity", "average_price", "updated_at"])
            action = "order.fill_after_cancel" if locked.state == OrderState.CANCELLED else "order.fill"
            record_audit(actor=actor or locked.strategy, action=action, obj=locked, detail=fill_detail)
        else:
            _apply_transition(locked, target, detail=fill_detail, actor=actor)
        refresh_position(locked.strategy, locked.instrument_key, timezone.localtime(ts, IST).date())
    order.refresh_from_db()
    return fill, True


# --- Positions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Execution:
    """One fill as the position arithmetic sees it."""

    side: str
    quantity: int
    price: Decimal
    charges: Decimal = Decimal("0")


@dataclass(frozen=True, slots=True)
class PositionFigures:
    net_quantity: int
    average_price: Decimal | None
    realised_pnl: Decimal
    charges: Decimal


def position_from_fills(executions: Iterable[Execution]) -> PositionFigures:
    """Net quantity, average price of the open quantity, realised PnL (before charges) and total
    charges from executions in time order. Closing quantity realises against the average price;
    a fill larger than the open quantity closes it and opens the rest the other way at its price."""
    net = 0
    open_cost = Decimal("0")  # price x quantity of the open position, always positive
    realised = Decimal("0")
    charges = Decimal("0")
    for ex in executions:
        price = Decimal(str(ex.price))
        charges += Decimal(str(ex.charges))
        signed = _signed(ex.side, ex.quantity)
        if net == 0 or (net > 0) == (signed > 0):
            net += signed
            open_cost += price * ex.quantity
            continue
        average = open_cost / abs(net)
        closing = min(ex.quantity, abs(net))
        direction = 1 if net > 0 else -1
        realised += (price - average) * closing * direction
        if ex.quantity > abs(net):
            remainder = ex.quantity - abs(net)
            net = remainder if signed > 0 else -remainder
            open_cost = price * remainder
        else:
            net += signed
            open_cost = average * abs(net) if net else Decimal("0")
    average_price = (open_cost / abs(net)).quantize(PRICE_PLACES) if net else None
    return PositionFigures(
        net, average_price, realised.quantize(PRICE_PLACES), charges.quantize(PRICE_PLACES)
    )


def _day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=IST)
    return start, start + dt.timedelta(days=1)


def refresh_position(strategy: StrategyConfig, instrument_key: str, trading_day: dt.date) -> Position:
    """Recompute a strategy's position in one instrument for one trading day from all its fills."""
    start, end = _day_bounds(trading_day)
    fills = (
        Fill.objects.filter(
            order__strategy=strategy, order__instrument_key=instrument_key, ts__gte=start, ts__lt=end
        )
        .select_related("order")
        .order_by("ts", "id")
    )
    figures = position_from_fills(Execution(f.order.side, f.quantity, f.price, f.charges) for f in fills)
    position, _ = Position.objects.update_or_create(
        strategy=strategy,
        instrument_key=instrument_key,
        trading_day=trading_day,
        defaults={
            "net_quantity": figures.net_quantity,
            "average_price": figures.average_price,
            "realised_pnl": figures.realised_pnl,
            "charges": figures.charges,
        },
    )
    return position


# --- Signals and checkpoints ------------------------------------------------------------------


def record_signal(
    config: StrategyConfig,
    *,
    instrument_key: str,
    ts: dt.datetime,
    side: str,
    kind: str,
    reason: str,
    stream_id: str,
    price: Decimal | float | None = None,
    entry: Decimal | float | None = None,
    stop: Decimal | float | None = None,
    target: Decimal | float | None = None,
    facts: Mapping[str, Any] | None = None,
) -> tuple[Signal, bool]:
    """Store a strategy's signal once per (instrument, stream id, kind): a redelivered evaluation
    gets the stored one back with `False`."""

    def money(value: Decimal | float | None) -> Decimal | None:
        return None if value is None else Decimal(str(value)).quantize(PRICE_PLACES)

    key = {"strategy": config, "instrument_key": instrument_key, "stream_id": stream_id, "kind": kind}
    existing = Signal.objects.filter(**key).first()
    if existing is not None:
        return existing, False
    signal = Signal(
        **key,
        ts=ts,
        side=side,
        price=money(price),
        entry=money(entry),
        stop=money(stop),
        target=money(target),
        reason=reason,
        facts=dict(facts or {}),
    )
    signal.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            signal.save()
    except IntegrityError:
        return Signal.objects.get(**key), False
    return signal, True


def signal_record(signal: StrategySignal, *, stream_id: str) -> dict[str, Any]:
    """The keyword arguments of `record_signal` for a strategy's Signal value (as the strategy
    library emits it) produced by the tick at `stream_id`."""
    return {
        "instrument_key": signal.instrument_key,
        "ts": dt.datetime.fromtimestamp(signal.ts_ms / 1000, tz=IST),
        "side": signal.side,
        "kind": signal.kind,
        "reason": signal.reason,
        "stream_id": stream_id,
        "price": signal.price,
        "entry": signal.entry,
        "stop": signal.stop,
        "target": signal.target,
        "facts": signal.facts,
    }


def _stream_position(stream_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = stream_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def advance_checkpoint(config: StrategyConfig, *, stream_key: str, last_stream_id: str) -> StrategyCheckpoint:
    """Store the last stream id processed; never moves back (a late redelivery of an older range
    leaves it alone). Call inside the transaction that stored the range's signals."""
    rows = StrategyCheckpoint.objects.select_for_update().filter(strategy=config, stream_key=stream_key)
    with transaction.atomic():
        checkpoint = rows.first()
        if checkpoint is None:
            try:
                with transaction.atomic():
                    return StrategyCheckpoint.objects.create(
                        strategy=config, stream_key=stream_key, last_stream_id=last_stream_id
                    )
            except IntegrityError:  # another delivery created it first: compare with theirs
                checkpoint = rows.get()
        if _stream_position(last_stream_id) > _stream_position(checkpoint.last_stream_id):
            checkpoint.last_stream_id = last_stream_id
            checkpoint.save(update_fields=["last_stream_id", "updated_at"])
    return checkpoint


def record_evaluation(
    config: StrategyConfig, *, stream_key: str, last_stream_id: str, signals: Iterable[Mapping[str, Any]]
) -> list[Signal]:
    """One evaluated stream range: its signals (each the keyword arguments of `record_signal`) and
    the checkpoint, in one transaction, so a crash stores both or neither. Returns only the signals
    stored now (not those a previous delivery of the same range already stored)."""
    with transaction.atomic():
        stored = [signal for signal, created in (record_signal(config, **s) for s in signals) if created]
        advance_checkpoint(config, stream_key=stream_key, last_stream_id=last_stream_id)
    return stored
