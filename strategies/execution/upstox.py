"""The Upstox broker: place / modify / cancel through the SDK's v3 order API, the order book and
positions, in the broker-neutral shapes the order service uses (`BrokerOrder`, `BrokerPosition`).

Every order carries the bot's client order id as its tag (the idempotency key: Upstox has none of
its own, so after any doubt the order is found again by its tag). Order requests are held to the
broker's rate (10 a second, a token bucket per process); a 429 backs off exponentially and retries
(a 429 is refused before the broker acts, so a retry cannot duplicate). Any other refusal raises
`BrokerError` with Upstox's error code and message. A request that got no answer (timeout, dropped
connection) raises `ResponseLost`: the caller must not resend, it must look for the tag.

The SDK `ApiClient` comes from `feeds.upstox.client.api_client` (UPSTOX_API_URL decides whether it
is the real broker, its sandbox or the local fake). Never build one at import time; never put the
access token in a log line or an error. No Django, Celery or Redis imports here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

import upstox_client
import urllib3
from upstox_client.rest import ApiException

log = logging.getLogger(__name__)

API_VERSION = "2.0"
PRODUCT_INTRADAY = "I"
ORDER_RATE_PER_S = 10
RATE_LIMITED = "UDAPI10005"
REAL_HOSTS = frozenset({"api.upstox.com", "api-hft.upstox.com", "api-sandbox.upstox.com"})

# Order states of the bot's state machine (strategies.models.OrderState values).
SUBMITTED = "submitted"
OPEN = "open"
PARTIALLY_FILLED = "partially_filled"
FILLED = "filled"
CANCELLED = "cancelled"
REJECTED = "rejected"
TERMINAL = frozenset({FILLED, CANCELLED, REJECTED})

# Upstox order statuses -> the bot's states (before fills are taken into account).
_PENDING = {
    "put order req received",
    "validation pending",
    "open pending",
    "after market order req received",
    "modify validation pending",
}
_OPEN = {
    "open",
    "trigger pending",
    "modified",
    "modify pending",
    "cancel pending",
    "not cancelled",
    "not modified",
    "modify after market order req received",
    "cancelled after market order",
}


@dataclass(frozen=True, slots=True)
class BrokerFill:
    """One execution as a broker reports it, with its own id (paper); Upstox reports cumulative
    figures instead, from which `strategies.execution.orders` derives fills."""

    fill_id: str
    quantity: int
    price: Decimal
    ts: datetime
    charges: Decimal | None = None


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """The broker's view of one order."""

    broker_order_id: str
    tag: str
    instrument_key: str
    side: str  # BUY | SELL
    quantity: int
    filled_quantity: int
    average_price: Decimal | None
    status: str  # the broker's own word
    state: str  # the bot's state machine value
    message: str = ""
    order_type: str = "MARKET"
    price: Decimal | None = None
    fills: tuple[BrokerFill, ...] | None = None  # None: derive from the cumulative figures


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    instrument_key: str
    quantity: int  # signed
    product: str = PRODUCT_INTRADAY
    average_price: Decimal | None = None


class BrokerError(Exception):
    """The broker answered and refused: HTTP status, Upstox error code and message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"Upstox {code or status}: {message}")
        self.status = status
        self.code = code
        self.message = message


class ResponseLost(Exception):
    """A request got no answer: the broker may or may not have acted on it."""


class LiveBrokerRefused(RuntimeError):
    """An UpstoxBroker pointed at the real broker (or its sandbox) without live trading allowed."""


def reaches_real_upstox(api_client: Any) -> bool:
    """Whether the client's REST or order host is Upstox's own (live or sandbox), not a fake."""
    config = api_client.configuration
    hosts = (getattr(config, "host", ""), getattr(config, "order_host", ""))
    return any(
        urlsplit(h or "").hostname in REAL_HOSTS or (urlsplit(h or "").hostname or "").endswith(".upstox.com")
        for h in hosts
    )


class Venue(Protocol):
    """What the order service needs of a broker (Upstox, or the paper broker's adapter)."""

    name: str
    splits_orders: bool  # True: the service sends freeze-quantity slices as separate orders

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
        ts: datetime,
    ) -> BrokerOrder: ...

    def cancel(self, *, broker_order_id: str, client_order_id: str) -> BrokerOrder | None: ...

    def order_book(self) -> list[BrokerOrder]: ...

    def positions(self) -> list[BrokerPosition]: ...


def map_state(status: str, quantity: int, filled: int) -> str:
    """The bot's state for an Upstox status and fill figures."""
    status = (status or "").strip().lower()
    if status == "complete":
        return FILLED
    if status == "rejected":
        return REJECTED
    if status == "cancelled":
        return CANCELLED
    if filled > 0:
        return FILLED if filled >= quantity else PARTIALLY_FILLED
    if status in _OPEN:
        return OPEN
    return SUBMITTED  # pending or a word we do not know yet: accepted, not yet working


def error_of(exc: ApiException) -> BrokerError:
    """Upstox's error code and message from an ApiException (its body, else the HTTP reason)."""
    code, message = "", str(exc.reason or "")
    try:
        errors = json.loads(exc.body or "{}").get("errors") or []
        if errors:
            first = errors[0]
            code = first.get("errorCode") or first.get("error_code") or ""
            message = first.get("message") or message
    except (ValueError, AttributeError, TypeError):
        pass
    return BrokerError(int(exc.status or 0), code, message)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _money(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    return Decimal(str(value))


def broker_order_from(row: Any) -> BrokerOrder:
    """A BrokerOrder from an order book row (SDK model) or a portfolio stream update (dict)."""
    quantity = int(_get(row, "quantity") or 0)
    filled = int(_get(row, "filled_quantity") or 0)
    status = str(_get(row, "status") or "")
    average = _money(_get(row, "average_price"))
    price = _money(_get(row, "price"))
    return BrokerOrder(
        broker_order_id=str(_get(row, "order_id") or ""),
        tag=str(_get(row, "tag") or ""),
        instrument_key=str(_get(row, "instrument_token") or _get(row, "instrument_key") or ""),
        side=str(_get(row, "transaction_type") or "").upper(),
        quantity=quantity,
        filled_quantity=filled,
        average_price=average if filled else None,
        status=status,
        state=map_state(status, quantity, filled),
        message=str(_get(row, "status_message") or ""),
        order_type=str(_get(row, "order_type") or "MARKET"),
        price=price if price else None,
    )


class RateLimiter:
    """A token bucket shared by the threads of one process: at most `rate` acquisitions a second."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = float(rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(rate)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting for it if needed; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1 - 1e-9:  # float sums of refills may stop just short of 1
                    self._tokens = max(self._tokens - 1, 0.0)
                    return waited
                pause = max((1 - self._tokens) / self.rate, 1e-4)
            self._sleep(pause)
            waited += pause


class UpstoxBroker:
    """Orders through the SDK against whatever UPSTOX_API_URL names (see the module docstring)."""

    name = "upstox"
    splits_orders = True

    def __init__(
        self,
        api_client: upstox_client.ApiClient,
        *,
        rate_per_s: float = ORDER_RATE_PER_S,
        max_retries: int = 6,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        timeout: tuple[int, int] = (3, 10),
        product: str = PRODUCT_INTRADAY,
        sleep: Callable[[float], None] = time.sleep,
        live_allowed: bool = False,
        limiter: Any = None,
    ):
        # The last guard: whoever builds a broker that reaches the real Upstox must say live
        # trading is allowed (strategies.execution.orders.live_broker passes LIVE_TRADING).
        if reaches_real_upstox(api_client) and not live_allowed:
            raise LiveBrokerRefused(
                "refusing to build an Upstox broker for the real broker: live trading is not allowed"
            )
        self.api_client = api_client
        self.orders_api = upstox_client.OrderApiV3(api_client)
        self.book_api = upstox_client.OrderApi(api_client)
        self.portfolio_api = upstox_client.PortfolioApi(api_client)
        # Anything with acquire(): the process's own bucket by default; live workers share one
        # account-wide limit through Redis (strategies.execution.orders.AccountRateLimiter).
        self.limiter = limiter or RateLimiter(rate_per_s, sleep=sleep)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # The SDK ignores a float timeout: (connect, read) as ints.
        self.timeout = (int(timeout[0]), int(timeout[1]))
        self.product = product
        self._sleep = sleep
        self.retries_429 = 0  # how many 429s were backed off (for tests and the dashboard)

    # --- the calls ---------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, order_request: bool = True) -> Any:
        """One SDK call with the rate limit, 429 back-off and error translation."""
        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            if order_request:
                self.limiter.acquire()
            try:
                return fn(*args, _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 0:  # the SDK's own wrapper of a TLS failure: nothing came back
                    raise ResponseLost(f"{what}: {exc.reason}") from None
                error = error_of(exc)
                if exc.status >= 500:
                    # A server error may come after the broker acted: as good as no answer.
                    raise ResponseLost(f"{what}: HTTP {exc.status} {error.code} {error.message}") from None
                if exc.status == 429 or error.code == RATE_LIMITED:
                    if attempt == self.max_retries:
                        raise error from None
                    self.retries_429 += 1
                    log.warning("upstox %s: rate limited (429), retrying in %.2f s", what, delay)
                    self._sleep(delay)
                    delay = min(delay * 2, self.max_backoff_s)
                    continue
                raise error from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise ResponseLost(f"{what}: no answer ({exc.__class__.__name__})") from None
        raise AssertionError("unreachable")

    def place(
        self,
        *,
        client_order_id: str,
        strategy: str = "",
        instrument_key: str,
        side: str,
        quantity: int,
        order_type: str = "MARKET",
        price: Decimal | None = None,
        ts: datetime | None = None,
    ) -> BrokerOrder:
        """Send one order tagged with `client_order_id`; returns it as placed (state submitted).
        Raises BrokerError (refused) or ResponseLost (unknown: look for the tag)."""
        body = upstox_client.PlaceOrderV3Request(
            quantity=int(quantity),
            product=self.product,
            validity="DAY",
            price=float(price) if price is not None else 0.0,
            tag=client_order_id,
            instrument_token=instrument_key,
            order_type=order_type,
            transaction_type=side,
            disclosed_quantity=0,
            trigger_price=0.0,
            is_amo=False,
            slice=False,  # the bot splits above the freeze quantity itself: one tag, one order
        )
        response = self._call("place", self.orders_api.place_order, body)
        order_ids = list(getattr(response.data, "order_ids", None) or [])
        if not order_ids:
            raise ResponseLost("place: the answer named no order id")
        return BrokerOrder(
            broker_order_id=str(order_ids[0]),
            tag=client_order_id,
            instrument_key=instrument_key,
            side=side,
            quantity=int(quantity),
            filled_quantity=0,
            average_price=None,
            status="put order req received",
            state=SUBMITTED,
            order_type=order_type,
            price=price,
        )

    def modify(
        self,
        broker_order_id: str,
        *,
        quantity: int | None = None,
        price: Decimal | None = None,
        order_type: str = "LIMIT",
    ) -> str:
        body = upstox_client.ModifyOrderRequest(
            order_id=broker_order_id,
            quantity=quantity,
            validity="DAY",
            price=float(price) if price is not None else 0.0,
            order_type=order_type,
            trigger_price=0.0,
        )
        response = self._call("modify", self.orders_api.modify_order, body)
        return str(getattr(response.data, "order_id", broker_order_id))

    def cancel(self, *, broker_order_id: str, client_order_id: str = "") -> BrokerOrder | None:
        """Cancel at the broker; returns the order as the book now shows it (None if not found)."""
        self._call("cancel", self.orders_api.cancel_order, broker_order_id)
        return self.order(broker_order_id)

    def order_book(self) -> list[BrokerOrder]:
        response = self._call("order book", self.book_api.get_order_book, API_VERSION, order_request=False)
        return [broker_order_from(row) for row in (response.data or [])]

    def order(self, broker_order_id: str) -> BrokerOrder | None:
        return next((o for o in self.order_book() if o.broker_order_id == broker_order_id), None)

    def orders_by_tag(self, tag: str, book: Iterable[BrokerOrder] | None = None) -> list[BrokerOrder]:
        return [o for o in (self.order_book() if book is None else book) if o.tag == tag]

    def positions(self) -> list[BrokerPosition]:
        response = self._call("positions", self.portfolio_api.get_positions, API_VERSION, order_request=False)
        return [
            BrokerPosition(
                instrument_key=str(_get(row, "instrument_token") or ""),
                quantity=int(_get(row, "quantity") or 0),
                product=str(_get(row, "product") or ""),
                average_price=_money(_get(row, "average_price")),
            )
            for row in (response.data or [])
        ]
