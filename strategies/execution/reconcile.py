"""Reconciliation: make the bot's orders and positions agree with the broker's, or stop trading.

`reconcile(venue)` runs at start, after every reconnect of the portfolio stream, and every N
seconds (Celery beat). It reads the broker's order book and positions, then for every order of
this broker that is still working in the bot's eyes (or that the book mentions):
- found by broker order id, else by its tag (the bot's client order id): the stored order adopts
  the broker's fills and state (`orders.apply_broker_order`); each correction is audited
  (`reconcile.corrected`, with before and after);
- not found, NEW or UNKNOWN and older than the grace period: it never reached the broker, so it
  becomes REJECTED ("not at the broker") — it is never resent;
- not found while the bot thinks it is working, or two broker orders share a tag, or the broker's
  state cannot be reached from the bot's: a problem.
Then the net position per instrument from the bot's fills of this broker today must equal the
broker's intraday positions. Any problem, or a broker that cannot be read, HALTs the account
(`strategies.trading`, source "reconcile"); a later clean reconciliation lifts that HALT (and only
that one). Nothing here resends an order.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.utils import timezone

from strategies import services, trading
from strategies.execution.orders import OrderConflict, apply_broker_order, positions_from_fills
from strategies.execution.upstox import PRODUCT_INTRADAY, BrokerError, BrokerOrder, ResponseLost, Venue
from strategies.models import Order, OrderState

log = logging.getLogger(__name__)

ACTOR = "reconcile"
# A NEW/UNKNOWN order younger than this may still be on its way: leave it to the next round.
GRACE = dt.timedelta(seconds=30)
WORKING = (
    OrderState.NEW,
    OrderState.SUBMITTED,
    OrderState.OPEN,
    OrderState.PARTIALLY_FILLED,
    OrderState.UNKNOWN,
)


@dataclass(slots=True)
class ReconcileReport:
    ok: bool = True
    checked: int = 0
    corrections: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    halted: bool = False
    resumed: bool = False

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "corrections": self.corrections,
            "problems": self.problems,
            "halted": self.halted,
            "resumed": self.resumed,
        }


def _correct(report: ReconcileReport, order: Order, changes: list[str], before: dict, reason: str) -> None:
    order.refresh_from_db()
    after = {
        "state": order.state,
        "filled_quantity": order.filled_quantity,
        "broker_order_id": order.broker_order_id,
    }
    report.corrections.append(
        {"client_order_id": order.client_order_id, "changes": changes, "before": before, "after": after}
    )
    services.record_audit(
        actor=ACTOR,
        action="reconcile.corrected",
        obj=order,
        detail={"changes": changes, "before": before, "after": after},
        reason=reason,
    )


def reconcile(
    venue: Venue, *, now: dt.datetime | None = None, grace: dt.timedelta = GRACE
) -> ReconcileReport:
    """Compare and adopt (see the module docstring). Never raises for a broker fault: it halts."""
    now = now or timezone.now()
    report = ReconcileReport()
    try:
        book = venue.order_book()
        broker_positions = venue.positions()
    except (BrokerError, ResponseLost) as exc:
        report.problems.append(f"cannot read the broker: {exc}")
        return _finish(report, venue)

    by_id = {o.broker_order_id: o for o in book if o.broker_order_id}
    by_tag: dict[str, list[BrokerOrder]] = {}
    for o in book:
        if o.tag:
            by_tag.setdefault(o.tag, []).append(o)

    candidates = Order.objects.filter(broker=venue.name).filter(state__in=WORKING) | Order.objects.filter(
        broker=venue.name, client_order_id__in=list(by_tag)
    )
    for order in candidates.select_related("strategy").distinct().order_by("created_at", "id"):
        report.checked += 1
        before = {
            "state": order.state,
            "filled_quantity": order.filled_quantity,
            "broker_order_id": order.broker_order_id,
        }
        tagged = by_tag.get(order.client_order_id, [])
        if len(tagged) > 1:
            report.problems.append(
                f"order {order.client_order_id}: {len(tagged)} broker orders carry its tag "
                f"({', '.join(o.broker_order_id for o in tagged)})"
            )
            continue
        found = by_id.get(order.broker_order_id) if order.broker_order_id else None
        found = found or (tagged[0] if tagged else None)
        if found is None:
            if order.state in (OrderState.NEW, OrderState.UNKNOWN):
                if now - order.created_at >= grace:
                    services.order_transition(
                        order,
                        OrderState.REJECTED,
                        detail={"reason": "not at the broker: it never reached it"},
                        actor=ACTOR,
                    )
                    _correct(
                        report,
                        order,
                        [f"{before['state']} -> rejected"],
                        before,
                        "no broker order has its tag",
                    )
                continue
            if order.created_at.astimezone(services.IST).date() < now.astimezone(services.IST).date():
                # The broker's book holds only today: yesterday's working order expired at the close.
                services.order_transition(
                    order, OrderState.CANCELLED, detail={"reason": "expired at the close"}, actor=ACTOR
                )
                _correct(
                    report,
                    order,
                    [f"{before['state']} -> cancelled"],
                    before,
                    "a day order from an earlier day",
                )
                continue
            report.problems.append(
                f"order {order.client_order_id} is {order.state} in the bot but not in the broker's book"
            )
            continue
        try:
            changes = apply_broker_order(order, found, actor=ACTOR, now=now)
        except (OrderConflict, services.IllegalOrderTransition, services.FillRejected) as exc:
            report.problems.append(str(exc))
            continue
        if changes:
            _correct(
                report,
                order,
                changes,
                before,
                f"adopted the broker's view (found by {'id' if order.broker_order_id == found.broker_order_id and before['broker_order_id'] else 'tag'})",
            )

    # Positions: the bot's fills of this broker today against the broker's intraday positions.
    day = now.astimezone(services.IST).date()
    ours: dict[str, int] = {}
    for (_, key), qty in positions_from_fills(venue.name, day).items():
        ours[key] = ours.get(key, 0) + qty
    theirs: dict[str, int] = {}
    for p in broker_positions:
        if p.product in (PRODUCT_INTRADAY, "") and p.quantity:
            theirs[p.instrument_key] = theirs.get(p.instrument_key, 0) + p.quantity
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key, 0) != theirs.get(key, 0):
            report.problems.append(
                f"position {key}: the bot holds {ours.get(key, 0)}, the broker {theirs.get(key, 0)}"
            )
    return _finish(report, venue)


def _finish(report: ReconcileReport, venue: Venue) -> ReconcileReport:
    report.ok = not report.problems
    if report.problems:
        reason = "cannot reconcile with the broker: " + "; ".join(report.problems)[:900]
        services.record_audit(
            actor=ACTOR,
            action="reconcile.failed",
            object_type="broker",
            object_id=venue.name,
            detail=report.as_dict(),
            reason=reason,
        )
        state = trading.escalate(
            trading.ACCOUNT, trading.HALTED, actor=ACTOR, reason=reason, source=trading.SOURCE_RECONCILE
        )
        report.halted = state.state == trading.HALTED
        log.error("reconcile %s: %s", venue.name, reason)
    else:
        report.resumed = trading.lift_reconcile_halt(actor=ACTOR)
        if report.corrections or report.resumed:
            services.record_audit(
                actor=ACTOR,
                action="reconcile.ok",
                object_type="broker",
                object_id=venue.name,
                detail=report.as_dict(),
                reason=f"{len(report.corrections)} corrections",
            )
    return report


def reconcile_live() -> ReconcileReport | None:
    """Reconcile the Upstox account when live trading is possible (Celery beat, and at start);
    None when no live broker can be built (paper only: nothing to reconcile)."""
    from strategies.execution.orders import live_broker
    from strategies.execution.upstox import LiveBrokerRefused

    try:
        broker = live_broker()
    except LiveBrokerRefused:
        return None
    try:
        return reconcile(broker)
    finally:
        from feeds.upstox.client import close_api_client

        close_api_client(broker.api_client)


# --- The portfolio stream's handlers ---------------------------------------------------------------


def stream_handlers(venue: Venue):
    """(on_update, on_connect) for `portfolio_stream.PortfolioStream`: an update is applied to the
    order it names (by broker order id, else tag; an order the bot did not make is left to the
    reconciliation's position check); every (re)connect reconciles."""
    from strategies.execution.orders import find_order

    def update(report: BrokerOrder) -> None:
        order = find_order(report, broker=venue.name)
        if order is None:
            return
        try:
            apply_broker_order(order, report, actor="portfolio-stream")
        except (OrderConflict, services.IllegalOrderTransition, services.FillRejected) as exc:
            log.error("portfolio stream: %s; reconciling", exc)
            reconcile(venue)

    def on_update(report: BrokerOrder) -> None:
        _with_retries(lambda: update(report))

    def on_connect() -> None:
        _with_retries(lambda: reconcile(venue))

    return on_update, on_connect


def _with_retries(fn, attempts: int = 5, pause_s: float = 0.2) -> None:
    """Run a handler, retrying a database that is momentarily locked (SQLite) or gone away.
    Every handler is idempotent, so a retry after a partial failure is harmless."""
    import time

    from django.db import OperationalError, close_old_connections

    for attempt in range(attempts):
        close_old_connections()
        try:
            fn()
            return
        except OperationalError as exc:
            if attempt == attempts - 1:
                raise
            log.warning("portfolio stream handler: database busy (%s); retrying", exc)
            time.sleep(pause_s * (attempt + 1))


def run_portfolio_stream(stop_event=None) -> None:
    """Run the live account's portfolio stream until `stop_event` is set (a process of its own,
    started beside the strategy workers when live trading is possible). Returns at once when no
    live broker can be built."""
    import threading

    from feeds.upstox import client
    from feeds.upstox.tokens import order_token
    from strategies.execution.orders import live_broker
    from strategies.execution.portfolio_stream import PortfolioStream
    from strategies.execution.upstox import LiveBrokerRefused

    try:
        broker = live_broker()
    except LiveBrokerRefused as exc:
        log.info("portfolio stream not started: %s", exc)
        return
    on_update, on_connect = stream_handlers(broker)
    stream = PortfolioStream(
        lambda: client.api_client(order_token() or ""), on_update=on_update, on_connect=on_connect
    ).start()
    stop_event = stop_event or threading.Event()
    try:
        stop_event.wait()
    finally:
        stream.stop()
        client.close_api_client(broker.api_client)
