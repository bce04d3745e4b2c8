"""The fake broker's in-memory order book, positions and funds, in Upstox's response shapes.

MARKET orders fill at once at the simulated price; LIMIT orders rest until modified or cancelled
(a later issue adds matching against the simulated market). Thread-safe: the REST server is threaded.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import datetime

from feeds.ticks import IST

OPEN_STATES = {"open", "trigger pending", "validation pending", "put order req received"}


class OrderError(Exception):
    """A request the real broker would reject: (HTTP status, Upstox error code, message)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class FakeOrderBook:
    def __init__(self, price_of: Callable[[str], float], on_update: Callable[[dict], None] | None = None):
        self._price_of = price_of
        self._on_update = on_update
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.orders: dict[str, dict] = {}
        self.requests: list[dict] = []  # every place/modify/cancel body, for test assertions
        self.available_margin = 1_000_000.0
        # Test hook: the next placed orders are accepted, then rejected by the exchange with these
        # status messages (as Upstox does: an order id, then status "rejected").
        self.reject_next: list[str] = []

    def _now(self) -> str:
        return datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S")

    def place(self, body: dict) -> list[str]:
        for field in (
            "quantity",
            "product",
            "validity",
            "instrument_token",
            "order_type",
            "transaction_type",
        ):
            if body.get(field) in (None, ""):
                raise OrderError(400, "UDAPI1008", f"{field} is required")
        if int(body["quantity"]) <= 0:
            raise OrderError(400, "UDAPI1023", "Quantity should be greater than zero")
        if body["order_type"] not in ("MARKET", "LIMIT", "SL", "SL-M"):
            raise OrderError(400, "UDAPI1021", "Invalid order_type")
        with self._lock:
            self.requests.append({"action": "place", **body})
            order_id = f"{datetime.now(IST):%y%m%d}{next(self._ids):09d}"
            order = {
                "exchange": body["instrument_token"].split("|")[0].split("_")[0],
                "product": body["product"],
                "price": float(body.get("price") or 0.0),
                "quantity": int(body["quantity"]),
                "status": "open",
                "guid": None,
                "tag": body.get("tag"),
                "instrument_token": body["instrument_token"],
                "placed_by": "FAKE01",
                "tradingsymbol": body["instrument_token"],
                "trading_symbol": body["instrument_token"],
                "order_type": body["order_type"],
                "validity": body["validity"],
                "trigger_price": float(body.get("trigger_price") or 0.0),
                "disclosed_quantity": int(body.get("disclosed_quantity") or 0),
                "transaction_type": body["transaction_type"],
                "average_price": 0.0,
                "filled_quantity": 0,
                "pending_quantity": int(body["quantity"]),
                "status_message": None,
                "status_message_raw": None,
                "exchange_order_id": f"1{order_id}",
                "parent_order_id": None,
                "order_id": order_id,
                "variety": "AMO" if body.get("is_amo") else "SIMPLE",
                "order_timestamp": self._now(),
                "exchange_timestamp": self._now(),
                "is_amo": bool(body.get("is_amo")),
                "order_request_id": "1",
                "order_ref_id": f"FAKE-{order_id}",
            }
            if self.reject_next:
                order["status"] = "rejected"
                order["pending_quantity"] = 0
                order["status_message"] = order["status_message_raw"] = self.reject_next.pop(0)
            elif order["order_type"] == "MARKET":
                self._fill(order, self._price_of(order["instrument_token"]))
            self.orders[order_id] = order
        self._notify(order)
        return [order_id]

    def fill(self, order_id: str, quantity: int, price: float) -> dict:
        """Test hook: execute `quantity` more of an open order at `price` (a partial fill when
        less than the pending quantity); the average price and the stream follow."""
        with self._lock:
            order = self.orders[order_id]
            if order["status"] not in OPEN_STATES:
                raise OrderError(400, "UDAPI100040", f"Order is already {order['status']}")
            quantity = min(int(quantity), int(order["quantity"]) - order["filled_quantity"])
            done = order["filled_quantity"]
            order["average_price"] = round(
                (order["average_price"] * done + price * quantity) / (done + quantity), 2
            )
            order["filled_quantity"] = done + quantity
            order["pending_quantity"] = int(order["quantity"]) - order["filled_quantity"]
            if order["pending_quantity"] == 0:
                order["status"] = "complete"
        self._notify(order)
        return dict(order)

    def reject(self, order_id: str, message: str) -> dict:
        """Test hook: the exchange rejects an order the broker had accepted (open, nothing or part
        filled), with this status message; the stream follows."""
        with self._lock:
            order = self.orders[order_id]
            if order["status"] not in OPEN_STATES:
                raise OrderError(400, "UDAPI100040", f"Order is already {order['status']}")
            order["status"] = "rejected"
            order["pending_quantity"] = 0
            order["status_message"] = order["status_message_raw"] = message
        self._notify(order)
        return dict(order)

    def _fill(self, order: dict, price: float) -> None:
        order["status"] = "complete"
        order["average_price"] = round(price, 2)
        order["filled_quantity"] = order["quantity"]
        order["pending_quantity"] = 0

    def modify(self, body: dict) -> str:
        with self._lock:
            self.requests.append({"action": "modify", **body})
            order = self.orders.get(str(body.get("order_id")))
            if order is None:
                raise OrderError(400, "UDAPI100010", "Order not found")
            if order["status"] not in OPEN_STATES:
                raise OrderError(400, "UDAPI100040", f"Order is already {order['status']}")
            for field in (
                "quantity",
                "price",
                "trigger_price",
                "disclosed_quantity",
                "order_type",
                "validity",
            ):
                if body.get(field) is not None:
                    order[field] = body[field]
            order["pending_quantity"] = int(order["quantity"]) - order["filled_quantity"]
            if order["order_type"] == "MARKET":
                self._fill(order, self._price_of(order["instrument_token"]))
        self._notify(order)
        return order["order_id"]

    def cancel(self, order_id: str) -> str:
        with self._lock:
            self.requests.append({"action": "cancel", "order_id": order_id})
            order = self.orders.get(order_id)
            if order is None:
                raise OrderError(400, "UDAPI100010", "Order not found")
            if order["status"] not in OPEN_STATES:
                raise OrderError(400, "UDAPI100040", f"Order is already {order['status']}")
            order["status"] = "cancelled"
            order["pending_quantity"] = 0
        self._notify(order)
        return order_id

    def _notify(self, order: dict) -> None:
        if self._on_update is not None:
            self._on_update(dict(order))

    def order_book(self) -> list[dict]:
        with self._lock:
            return [dict(o) for o in self.orders.values()]

    def positions(self) -> list[dict]:
        with self._lock:
            filled = [o for o in self.orders.values() if o["filled_quantity"]]
        by_key: dict[tuple[str, str], dict] = {}
        for o in filled:
            key = (o["instrument_token"], o["product"])
            p = by_key.setdefault(
                key,
                {"buy_qty": 0, "sell_qty": 0, "buy_value": 0.0, "sell_value": 0.0, "order": o},
            )
            value = o["filled_quantity"] * o["average_price"]
            if o["transaction_type"] == "BUY":
                p["buy_qty"] += o["filled_quantity"]
                p["buy_value"] += value
            else:
                p["sell_qty"] += o["filled_quantity"]
                p["sell_value"] += value
        rows = []
        for (token, product), p in by_key.items():
            last = self._price_of(token)
            quantity = p["buy_qty"] - p["sell_qty"]
            buy_price = p["buy_value"] / p["buy_qty"] if p["buy_qty"] else 0.0
            sell_price = p["sell_value"] / p["sell_qty"] if p["sell_qty"] else 0.0
            realised = min(p["buy_qty"], p["sell_qty"]) * (sell_price - buy_price) if quantity == 0 else 0.0
            unrealised = quantity * (last - (buy_price if quantity > 0 else sell_price)) if quantity else 0.0
            rows.append(
                {
                    "exchange": p["order"]["exchange"],
                    "multiplier": 1.0,
                    "value": round(p["sell_value"] - p["buy_value"], 2),
                    "pnl": round(realised + unrealised, 2),
                    "product": product,
                    "instrument_token": token,
                    "average_price": round(buy_price if quantity >= 0 else sell_price, 2),
                    "buy_value": round(p["buy_value"], 2),
                    "overnight_quantity": 0,
                    "day_buy_value": round(p["buy_value"], 2),
                    "day_buy_price": round(buy_price, 2),
                    "overnight_buy_amount": 0.0,
                    "overnight_buy_quantity": 0,
                    "day_buy_quantity": p["buy_qty"],
                    "day_sell_value": round(p["sell_value"], 2),
                    "day_sell_price": round(sell_price, 2),
                    "overnight_sell_amount": 0.0,
                    "overnight_sell_quantity": 0,
                    "day_sell_quantity": p["sell_qty"],
                    "quantity": quantity,
                    "last_price": round(last, 2),
                    "unrealised": round(unrealised, 2),
                    "realised": round(realised, 2),
                    "sell_value": round(p["sell_value"], 2),
                    "tradingsymbol": token,
                    "trading_symbol": token,
                    "close_price": round(last, 2),
                    "buy_price": round(buy_price, 2),
                    "sell_price": round(sell_price, 2),
                }
            )
        return rows

    def funds(self) -> dict:
        used = sum(
            o["filled_quantity"] * o["average_price"]
            for o in self.order_book()
            if o["transaction_type"] == "BUY"
        )
        segment = {
            "used_margin": round(used, 2),
            "payin_amount": 0.0,
            "span_margin": 0.0,
            "adhoc_margin": 0.0,
            "notional_cash": 0.0,
            "available_margin": round(self.available_margin - used, 2),
            "exposure_margin": 0.0,
        }
        return {"equity": segment, "commodity": dict(segment, used_margin=0.0, available_margin=0.0)}
