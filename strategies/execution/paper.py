"""The paper broker: simulated fills, positions and PnL, with Indian charges, in pure Python.

Fills model what a real order would get: a market order fills at the opposite side of the book
(buy at the ask, sell at the bid) when a bid/ask is known, else at the last price plus (buy) or
minus (sell) a configurable slippage; a limit order fills when marketable, at the better of its
limit and that price, else rests until a later quote makes it marketable or it is cancelled.
Every fill carries its charges (`charges.order_charges`, exact Decimal). Positions and realised
PnL are kept per (strategy, instrument); realised PnL, charges and net PnL per strategy and day.
`square_off_time` flattens every open position with market orders at the first quote at or after
that time. Orders above `freeze_qty` fill as slices of at most that size, each charged as its own
executed order. Money in Decimal throughout.

`Broker` is the small interface the Upstox broker will implement too (place / cancel / positions);
strategies never see a broker, the runner or the live worker does. No Django, Celery or Redis here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Protocol

from feeds.ticks import IST
from strategies.execution.charges import BUY, SELL, Charges, order_charges

MARKET = "market"
LIMIT = "limit"
# Order states (DESIGN.md): new -> submitted -> open -> partially filled -> filled | cancelled | rejected
OPEN = "open"
FILLED = "filled"
CANCELLED = "cancelled"
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str  # made by the bot: idempotency key, also the broker tag
    strategy: str
    instrument_key: str
    side: str  # BUY | SELL
    quantity: int
    ts_ms: int
    order_type: str = MARKET
    limit_price: Decimal | None = None
    tag: str = ""


@dataclass(frozen=True, slots=True)
class Fill:
    client_order_id: str
    strategy: str
    instrument_key: str
    side: str
    quantity: int
    price: Decimal
    ts_ms: int
    charges: Charges


@dataclass(slots=True)
class Order:
    request: OrderRequest
    state: str = OPEN
    fills: list[Fill] = field(default_factory=list)
    reason: str = ""


@dataclass(slots=True)
class Position:
    strategy: str
    instrument_key: str
    quantity: int = 0  # signed: + long, - short
    average_price: Decimal = Decimal(0)
    realised: Decimal = Decimal(0)  # gross, before charges
    charges: Decimal = Decimal(0)  # exact


@dataclass(frozen=True, slots=True)
class Quote:
    ts_ms: int
    ltp: Decimal
    bid: Decimal | None = None
    ask: Decimal | None = None


class Broker(Protocol):
    def place(self, request: OrderRequest) -> Order: ...

    def cancel(self, client_order_id: str) -> Order: ...

    def positions(self) -> list[Position]: ...


def _day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, tz=IST).date()


class PaperBroker:
    def __init__(
        self,
        slippage: Decimal = Decimal("0.05"),
        square_off_time: time | None = time(15, 15),
        charge_schedules=None,
        freeze_qty: int | None = None,
    ) -> None:
        self.slippage = Decimal(slippage)
        self.freeze_qty = freeze_qty
        self.square_off_time = square_off_time
        self._schedules = charge_schedules
        self._quotes: dict[str, Quote] = {}
        self._orders: dict[str, Order] = {}
        self._resting: list[Order] = []
        self._positions: dict[tuple[str, str], Position] = {}
        self.fills: list[Fill] = []
        # (strategy, day) -> [realised gross, charges (exact)]
        self._daily: dict[tuple[str, date], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])

    # market data -----------------------------------------------------------------------------
    def on_quote(
        self,
        instrument_key: str,
        ts_ms: int,
        ltp: Decimal,
        bid: Decimal | None = None,
        ask: Decimal | None = None,
    ) -> list[Fill]:
        """A new price for an instrument; fills resting limits it makes marketable and squares off
        at the square-off time. Returns the fills it caused."""
        self._quotes[instrument_key] = Quote(ts_ms, Decimal(ltp), bid, ask)
        fills = []
        for order in list(self._resting):
            if order.request.instrument_key == instrument_key:
                fills.extend(self._try_fill(order, ts_ms) or ())
        fills.extend(self.square_off_if_due(ts_ms))
        return fills

    def quote(self, instrument_key: str) -> Quote | None:
        return self._quotes.get(instrument_key)

    # Broker interface ------------------------------------------------------------------------
    def place(self, request: OrderRequest) -> Order:
        if request.client_order_id in self._orders:
            return self._orders[request.client_order_id]  # idempotent: the same id is one order
        order = Order(request)
        self._orders[request.client_order_id] = order
        if request.quantity <= 0 or request.side not in (BUY, SELL):
            order.state, order.reason = REJECTED, "quantity must be positive and side buy or sell"
            return order
        if request.order_type == LIMIT and request.limit_price is None:
            order.state, order.reason = REJECTED, "a limit order needs a limit price"
            return order
        if request.instrument_key not in self._quotes:
            order.state, order.reason = REJECTED, "no price known for the instrument"
            return order
        if self._try_fill(order, request.ts_ms) is None:
            if request.order_type == MARKET:
                order.state, order.reason = REJECTED, "no fill price"
            else:
                self._resting.append(order)
        return order

    def cancel(self, client_order_id: str) -> Order:
        order = self._orders[client_order_id]
        if order.state == OPEN:
            order.state = CANCELLED
            self._resting.remove(order)
        return order

    def positions(self) -> list[Position]:
        return list(self._positions.values())

    # fills -----------------------------------------------------------------------------------
    def fill_price(self, instrument_key: str, side: str) -> Decimal:
        """Where a market order would fill now: the opposite side of the book, else LTP ± slippage."""
        q = self._quotes[instrument_key]
        if side == BUY:
            return q.ask if q.ask else q.ltp + self.slippage
        return q.bid if q.bid else max(q.ltp - self.slippage, Decimal("0.05"))

    def _try_fill(self, order: Order, ts_ms: int) -> list[Fill] | None:
        r = order.request
        price = self.fill_price(r.instrument_key, r.side)
        if r.order_type == LIMIT:
            assert r.limit_price is not None
            if (r.side == BUY and price > r.limit_price) or (r.side == SELL and price < r.limit_price):
                return None
        # Above the freeze quantity the exchange takes the order only as slices, each an executed
        # order of its own (and so each paying the per-order brokerage).
        slices, remaining = [], r.quantity
        step = self.freeze_qty if self.freeze_qty and self.freeze_qty > 0 else r.quantity
        while remaining > 0:
            slices.append(min(step, remaining))
            remaining -= slices[-1]
        fills = []
        for qty in slices:
            fill = Fill(
                r.client_order_id,
                r.strategy,
                r.instrument_key,
                r.side,
                qty,
                price,
                ts_ms,
                order_charges(r.side, price, qty, _day(ts_ms), self._schedules),
            )
            order.fills.append(fill)
            self._apply(fill)
            fills.append(fill)
        order.state = FILLED
        if order in self._resting:
            self._resting.remove(order)
        return fills

    def _apply(self, fill: Fill) -> None:
        key = (fill.strategy, fill.instrument_key)
        pos = self._positions.get(key) or Position(fill.strategy, fill.instrument_key)
        self._positions[key] = pos
        signed = fill.quantity if fill.side == BUY else -fill.quantity
        realised = Decimal(0)
        if pos.quantity == 0 or (pos.quantity > 0) == (signed > 0):
            total = abs(pos.quantity) + abs(signed)
            pos.average_price = (pos.average_price * abs(pos.quantity) + fill.price * abs(signed)) / total
            pos.quantity += signed
        else:
            closing = min(abs(signed), abs(pos.quantity))
            direction = 1 if pos.quantity > 0 else -1
            realised = (fill.price - pos.average_price) * closing * direction
            pos.quantity += signed
            if pos.quantity == 0:
                pos.average_price = Decimal(0)
            elif (pos.quantity > 0) != (direction > 0):
                pos.average_price = fill.price  # flipped through zero: the rest opens at this price
        pos.realised += realised
        pos.charges += fill.charges.total
        daily = self._daily[(fill.strategy, _day(fill.ts_ms))]
        daily[0] += realised
        daily[1] += fill.charges.total
        self.fills.append(fill)

    # PnL -------------------------------------------------------------------------------------
    def unrealised(self, strategy: str | None = None) -> Decimal:
        """Open positions marked at the price they would close at now (bid for a long, ask for a short)."""
        total = Decimal(0)
        for pos in self._positions.values():
            if pos.quantity == 0 or (strategy is not None and pos.strategy != strategy):
                continue
            mark = self.fill_price(pos.instrument_key, SELL if pos.quantity > 0 else BUY)
            total += (mark - pos.average_price) * pos.quantity
        return total

    def daily_pnl(self, strategy: str, day: date) -> dict[str, Decimal]:
        gross, charges = self._daily.get((strategy, day), (Decimal(0), Decimal(0)))
        return {"realised": gross, "charges": charges, "net": gross - charges}

    def square_off_if_due(self, ts_ms: int) -> list[Fill]:
        if self.square_off_time is None:
            return []
        now = datetime.fromtimestamp(ts_ms / 1000, tz=IST).time()
        if now < self.square_off_time:
            return []
        return self.square_off(ts_ms)

    def square_off(self, ts_ms: int, strategy: str | None = None) -> list[Fill]:
        """Flatten every open position (of one strategy, or all) with market orders now."""
        fills = []
        for order in list(self._resting):
            if strategy is None or order.request.strategy == strategy:
                self.cancel(order.request.client_order_id)
        for pos in list(self._positions.values()):
            if pos.quantity == 0 or (strategy is not None and pos.strategy != strategy):
                continue
            if pos.instrument_key not in self._quotes:
                continue
            request = OrderRequest(
                client_order_id=f"sq-{pos.strategy}-{pos.instrument_key}-{ts_ms}",
                strategy=pos.strategy,
                instrument_key=pos.instrument_key,
                side=SELL if pos.quantity > 0 else BUY,
                quantity=abs(pos.quantity),
                ts_ms=ts_ms,
                tag="square-off",
            )
            order = self.place(request)
            fills.extend(order.fills)
        return fills
