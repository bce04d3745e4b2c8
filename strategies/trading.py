"""Trading states per scope (ACTIVE / REDUCING / HALTED) and the three keys of live trading.

Scopes: `account` (everything) and `strategy:<slug>`. A strategy's effective state is the worse of
its own and the account's. Every change is audited (`services.record_audit`) with who and why.
A REDUCING set by a daily loss limit lapses at the end of its trading day; a HALTED set by a failed
reconciliation is lifted by the next successful one; a HALTED set by the kill switch only by a
person (`resume`).

Live trading needs three keys (`live_status`): LIVE_TRADING=true in the environment, the
strategy's mode set to live (by a staff user, through the admin), and a valid Upstox OAuth token.
Missing any, the strategy trades on paper and `live_status` says why. Nothing here calls a broker.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from strategies.execution.models import TradingState, TradingStateName
from strategies.models import StrategyConfig, TradingMode
from strategies.services import IST, ActorLike, as_actor, record_audit

ACCOUNT = "account"
ACTIVE = TradingStateName.ACTIVE
REDUCING = TradingStateName.REDUCING
HALTED = TradingStateName.HALTED
SEVERITY = {ACTIVE: 0, REDUCING: 1, HALTED: 2}

# Who set a state: decides what may lift it.
SOURCE_KILLSWITCH = "killswitch"
SOURCE_RECONCILE = "reconcile"
SOURCE_RISK = "risk"
SOURCE_USER = "user"


def strategy_scope(slug: str) -> str:
    return f"strategy:{slug}"


def today() -> dt.date:
    return timezone.localtime(timezone.now(), IST).date()


@dataclass(frozen=True, slots=True)
class ScopeState:
    scope: str
    state: str
    reason: str = ""
    source: str = ""


def _current(row: TradingState | None, day: dt.date) -> ScopeState | None:
    if row is None:
        return None
    # A daily-loss REDUCING belongs to its day only.
    if row.state == REDUCING and row.trading_day is not None and row.trading_day != day:
        return ScopeState(row.scope, ACTIVE)
    return ScopeState(row.scope, row.state, row.reason, row.source)


def state_of(scope: str, *, day: dt.date | None = None) -> ScopeState:
    """The state of one scope as stored (ACTIVE when nothing is stored or a REDUCING lapsed)."""
    row = TradingState.objects.filter(scope=scope).first()
    return _current(row, day or today()) or ScopeState(scope, ACTIVE)


def effective_state(slug: str | None, *, day: dt.date | None = None) -> ScopeState:
    """The state that applies to a strategy's orders: the worse of the account's and its own."""
    day = day or today()
    scopes = [ACCOUNT] + ([strategy_scope(slug)] if slug else [])
    rows = {r.scope: r for r in TradingState.objects.filter(scope__in=scopes)}
    states = [_current(rows.get(s), day) or ScopeState(s, ACTIVE) for s in scopes]
    return max(states, key=lambda s: SEVERITY[s.state])


def all_states(*, day: dt.date | None = None) -> dict[str, ScopeState]:
    """Every stored scope's current state (the account's always present), for /healthz and pages."""
    day = day or today()
    out = {ACCOUNT: ScopeState(ACCOUNT, ACTIVE)}
    for row in TradingState.objects.all():
        out[row.scope] = _current(row, day) or ScopeState(row.scope, ACTIVE)
    return out


def set_state(
    scope: str,
    state: str,
    *,
    actor: ActorLike,
    reason: str,
    source: str,
    trading_day: dt.date | None = None,
) -> ScopeState:
    """Store a scope's state (audited when it changes). Returns the new state."""
    if state not in SEVERITY:
        raise ValueError(f"unknown trading state {state!r}")
    who = as_actor(actor)
    with transaction.atomic():
        row = TradingState.objects.select_for_update().filter(scope=scope).first()
        before = _current(row, today()) if row else None
        if row is None:
            row = TradingState(scope=scope)
        unchanged = (
            before is not None and before.state == state and before.source == source and row.reason == reason
        )
        if unchanged:
            return before
        row.state, row.reason, row.source = state, reason, source
        row.trading_day = trading_day
        row.changed_at = timezone.now()
        row.changed_by = who.name
        try:
            with transaction.atomic():
                row.save()
        except IntegrityError:  # created concurrently: take theirs and overwrite
            row = TradingState.objects.select_for_update().get(scope=scope)
            row.state, row.reason, row.source, row.trading_day = state, reason, source, trading_day
            row.changed_at, row.changed_by = timezone.now(), who.name
            row.save()
        record_audit(
            actor=who,
            action="trading.state_changed",
            object_type="tradingstate",
            object_id=scope,
            detail={"from": before.state if before else ACTIVE, "to": state, "source": source},
            reason=reason,
        )
    return ScopeState(scope, state, reason, source)


def escalate(scope: str, state: str, *, actor: ActorLike, reason: str, source: str, **kw) -> ScopeState:
    """Move a scope to `state` unless it is already there or worse (never lowers a state)."""
    current = state_of(scope)
    if SEVERITY[current.state] >= SEVERITY[state]:
        return current
    return set_state(scope, state, actor=actor, reason=reason, source=source, **kw)


def lift_reconcile_halt(*, actor: ActorLike = "reconcile") -> bool:
    """A successful reconciliation lifts the account HALTED that a failed one set (not others)."""
    current = state_of(ACCOUNT)
    if current.state == HALTED and current.source == SOURCE_RECONCILE:
        set_state(ACCOUNT, ACTIVE, actor=actor, reason="reconciled with the broker", source=SOURCE_RECONCILE)
        return True
    return False


def resume(scope: str = ACCOUNT, *, actor: ActorLike, reason: str = "resumed by hand") -> ScopeState:
    """A person lifts a HALTED or REDUCING scope back to ACTIVE."""
    return set_state(scope, ACTIVE, actor=actor, reason=reason, source=SOURCE_USER)


# --- The three keys of live trading ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveStatus:
    live: bool
    reason: str  # why paper (empty when live)


def live_status(config: StrategyConfig, *, now: dt.datetime | None = None) -> LiveStatus:
    """Whether a strategy's orders go to Upstox: all three keys turned, else paper with a reason."""
    from feeds.upstox.tokens import order_token

    if not settings.LIVE_TRADING:
        return LiveStatus(False, "LIVE_TRADING is not set in the environment: paper trading")
    if config.mode != TradingMode.LIVE:
        return LiveStatus(False, "the strategy's mode is paper (a staff user switches it to live)")
    if not order_token(now):
        return LiveStatus(False, "no valid Upstox OAuth token for orders: connect Upstox")
    return LiveStatus(True, "")


def health() -> dict:
    """Trading states for /healthz and the dashboard: {"account": {...}, "strategies": {slug: {...}},
    "live_trading": bool}. Never a secret."""
    states = all_states()
    account = states.pop(ACCOUNT)
    return {
        "account": {"state": account.state, "reason": account.reason, "source": account.source},
        "strategies": {
            scope.split(":", 1)[1]: {"state": s.state, "reason": s.reason, "source": s.source}
            for scope, s in sorted(states.items())
            if scope.startswith("strategy:")
        },
        "live_trading": bool(settings.LIVE_TRADING),
    }
