"""The risk engine: one pure decision per order, the same for paper and live.

`check(intent, exposure, limits)` says whether an order may go to a broker, why not, whether it
closes a position, in which slices it must be sent (freeze quantity), and which scopes must move to
REDUCING because a daily loss limit is reached. The caller (`strategies.execution.orders`) builds
the `Exposure` from the database, stores the decision in the audit log and applies the escalations.

Rules, in order:
1. HALTED (account or strategy): nothing passes, except an emergency (kill switch / square-off)
   order that closes a position.
2. A daily loss limit reached (strategy's own or account-wide) moves that scope to REDUCING.
3. REDUCING: only closing orders pass.
4. A closing order passes every remaining limit: limits exist to stop risk growing, never to trap
   a position open. A reduce-only order (an exit) that would not close is refused.
5. Opening orders: none at or after the entry cut-off or the square-off time; at most N orders a
   minute (strategy and account); at most N open positions; at most N open lots (strategy and
   account).
Slices: at most the freeze quantity each, rounded down to whole lots.

Pure Python: no Django, Celery, Redis or broker here. Money in Decimal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time
from decimal import Decimal
from typing import Any

ACTIVE = "active"
REDUCING = "reducing"
HALTED = "halted"
SEVERITY = {ACTIVE: 0, REDUCING: 1, HALTED: 2}
BUY = "BUY"
SELL = "SELL"
ACCOUNT = "account"
STRATEGY = "strategy"


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits; None switches a limit off. Loss limits are positive rupee amounts."""

    strategy_max_daily_loss: Decimal | None = None
    account_max_daily_loss: Decimal | None = None
    max_open_positions: int | None = 4  # account-wide instruments with a non-zero position
    strategy_max_open_lots: int | None = 10
    account_max_open_lots: int | None = 20
    strategy_max_orders_per_minute: int | None = 10
    account_max_orders_per_minute: int | None = 30
    entry_cutoff: time | None = time(15, 0)
    square_off: time | None = time(15, 15)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **overrides: Any) -> RiskLimits:
        """Limits from a settings mapping (strings allowed: "15:00", "50000"); unknown keys raise."""
        limits = cls()
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown risk limits: {', '.join(sorted(unknown))}")
        clean: dict[str, Any] = {}
        for name, value in {**values, **overrides}.items():
            if value is None or value == "":
                clean[name] = None
            elif name.endswith("_daily_loss"):
                clean[name] = Decimal(str(value))
            elif name in ("entry_cutoff", "square_off"):
                clean[name] = value if isinstance(value, time) else time.fromisoformat(str(value))
            else:
                clean[name] = int(value)
        return replace(limits, **clean)


@dataclass(frozen=True, slots=True)
class OrderIntent:
    strategy: str
    instrument_key: str
    side: str  # BUY | SELL
    quantity: int
    lot_size: int = 1
    freeze_qty: int | None = None
    # The kill switch's and the square-off's own closing orders: the only ones a HALT lets through.
    emergency: bool = False
    # An exit: it may only close (an exit whose entry was refused has nothing to close).
    reduce_only: bool = False


@dataclass(frozen=True, slots=True)
class Exposure:
    """The book as the risk engine sees it at the moment of the order."""

    now: datetime  # exchange time (IST, aware)
    strategy_position: int = 0  # the strategy's signed net quantity in the order's instrument
    strategy_pnl: Decimal = Decimal(0)  # today's net PnL (realised - charges [+ unrealised])
    account_pnl: Decimal = Decimal(0)
    open_positions: int = 0  # account-wide (strategy, instrument) pairs with a non-zero position
    strategy_open_lots: int = 0
    account_open_lots: int = 0
    strategy_orders_last_minute: int = 0
    account_orders_last_minute: int = 0
    account_state: str = ACTIVE
    strategy_state: str = ACTIVE


@dataclass(frozen=True, slots=True)
class Escalation:
    scope: str  # ACCOUNT | STRATEGY
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class RiskDecision:
    allowed: bool
    reason: str
    rule: str = ""  # the rule that blocked ("" when allowed)
    closing: bool = False
    slices: tuple[int, ...] = ()
    escalations: tuple[Escalation, ...] = field(default_factory=tuple)
    state: str = ACTIVE  # the effective state the decision was taken in

    def as_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "rule": self.rule,
            "closing": self.closing,
            "slices": list(self.slices),
            "state": self.state,
            "escalations": [(e.scope, e.state, e.reason) for e in self.escalations],
        }


def signed(side: str, quantity: int) -> int:
    return quantity if side == BUY else -quantity


def is_closing(side: str, quantity: int, position: int) -> bool:
    """Whether an order only reduces the position (never flips it through zero)."""
    if position == 0:
        return False
    return (signed(side, quantity) > 0) != (position > 0) and quantity <= abs(position)


def split_quantity(quantity: int, freeze_qty: int | None, lot_size: int = 1) -> tuple[int, ...]:
    """Slices of at most `freeze_qty` each, every slice whole lots (the last takes the rest)."""
    if quantity <= 0:
        return ()
    if not freeze_qty or freeze_qty <= 0 or quantity <= freeze_qty:
        return (quantity,)
    step = (freeze_qty // lot_size) * lot_size if lot_size > 0 else freeze_qty
    step = step or freeze_qty
    full, rest = divmod(quantity, step)
    return (step,) * full + ((rest,) if rest else ())


def lots_of(quantity: int, lot_size: int) -> int:
    """Whole lots, rounded up (a part lot still counts as exposure)."""
    lot_size = max(lot_size, 1)
    return -(-abs(quantity) // lot_size)


def loss_escalations(exposure: Exposure, limits: RiskLimits) -> tuple[Escalation, ...]:
    """REDUCING for each scope whose daily loss limit is reached (and that is not already worse)."""
    out = []
    if (
        limits.strategy_max_daily_loss is not None
        and exposure.strategy_pnl <= -limits.strategy_max_daily_loss
        and SEVERITY[exposure.strategy_state] < SEVERITY[REDUCING]
    ):
        out.append(
            Escalation(
                STRATEGY,
                REDUCING,
                f"daily loss {-exposure.strategy_pnl} reached the strategy's limit "
                f"{limits.strategy_max_daily_loss}: closing orders only",
            )
        )
    if (
        limits.account_max_daily_loss is not None
        and exposure.account_pnl <= -limits.account_max_daily_loss
        and SEVERITY[exposure.account_state] < SEVERITY[REDUCING]
    ):
        out.append(
            Escalation(
                ACCOUNT,
                REDUCING,
                f"account daily loss {-exposure.account_pnl} reached the limit "
                f"{limits.account_max_daily_loss}: closing orders only",
            )
        )
    return tuple(out)


def check(intent: OrderIntent, exposure: Exposure, limits: RiskLimits) -> RiskDecision:
    """The risk decision for one order (see the module docstring for the rules)."""
    closing = is_closing(intent.side, intent.quantity, exposure.strategy_position)
    slices = split_quantity(intent.quantity, intent.freeze_qty, intent.lot_size)

    def block(rule: str, reason: str, state: str) -> RiskDecision:
        return RiskDecision(False, reason, rule, closing, (), escalations, state)

    escalations: tuple[Escalation, ...] = ()
    if intent.quantity <= 0 or intent.side not in (BUY, SELL):
        return block("invalid", "quantity must be positive and side BUY or SELL", exposure.account_state)
    escalations = loss_escalations(exposure, limits)
    account_state, strategy_state = exposure.account_state, exposure.strategy_state
    for e in escalations:
        if e.scope == ACCOUNT:
            account_state = e.state
        else:
            strategy_state = e.state
    state = max(account_state, strategy_state, key=SEVERITY.__getitem__)
    if state == HALTED:
        if intent.emergency and closing:
            return RiskDecision(
                True, "emergency closing order while halted", "", closing, slices, escalations, state
            )
        return block("halted", "trading is halted: no orders", state)
    if state == REDUCING and not closing:
        reason = next((e.reason for e in escalations), "trading is reducing: closing orders only")
        return block("reducing", reason, state)
    if closing:
        return RiskDecision(True, "closes a position", "", True, slices, escalations, state)
    if intent.reduce_only:
        return block("reduce_only", "an exit with no position (or a smaller one) to close", state)

    now = exposure.now.time()
    if limits.square_off is not None and now >= limits.square_off:
        return block(
            "square_off", f"no new positions at or after the square-off time {limits.square_off}", state
        )
    if limits.entry_cutoff is not None and now >= limits.entry_cutoff:
        return block("entry_cutoff", f"no new entries at or after {limits.entry_cutoff}", state)
    if (
        limits.strategy_max_orders_per_minute is not None
        and exposure.strategy_orders_last_minute >= limits.strategy_max_orders_per_minute
    ):
        return block(
            "orders_per_minute",
            f"the strategy sent {exposure.strategy_orders_last_minute} orders in the last minute "
            f"(limit {limits.strategy_max_orders_per_minute})",
            state,
        )
    if (
        limits.account_max_orders_per_minute is not None
        and exposure.account_orders_last_minute >= limits.account_max_orders_per_minute
    ):
        return block(
            "orders_per_minute",
            f"the account sent {exposure.account_orders_last_minute} orders in the last minute "
            f"(limit {limits.account_max_orders_per_minute})",
            state,
        )
    if (
        limits.max_open_positions is not None
        and exposure.strategy_position == 0
        and exposure.open_positions >= limits.max_open_positions
    ):
        return block(
            "open_positions",
            f"{exposure.open_positions} positions open (limit {limits.max_open_positions})",
            state,
        )
    new_lots = lots_of(intent.quantity, intent.lot_size)
    if (
        limits.strategy_max_open_lots is not None
        and exposure.strategy_open_lots + new_lots > limits.strategy_max_open_lots
    ):
        return block(
            "open_lots",
            f"{exposure.strategy_open_lots} + {new_lots} lots would exceed the strategy's limit "
            f"{limits.strategy_max_open_lots}",
            state,
        )
    if (
        limits.account_max_open_lots is not None
        and exposure.account_open_lots + new_lots > limits.account_max_open_lots
    ):
        return block(
            "open_lots",
            f"{exposure.account_open_lots} + {new_lots} lots would exceed the account's limit "
            f"{limits.account_max_open_lots}",
            state,
        )
    return RiskDecision(True, "within limits", "", False, slices, escalations, state)


def square_off_due(now: datetime, limits: RiskLimits) -> bool:
    return limits.square_off is not None and now.time() >= limits.square_off
