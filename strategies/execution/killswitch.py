"""The kill switch and the square-off: cancel every working order, close every position, and (kill
switch only) halt.

`engage(actor, reason)` is the API the admin action and the dashboard call:
1. the account goes HALTED at once (source "killswitch": only a person lifts it, `trading.resume`),
   so no strategy sends anything new while the rest runs, and every strategy is disabled
   (audited, through `services.set_strategy_enabled`);
2. every working order is cancelled at its broker (`orders.cancel_order`: found by tag if its
   broker id was never learnt); paper orders are cancelled in the database;
3. live: a reconciliation brings fills that raced the cancel into the book;
4. every position from the bot's fills is closed by a market order through the order service
   with `emergency=True` (the only orders a HALT lets through, and only if they close);
5. live: a last reconciliation, and what is still open at the broker is reported.
Everything is audited (`killswitch.engaged` with the outcome, and each order's own trail).

`square_off(actor)` does 2–5 without halting (Celery beat at the square-off time, 15:15 IST).
Paper positions close at a price from `paper_price(instrument_key)` (default: the last tick of
the instrument's Redis stream); without a price a paper position is reported, not invented.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from django.utils import timezone

from strategies import services, trading
from strategies.execution import orders, reconcile
from strategies.execution.paper import PaperBroker
from strategies.execution.upstox import BrokerError, LiveBrokerRefused, ResponseLost, Venue
from strategies.models import Order, OrderState, StrategyConfig

log = logging.getLogger(__name__)

PriceSource = Callable[[str], Decimal | None]


@dataclass(slots=True)
class FlattenResult:
    cancelled: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    not_closed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    broker_positions_left: dict[str, int] = field(default_factory=dict)

    disabled: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a page: what was done and what needs a person."""
        parts = [
            f"{len(self.disabled)} strategies disabled" if self.disabled else "",
            f"{len(self.cancelled)} orders cancelled",
            f"{len(self.closed)} positions closed",
            f"NOT closed: {'; '.join(self.not_closed)}" if self.not_closed else "",
            f"problems: {'; '.join(self.problems)}" if self.problems else "",
            f"left at the broker: {self.broker_positions_left}" if self.broker_positions_left else "",
        ]
        return ", ".join(p for p in parts if p) + "."

    def as_dict(self) -> dict:
        return {
            "disabled": self.disabled,
            "cancelled": self.cancelled,
            "closed": self.closed,
            "not_closed": self.not_closed,
            "problems": self.problems,
            "broker_positions_left": self.broker_positions_left,
        }


def redis_last_price(instrument_key: str) -> Decimal | None:
    """The last traded price of an instrument from its tick stream (None when there is none)."""
    import redis
    from django.conf import settings

    from feeds.groups import tick_stream_key
    from feeds.ticks import unpack_tick

    try:
        rows = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1).xrevrange(
            tick_stream_key(instrument_key), count=1
        )
    except Exception as exc:  # no Redis: no price
        log.warning("no price for %s (%s)", instrument_key, exc.__class__.__name__)
        return None
    if not rows:
        return None
    return Decimal(str(unpack_tick(rows[0][1][b"t"]).ltp))


def default_venues() -> dict[str, Venue]:
    """Paper always; Upstox when a live broker can be built."""
    venues: dict[str, Venue] = {}
    try:
        venues["upstox"] = orders.live_broker()
    except LiveBrokerRefused as exc:
        log.info("kill switch: no live broker (%s)", exc)
    return venues


def _close_id(prefix: str, strategy_id: int, key: str, now: dt.datetime) -> str:
    digest = hashlib.sha1(f"{prefix}|{strategy_id}|{key}|{now.isoformat()}".encode()).hexdigest()
    return prefix + digest[:16]


def flatten(
    *,
    actor: services.ActorLike,
    reason: str,
    venues: Mapping[str, Venue] | None = None,
    paper_price: PriceSource | None = None,
    now: dt.datetime | None = None,
    prefix: str = "K",
) -> FlattenResult:
    """Cancel every working order and close every position (see the module docstring)."""
    now = now or timezone.now()
    venues = dict(default_venues() if venues is None else venues)
    paper_price = paper_price or redis_last_price
    result = FlattenResult()

    for order in Order.objects.filter(state__in=reconcile.WORKING).select_related("strategy"):
        venue = venues.get(order.broker)
        try:
            if venue is None and order.broker == "paper":
                services.order_transition(order, OrderState.CANCELLED, detail={"reason": reason}, actor=actor)
            elif venue is None:
                result.problems.append(
                    f"order {order.client_order_id}: no {order.broker} broker to cancel it at"
                )
                continue
            else:
                order = orders.cancel_order(order, venue, actor=actor, reason=reason)
        except (BrokerError, ResponseLost, orders.OrderConflict, services.IllegalOrderTransition) as exc:
            result.problems.append(f"order {order.client_order_id}: {exc}")
            continue
        result.cancelled.append(f"{order.client_order_id} ({order.state})")

    live = {name: v for name, v in venues.items() if name != "paper"}
    for venue in live.values():
        report = reconcile.reconcile(venue, now=now)
        result.problems.extend(report.problems)

    day = now.astimezone(services.IST).date()
    for broker in ("paper", *live):
        for (strategy_id, key), quantity in orders.positions_from_fills(broker, day).items():
            strategy = StrategyConfig.objects.get(pk=strategy_id)
            side = "SELL" if quantity > 0 else "BUY"
            if broker == "paper":
                price = paper_price(key)
                if price is None:
                    result.not_closed.append(f"{strategy.slug} {key} {quantity}: no price to close on paper")
                    continue
                paper = PaperBroker(slippage=Decimal("0"), square_off_time=None)
                paper.on_quote(key, int(now.timestamp() * 1000), price)
                venue: Venue = orders.PaperVenue(paper)
            else:
                venue = live[broker]
            submitted = orders.submit_order(
                strategy=strategy,
                client_order_id=_close_id(prefix, strategy_id, key, now),
                instrument_key=key,
                side=side,
                quantity=abs(quantity),
                venue=venue,
                actor=actor,
                reason=reason,
                emergency=True,
                now=now,
            )
            states = [o.state for o in submitted.orders]
            if submitted.blocked or any(s != OrderState.FILLED for s in states):
                result.not_closed.append(
                    f"{strategy.slug} {key} {quantity}: {submitted.decision.reason if submitted.blocked else states}"
                )
            else:
                result.closed.append(f"{strategy.slug} {key} {quantity}")

    for name, venue in live.items():
        reconcile.reconcile(venue, now=now)
        try:
            left = {p.instrument_key: p.quantity for p in venue.positions() if p.quantity}
        except (BrokerError, ResponseLost) as exc:
            result.problems.append(f"{name}: cannot read positions after closing ({exc})")
            continue
        result.broker_positions_left.update(left)
    return result


def engage(
    actor: services.ActorLike,
    reason: str,
    *,
    venues: Mapping[str, Venue] | None = None,
    paper_price: PriceSource | None = None,
    now: dt.datetime | None = None,
) -> FlattenResult:
    """THE kill switch: halt, cancel everything, close everything (see the module docstring)."""
    reason = reason or "kill switch"
    trading.set_state(
        trading.ACCOUNT,
        trading.HALTED,
        actor=actor,
        reason=f"kill switch: {reason}",
        source=trading.SOURCE_KILLSWITCH,
    )
    # The workers stop evaluating too: nothing is left deciding while the book is being closed.
    disabled = []
    for config in StrategyConfig.objects.filter(enabled=True):
        services.set_strategy_enabled(config, False, actor=actor)
        disabled.append(config.slug)
    result = flatten(actor=actor, reason=reason, venues=venues, paper_price=paper_price, now=now, prefix="K")
    result.disabled = disabled
    services.record_audit(
        actor=actor,
        action="killswitch.engaged",
        object_type="account",
        object_id=trading.ACCOUNT,
        detail=result.as_dict(),
        reason=reason,
    )
    return result


def square_off(
    actor: services.ActorLike = "square-off",
    *,
    venues: Mapping[str, Venue] | None = None,
    paper_price: PriceSource | None = None,
    now: dt.datetime | None = None,
) -> FlattenResult:
    """Close everything at the square-off time without halting (new entries are already barred
    by the risk engine's entry cut-off and square-off time)."""
    result = flatten(
        actor=actor, reason="square-off time", venues=venues, paper_price=paper_price, now=now, prefix="Q"
    )
    services.record_audit(
        actor=actor,
        action="squareoff.done",
        object_type="account",
        object_id=trading.ACCOUNT,
        detail=result.as_dict(),
        reason="square-off time",
    )
    return result
