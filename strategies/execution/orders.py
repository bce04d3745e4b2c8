"""The order-submission service: risk gate -> broker -> state machine, for paper and live alike.

`submit_order` is the one path every order of the bot takes:
1. An order with this client order id already exists: it is returned as it is (a redelivered task
   cannot send twice). Only an order still NEW (its process died before sending, or while
   sending) is taken up again, and only after the broker's book shows no order with its tag.
2. The risk engine (`strategies.execution.risk.check`) decides on the book as the database holds
   it; the decision and its reason go to the audit log, and a daily loss limit reached moves that
   scope to REDUCING (`strategies.trading`). A refused order is stored as REJECTED with the rule.
   The check and the rows it leads to hold the account's order lock (`lock_account`) until the
   transaction ends, so two strategies (two processes) cannot both pass an account-wide limit
   only one of them fits; paper orders also fill under it (the next check counts the position).
3. Above the freeze quantity a live order is sent as several orders (whole lots, each with its own
   client order id and tag). All rows are written (NEW) before anything is sent (write-ahead).
4. Each is sent to the venue (`UpstoxBroker` or `PaperVenue`): refused -> REJECTED with Upstox's
   error code and message; no answer -> UNKNOWN, then the order book is searched for its tag at
   once (and again by every reconciliation) — never resent.
`apply_broker_order` makes one stored order agree with the broker's view of it (fills derived from
the cumulative filled quantity and average price, then the state); the portfolio stream, the
reconciliation and the kill switch all use it. Every state change goes through
`services.order_transition` / `services.record_fill`.

`venue_for(config)` picks the broker: Upstox only with the three keys turned
(`strategies.trading.live_status`), else paper. Never call a broker inside a database transaction
that other writers wait on.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from strategies import services, trading
from strategies.execution import risk
from strategies.execution.charges import order_charges
from strategies.execution.paper import LIMIT as PAPER_LIMIT
from strategies.execution.paper import MARKET as PAPER_MARKET
from strategies.execution.paper import OrderRequest, PaperBroker
from strategies.execution.upstox import (
    CANCELLED,
    FILLED,
    OPEN,
    PARTIALLY_FILLED,
    REJECTED,
    SUBMITTED,
    BrokerError,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    ResponseLost,
    UpstoxBroker,
    Venue,
)
from strategies.models import Fill, Order, OrderEvent, OrderState, Position, StrategyConfig, TradingState

log = logging.getLogger(__name__)

IST = services.IST
PRICE_PLACES = services.PRICE_PLACES
MAX_TAG = 20
# pg_advisory_xact_lock key of the account's order lock (`lock_account`): any fixed 64-bit number.
ACCOUNT_LOCK_KEY = 0x4F52444552  # "ORDER"


class OrderConflict(Exception):
    """The broker's view of an order cannot be reached from the bot's (needs a person)."""


# --- Venues ------------------------------------------------------------------------------------


class PaperVenue:
    """The paper broker behind the same interface as `UpstoxBroker`. Wraps a `PaperBroker`, which
    is idempotent on the client order id: a live worker's venue fills the order in the strategy's
    own book, and the strategy placing the same id there afterwards gets that order and its fills."""

    name = "paper"
    splits_orders = False  # the paper broker fills above-freeze orders as slices itself

    def __init__(self, broker: PaperBroker):
        self.broker = broker

    @staticmethod
    def _report(order) -> BrokerOrder:
        r = order.request
        fills = tuple(
            BrokerFill(
                fill_id=f"{r.client_order_id}-{i}",
                quantity=f.quantity,
                price=Decimal(f.price),
                ts=dt.datetime.fromtimestamp(f.ts_ms / 1000, tz=IST),
                charges=f.charges.total.quantize(PRICE_PLACES),
            )
            for i, f in enumerate(order.fills)
        )
        filled = sum(f.quantity for f in fills)
        average = (
            (sum((f.price * f.quantity for f in fills), Decimal(0)) / filled).quantize(PRICE_PLACES)
            if filled
            else None
        )
        state = {"open": OPEN, "filled": FILLED, "cancelled": CANCELLED, "rejected": REJECTED}[order.state]
        return BrokerOrder(
            broker_order_id="",
            tag=r.client_order_id,
            instrument_key=r.instrument_key,
            side=r.side.upper(),
            quantity=r.quantity,
            filled_quantity=filled,
            average_price=average,
            status=order.state,
            state=state,
            message=order.reason,
            order_type=r.order_type.upper(),
            price=r.limit_price,
            fills=fills,
        )

    def place(
        self,
        *,
        client_order_id: str,
        strategy: str,
        instrument_key: str,
        side: str,
        quantity: int,
        order_type: str,
        price: Decimal | None,
        ts: dt.datetime,
    ) -> BrokerOrder:
        request = OrderRequest(
            client_order_id=client_order_id,
            strategy=strategy,
            instrument_key=instrument_key,
            side=side.lower(),
            quantity=quantity,
            ts_ms=round(ts.timestamp() * 1000),  # the exact millisecond the caller named
            order_type=PAPER_LIMIT if order_type == "LIMIT" else PAPER_MARKET,
            limit_price=price,
        )
        return self._report(self.broker.place(request))

    def cancel(self, *, broker_order_id: str, client_order_id: str) -> BrokerOrder | None:
        if client_order_id not in self.broker._orders:
            return None
        return self._report(self.broker.cancel(client_order_id))

    def order_book(self) -> list[BrokerOrder]:
        return [self._report(o) for o in self.broker._orders.values()]

    def positions(self) -> list[BrokerPosition]:
        net: dict[str, int] = {}
        for p in self.broker.positions():
            net[p.instrument_key] = net.get(p.instrument_key, 0) + p.quantity
        return [BrokerPosition(k, q) for k, q in net.items()]


class AccountRateLimiter:
    """At most `rate` order requests per second for the whole account, across every process that
    places orders (one counter per second in Redis). Upstox allows 10 a second per account; a
    burst across a second's edge can still reach the broker's limit, which answers 429, which the
    broker backs off from. Without Redis it falls back to the process's own bucket."""

    def __init__(self, rate: float = 10, *, key: str = "upstox:order-rate", redis_url: str | None = None):
        from strategies.execution.upstox import RateLimiter

        self.rate = int(rate)
        self.key = key
        self.redis_url = redis_url or settings.REDIS_URL
        self._client = None
        self._local = RateLimiter(rate)
        self.granted_second: int | None = None

    def _redis(self):
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1)
        return self._client

    def acquire(self) -> float:
        import time

        waited = 0.0
        while True:
            now = time.time()
            second = int(now)
            try:
                pipe = self._redis().pipeline()
                pipe.incr(f"{self.key}:{second}")
                pipe.expire(f"{self.key}:{second}", 5)
                count = pipe.execute()[0]
            except Exception as exc:  # no Redis: this process's own bucket still holds the rate
                log.warning("order rate limiter: Redis unavailable (%s); local limit", exc.__class__.__name__)
                return waited + self._local.acquire()
            if count <= self.rate:
                self.granted_second = second  # the second this request counts in
                return waited
            pause = second + 1 - now
            time.sleep(pause)
            waited += pause


def live_broker(*, access_token: str | None = None, **kwargs: Any) -> UpstoxBroker:
    """The Upstox broker for live orders (UPSTOX_API_URL: the real broker, its sandbox when
    UPSTOX_SANDBOX, or the fake). Refused unless LIVE_TRADING is set and an OAuth token exists."""
    from feeds.upstox import client
    from feeds.upstox.tokens import order_token
    from strategies.execution.upstox import LiveBrokerRefused

    if not settings.LIVE_TRADING:
        raise LiveBrokerRefused("LIVE_TRADING is not set: no live broker")
    token = access_token or order_token()
    if not token:
        raise LiveBrokerRefused("no valid Upstox OAuth token for orders")
    kwargs.setdefault("limiter", AccountRateLimiter())
    return UpstoxBroker(client.api_client(token), live_allowed=True, **kwargs)


def venue_for(config: StrategyConfig, *, paper: PaperBroker | None = None) -> tuple[Venue, str]:
    """The venue a strategy's orders go to, and why paper when paper (empty reason when live)."""
    status = trading.live_status(config)
    if status.live:
        return live_broker(), ""
    return PaperVenue(paper or PaperBroker()), status.reason


# --- Risk inputs from the database ---------------------------------------------------------------


def risk_limits(config: StrategyConfig | None) -> risk.RiskLimits:
    """The account's limits (settings.RISK_LIMITS, a mapping; defaults in RiskLimits) with the
    strategy's own max_daily_loss."""
    values = dict(getattr(settings, "RISK_LIMITS", {}) or {})
    overrides = {"strategy_max_daily_loss": config.max_daily_loss} if config is not None else {}
    return risk.RiskLimits.from_mapping(values, **overrides)


def instrument_terms(instrument_key: str) -> tuple[int, int | None]:
    """(lot size, freeze quantity or None): from the loaded instrument master, else from the last
    risk decision about the instrument (the caller named its contract's lot size then: the
    simulated feed's contracts are not in the master table), else (1, None)."""
    from feeds.models import Instrument
    from strategies.models import AuditEvent

    row = (
        Instrument.objects.filter(instrument_key=instrument_key).values("lot_size", "freeze_quantity").first()
    )
    if row is not None:
        return max(int(row["lot_size"] or 1), 1), (int(row["freeze_quantity"]) or None)
    decided = (
        AuditEvent.objects.filter(
            action__in=("risk.allowed", "risk.blocked"),
            object_type="order",
            detail__instrument_key=instrument_key,
        )
        .order_by("-ts", "-id")
        .values_list("detail", flat=True)
        .first()
    )
    if decided and decided.get("lot_size"):
        return max(int(decided["lot_size"]), 1), (int(decided.get("freeze_qty") or 0) or None)
    return 1, None


def _today(now: dt.datetime) -> dt.date:
    return timezone.localtime(now, IST).date()


def exposure(config: StrategyConfig, instrument_key: str, *, now: dt.datetime) -> risk.Exposure:
    """The book as the database holds it now, for the risk engine. PnL is realised minus charges
    (open positions are not marked here: the database holds no prices)."""
    day = _today(now)
    positions = list(Position.objects.filter(trading_day=day))
    open_positions = [p for p in positions if p.net_quantity]
    lot_sizes: dict[str, int] = {}

    def lots(p: Position) -> int:
        if p.instrument_key not in lot_sizes:
            lot_sizes[p.instrument_key] = instrument_terms(p.instrument_key)[0]
        return risk.lots_of(p.net_quantity, lot_sizes[p.instrument_key])

    mine = [p for p in positions if p.strategy_id == config.pk]
    # Order rates by the wall clock (created_at), whatever exchange time `now` names.
    since = timezone.now() - dt.timedelta(minutes=1)
    # Orders that reached (or may have reached) a broker: not those the risk gate or the broker refused.
    sent = Order.objects.filter(created_at__gte=since).exclude(
        Q(state=OrderState.REJECTED) & Q(broker_order_id="")
    )
    states = trading.all_states(day=day)
    account = states.get(trading.ACCOUNT)
    own = states.get(trading.strategy_scope(config.slug))
    return risk.Exposure(
        now=timezone.localtime(now, IST),
        strategy_position=sum(p.net_quantity for p in mine if p.instrument_key == instrument_key),
        strategy_pnl=sum((p.realised_pnl - p.charges for p in mine), Decimal(0)),
        account_pnl=sum((p.realised_pnl - p.charges for p in positions), Decimal(0)),
        open_positions=len(open_positions),
        strategy_open_lots=sum(lots(p) for p in open_positions if p.strategy_id == config.pk),
        account_open_lots=sum(lots(p) for p in open_positions),
        strategy_orders_last_minute=sent.filter(strategy=config).count(),
        account_orders_last_minute=sent.count(),
        account_state=account.state if account else trading.ACTIVE,
        strategy_state=own.state if own else trading.ACTIVE,
    )


# --- Submission ----------------------------------------------------------------------------------


@dataclass(slots=True)
class SubmitResult:
    orders: list[Order] = field(default_factory=list)
    decision: risk.RiskDecision | None = None
    venue: str = ""
    paper_reason: str = ""

    @property
    def blocked(self) -> bool:
        return self.decision is not None and not self.decision.allowed


def slice_ids(client_order_id: str, count: int) -> list[str]:
    """Client order ids of the slices: the first keeps the id, the rest end in -NN (≤ 20 chars)."""
    if count <= 1:
        return [client_order_id]
    stem = client_order_id[: MAX_TAG - 3]
    return [client_order_id] + [f"{stem}-{i:02d}" for i in range(1, count)]


def submit_order(
    *,
    strategy: StrategyConfig,
    client_order_id: str,
    instrument_key: str,
    side: str,
    quantity: int,
    venue: Venue,
    order_type: str = "MARKET",
    price: Decimal | None = None,
    signal=None,
    actor: services.ActorLike = None,
    reason: str = "",
    emergency: bool = False,
    reduce_only: bool = False,
    now: dt.datetime | None = None,
    limits: risk.RiskLimits | None = None,
    lot_size: int | None = None,
    freeze_qty: int | None = None,
    detail: Mapping[str, Any] | None = None,
    send: bool = True,
) -> SubmitResult:
    """Gate, store and send one order (see the module docstring). Returns the stored orders (one,
    or one per slice) as they stand after sending, and the risk decision (None when the order
    already existed). `lot_size` / `freeze_qty` name the contract's terms when the caller knows
    them (else the instrument master's); `detail` (e.g. the premium source) joins the audit record.
    `send=False` stores the gated orders (NEW) without sending: `send_orders` sends them later."""
    now = now or timezone.now()
    actor = actor or strategy
    result = SubmitResult(venue=venue.name)
    if Order.objects.filter(client_order_id=client_order_id).exists():
        return _existing(result, client_order_id, venue, send=send, actor=actor, now=now)
    if lot_size is None or freeze_qty is None:
        known_lot, known_freeze = instrument_terms(instrument_key)
        lot_size = lot_size or known_lot
        freeze_qty = freeze_qty or known_freeze
    with transaction.atomic():
        # Account-wide limits hold across strategies and processes: the check and the rows it
        # allows are one step, serialised for the account until the caller's transaction ends.
        lock_account()
        # Stored by another delivery while this one waited for the lock?
        raced = Order.objects.filter(client_order_id=client_order_id).exists()
        if not raced:
            _gate_and_store(
                result,
                strategy=strategy,
                client_order_id=client_order_id,
                instrument_key=instrument_key,
                side=side,
                quantity=quantity,
                venue=venue,
                order_type=order_type,
                price=price,
                signal=signal,
                actor=actor,
                reason=reason,
                emergency=emergency,
                reduce_only=reduce_only,
                now=now,
                limits=limits,
                lot_size=lot_size,
                freeze_qty=freeze_qty,
                detail=detail,
            )
            if send and result.decision.allowed and venue.name == PaperVenue.name:
                # The paper broker answers in memory: its fills (the positions the next check
                # counts) are stored under the same lock. A real broker is never called inside it.
                send_orders(result.orders, venue, actor=actor, now=now)
    if raced:
        return _existing(result, client_order_id, venue, send=send, actor=actor, now=now)
    if send and result.decision.allowed and venue.name != PaperVenue.name:
        send_orders(result.orders, venue, actor=actor, now=now)
    return result


def _existing(
    result: SubmitResult,
    client_order_id: str,
    venue: Venue,
    *,
    send: bool,
    actor: services.ActorLike,
    now: dt.datetime,
) -> SubmitResult:
    """An order already stored under this id (and its slices), as they stand; one still NEW is
    sent now, after a look at the broker's book for its tag."""
    existing = Order.objects.get(client_order_id=client_order_id)
    siblings = [existing] + list(
        Order.objects.filter(client_order_id__startswith=client_order_id[: MAX_TAG - 3] + "-").exclude(
            pk=existing.pk
        )
    )
    for order in siblings:
        if send and order.state == OrderState.NEW:
            _send(order, venue, actor=actor, now=now, resume=True)
        order.refresh_from_db()
    result.orders = siblings
    return result


def lock_account() -> None:
    """Hold the account's order lock until the current transaction ends (commit or rollback).

    PostgreSQL: a transaction-level advisory lock (`pg_advisory_xact_lock`), so a second process
    checking an account-wide limit waits here, then reads the first one's committed rows. SQLite:
    the database's single write lock; the settings begin every transaction IMMEDIATE (holding it
    from the start), and a write here takes it in a transaction begun otherwise."""
    from django.db import connection

    if not connection.in_atomic_block:
        raise RuntimeError("lock_account() outside a transaction would lock nothing")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ACCOUNT_LOCK_KEY])
        elif connection.vendor == "sqlite":
            cursor.execute(f"UPDATE {TradingState._meta.db_table} SET id = id WHERE 0")
        else:
            raise NotImplementedError(f"no account lock on {connection.vendor}")


def _gate_and_store(
    result: SubmitResult,
    *,
    strategy: StrategyConfig,
    client_order_id: str,
    instrument_key: str,
    side: str,
    quantity: int,
    venue: Venue,
    order_type: str,
    price: Decimal | None,
    signal,
    actor: services.ActorLike,
    reason: str,
    emergency: bool,
    reduce_only: bool,
    now: dt.datetime,
    limits: risk.RiskLimits | None,
    lot_size: int,
    freeze_qty: int | None,
    detail: Mapping[str, Any] | None,
) -> None:
    """The risk decision on the book as stored, audited, and the order rows it leads to (one
    REJECTED row, or every slice NEW); under the account lock (`submit_order`)."""
    book = exposure(strategy, instrument_key, now=now)
    asked = quantity
    position = book.strategy_position
    if reduce_only and venue.name != "paper" and position and (risk.signed(side, 1) > 0) != (position > 0):
        # A live exit closes what the broker actually filled (an entry may have filled in part);
        # the paper broker already executed the strategy's own quantity, so paper keeps it.
        quantity = min(quantity, abs(position))
    intent = risk.OrderIntent(
        strategy=strategy.slug,
        instrument_key=instrument_key,
        side=side,
        quantity=quantity,
        lot_size=lot_size,
        freeze_qty=freeze_qty,
        emergency=emergency,
        reduce_only=reduce_only,
    )
    decision = risk.check(intent, book, limits or risk_limits(strategy))
    result.decision = decision
    for escalation in decision.escalations:
        scope = trading.ACCOUNT if escalation.scope == risk.ACCOUNT else trading.strategy_scope(strategy.slug)
        trading.escalate(
            scope,
            escalation.state,
            actor="risk",
            reason=escalation.reason,
            source=trading.SOURCE_RISK,
            trading_day=_today(now),
        )
    audit_detail = {
        "client_order_id": client_order_id,
        "instrument_key": instrument_key,
        "side": side,
        "quantity": quantity,
        "venue": venue.name,
        "emergency": emergency,
        "lot_size": lot_size,
        "freeze_qty": freeze_qty,
        **({"asked_quantity": asked} if asked != quantity else {}),
        **dict(detail or {}),
        **decision.as_dict(),
    }
    services.record_audit(
        actor=actor,
        action="risk.allowed" if decision.allowed else "risk.blocked",
        object_type="order",
        object_id=client_order_id,
        detail=audit_detail,
        reason=reason or decision.reason,
    )
    broker = venue.name
    if not decision.allowed:
        order = services.create_order(
            strategy=strategy,
            client_order_id=client_order_id,
            instrument_key=instrument_key,
            side=side,
            quantity=quantity,
            order_type=order_type,
            price=price,
            broker=broker,
            signal=signal,
            actor=actor,
        )
        if order.state == OrderState.NEW:
            services.order_transition(
                order,
                OrderState.REJECTED,
                detail={"risk": decision.rule, "message": decision.reason},
                actor=actor,
            )
        result.orders = [order]
        return

    slices = decision.slices if venue.splits_orders else (quantity,)
    ids = slice_ids(client_order_id, len(slices))
    # Write-ahead: every slice is stored before anything is sent.
    orders = [
        services.create_order(
            strategy=strategy,
            client_order_id=coid,
            instrument_key=instrument_key,
            side=side,
            quantity=qty,
            order_type=order_type,
            price=price,
            broker=broker,
            signal=signal,
            actor=actor,
        )
        for coid, qty in zip(ids, slices, strict=True)
    ]
    result.orders = orders


def risk_refusal(client_order_id: str) -> str:
    """Why the risk gate refused the stored order with this id: its reason, or "" when the gate let
    it through (or no such order is stored). A worker replaying decisions already stored asks it."""
    event = (
        OrderEvent.objects.filter(
            order__client_order_id=client_order_id, to_state=OrderState.REJECTED, detail__has_key="risk"
        )
        .values_list("detail", flat=True)
        .first()
    )
    return (event.get("message") or event["risk"]) if event else ""


def send_orders(
    stored: list[Order], venue: Venue, *, actor: services.ActorLike = None, now: dt.datetime | None = None
) -> list[Order]:
    """Send orders stored NEW by `submit_order(send=False)` (each at most once: one that is no
    longer NEW is left alone; see `_send`)."""
    now = now or timezone.now()
    for order in stored:
        order.refresh_from_db()
        if order.state == OrderState.NEW:
            _send(order, venue, actor=actor or order.strategy, now=now)
            order.refresh_from_db()
    return stored


_live_brokers: dict[str, UpstoxBroker] = {}


def live_venue() -> UpstoxBroker:
    """This process's live broker (one SDK client per token and URL, rebuilt when they change)."""
    import hashlib

    from feeds.upstox.tokens import order_token

    token = order_token() or ""
    key = hashlib.sha256(f"{settings.UPSTOX_API_URL}|{settings.UPSTOX_SANDBOX}|{token}".encode()).hexdigest()
    broker = _live_brokers.get(key)
    if broker is None:
        from feeds.upstox.client import close_api_client

        for old in _live_brokers.values():
            close_api_client(old.api_client)
        _live_brokers.clear()
        broker = _live_brokers[key] = live_broker(access_token=token)
    return broker


def submit_strategy_order(*, strategy: StrategyConfig, paper: PaperBroker, **order: Any) -> SubmitResult:
    """A strategy worker's order: to Upstox when the three keys are turned
    (`trading.live_status`), else to the strategy's own paper broker, through the same gate.
    A live order is stored now and sent when the caller's transaction commits (never a network
    call inside it; if the process dies first, the reconciliation settles the NEW order)."""
    status = trading.live_status(strategy)
    if not status.live:
        result = submit_order(strategy=strategy, venue=PaperVenue(paper), **order)
        result.paper_reason = status.reason
        return result
    venue = live_venue()
    # A real broker trades now: the risk clock is the wall clock (the deciding tick's exchange
    # time is the same moment, give or take the feed's delay), and fills are dated when they happen.
    order.pop("now", None)
    result = submit_order(strategy=strategy, venue=venue, send=False, **order)
    if result.decision is not None and result.decision.allowed:
        pending = list(result.orders)
        transaction.on_commit(lambda: send_orders(pending, venue, actor=strategy))
    return result


def _send(
    order: Order, venue: Venue, *, actor: services.ActorLike, now: dt.datetime, resume: bool = False
) -> None:
    """Send one stored NEW order; on a resumed one, first look for its tag at the broker."""
    if resume:
        try:
            found = [o for o in venue.order_book() if o.tag == order.client_order_id]
        except (BrokerError, ResponseLost) as exc:
            log.warning("order %s: cannot check the book before resending (%s)", order.client_order_id, exc)
            return  # stays NEW; the reconciliation resolves it
        if found:
            apply_broker_order(order, found[0], actor=actor)
            return
    try:
        placed = venue.place(
            client_order_id=order.client_order_id,
            strategy=order.strategy.slug,
            instrument_key=order.instrument_key,
            side=order.side,
            quantity=order.quantity,
            order_type=order.order_type,
            price=order.price,
            ts=now,
        )
    except BrokerError as exc:
        order.refresh_from_db()
        if order.state == OrderState.NEW:
            services.order_transition(
                order,
                OrderState.REJECTED,
                detail={"error_code": exc.code, "message": exc.message, "http_status": exc.status},
                actor=actor,
            )
        return
    except ResponseLost as exc:
        order.refresh_from_db()
        if order.state == OrderState.NEW:
            services.order_transition(order, OrderState.UNKNOWN, detail={"lost": str(exc)}, actor=actor)
        try:
            found = [o for o in venue.order_book() if o.tag == order.client_order_id]
        except (BrokerError, ResponseLost):
            return  # UNKNOWN until a reconciliation can read the book
        if found:
            apply_broker_order(order, found[0], actor=actor)
        return
    apply_broker_order(order, placed, actor=actor)
    # Confirm at once what the broker made of it (a market order is usually complete by now); the
    # portfolio stream and the reconciliation catch anything later.
    lookup = getattr(venue, "order", None)
    if placed.state == SUBMITTED and placed.broker_order_id and lookup is not None:
        try:
            current = lookup(placed.broker_order_id)
        except (BrokerError, ResponseLost) as exc:
            log.info("order %s: no confirmation yet (%s)", order.client_order_id, exc)
            return
        if current is not None:
            try:
                apply_broker_order(order, current, actor=actor)
            except OrderConflict as exc:  # left for the reconciliation, which halts on it
                log.error("order %s: %s", order.client_order_id, exc)


# --- Making a stored order agree with the broker ------------------------------------------------


def _derived_fill(order: Order, report: BrokerOrder, now: dt.datetime) -> BrokerFill | None:
    """The execution between what the bot has stored and the broker's cumulative figures."""
    delta = report.filled_quantity - order.filled_quantity
    if delta <= 0 or report.average_price is None:
        return None
    before = (order.average_price or Decimal(0)) * order.filled_quantity
    price = ((report.average_price * report.filled_quantity - before) / delta).quantize(PRICE_PLACES)
    day = _today(now)
    side = order.side.lower()
    # Brokerage is per executed order: charge the order's total so far, less what is stored.
    total = order_charges(side, report.average_price, report.filled_quantity, day).total
    stored = sum((f.charges for f in order.fills.all()), Decimal(0))
    charges = max(total - stored, Decimal(0)).quantize(PRICE_PLACES)
    ident = report.broker_order_id or order.client_order_id
    return BrokerFill(f"{ident}:{report.filled_quantity}", delta, price, now, charges)


def apply_broker_order(
    order: Order, report: BrokerOrder, *, actor: services.ActorLike = None, now: dt.datetime | None = None
) -> list[str]:
    """Bring a stored order to the broker's view of it: broker order id, fills, state. Idempotent
    (a repeated report changes nothing) and serialised per strategy (the strategy row is locked
    first, as `record_fill` does). Returns what changed, as readable strings; raises OrderConflict
    when the broker's state cannot be reached from the stored one."""
    now = now or timezone.now()
    actor = actor or "broker"
    changes: list[str] = []
    with transaction.atomic():
        StrategyConfig.objects.select_for_update().filter(pk=order.strategy_id).first()
        order = Order.objects.select_for_update().select_related("strategy").get(pk=order.pk)
        detail = {"broker_status": report.status}
        if report.message:
            detail["message"] = report.message
        bid = report.broker_order_id or None
        if order.state == OrderState.NEW:
            services.order_transition(
                order, OrderState.SUBMITTED, detail=detail, broker_order_id=bid, actor=actor
            )
            changes.append("new -> submitted")
        elif bid and order.broker_order_id != bid:
            Order.objects.filter(pk=order.pk).update(broker_order_id=bid)
            order.refresh_from_db()
            changes.append(f"broker order id {bid}")
        fills = (
            report.fills
            if report.fills is not None
            else (f for f in [_derived_fill(order, report, now)] if f)
        )
        for f in fills:
            before = order.state
            _, created = services.record_fill(
                order,
                fill_id=f.fill_id,
                qty=f.quantity,
                price=f.price,
                ts=f.ts,
                charges=f.charges or 0,
                actor=actor,
            )
            if created:
                changes.append(
                    f"fill {f.quantity} @ {f.price}"
                    + (f" ({before} -> {order.state})" if before != order.state else "")
                )
        if report.filled_quantity < order.filled_quantity:
            raise OrderConflict(
                f"order {order.client_order_id}: the broker reports {report.filled_quantity} filled, "
                f"the bot has {order.filled_quantity}"
            )
        target = report.state
        if target in (FILLED, PARTIALLY_FILLED) or target == order.state:
            pass  # fills drove the state (or it already agrees)
        elif target == SUBMITTED and order.state != OrderState.UNKNOWN:
            pass  # the broker's pending words: the bot already knows it is accepted
        elif target == OPEN and order.state == OrderState.PARTIALLY_FILLED:
            pass
        else:
            if target not in services.ORDER_TRANSITIONS.get(order.state, ()):
                raise OrderConflict(
                    f"order {order.client_order_id}: the broker says {report.status!r}, the bot has {order.state}"
                )
            from_state = order.state
            services.order_transition(order, target, detail=detail, actor=actor)
            changes.append(f"{from_state} -> {target}")
    return changes


def find_order(report: BrokerOrder, *, broker: str = "upstox") -> Order | None:
    """The stored order a broker report is about: by broker order id, else by tag."""
    if report.broker_order_id:
        order = Order.objects.filter(broker=broker, broker_order_id=report.broker_order_id).first()
        if order is not None:
            return order
    if report.tag:
        return Order.objects.filter(client_order_id=report.tag).first()
    return None


def cancel_order(order: Order, venue: Venue, *, actor: services.ActorLike, reason: str = "") -> Order:
    """Cancel one working order at its broker and store what the broker then says."""
    order.refresh_from_db()
    if order.state in services.TERMINAL_STATES:
        return order
    if order.state == OrderState.NEW and not order.broker_order_id:
        found = [o for o in venue.order_book() if o.tag == order.client_order_id]
        if not found:
            services.order_transition(
                order, OrderState.CANCELLED, detail={"reason": reason or "never sent"}, actor=actor
            )
            return order
        apply_broker_order(order, found[0], actor=actor)
        order.refresh_from_db()
    report = None
    try:
        report = venue.cancel(broker_order_id=order.broker_order_id, client_order_id=order.client_order_id)
    except BrokerError as exc:
        log.info("cancel %s refused: %s", order.client_order_id, exc)  # e.g. already complete
    if report is None:
        found = [o for o in venue.order_book() if o.tag == order.client_order_id]
        report = found[0] if found else None
    if report is not None:
        apply_broker_order(order, report, actor=actor)
    order.refresh_from_db()
    return order


def positions_from_fills(broker: str, day: dt.date) -> dict[tuple[int, str], int]:
    """(strategy id, instrument) -> net quantity of one broker's fills on one exchange day."""
    start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=IST)
    net: dict[tuple[int, str], int] = {}
    fills = Fill.objects.filter(order__broker=broker, ts__gte=start, ts__lt=start + dt.timedelta(days=1))
    for strategy_id, key, side, qty in fills.values_list(
        "order__strategy_id", "order__instrument_key", "order__side", "quantity"
    ):
        net[(strategy_id, key)] = net.get((strategy_id, key), 0) + risk.signed(side, qty)
    return {k: v for k, v in net.items() if v}


PriceSource = Callable[[str], Decimal | None]
