"""PaperBroker: fills at the opposite side or LTP ± slippage, limits, positions, PnL, charges, square-off."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

from feeds.ticks import IST
from strategies.execution.charges import BUY, SELL, round_trip_charges, to_paisa
from strategies.execution.paper import CANCELLED, FILLED, LIMIT, OPEN, REJECTED, OrderRequest, PaperBroker

D = Decimal
DAY = date(2026, 4, 7)
KEY = "NSE_FO|1"


def at(hhmm: str, day: date = DAY) -> int:
    return int(datetime.combine(day, time.fromisoformat(hhmm), IST).timestamp() * 1000)


def order(cid, side, qty=65, ts="10:00", **kw):
    return OrderRequest(cid, "ib_breakout", KEY, side, qty, at(ts), **kw)


def test_market_orders_fill_at_the_opposite_side_of_the_book():
    b = PaperBroker()
    b.on_quote(KEY, at("10:00"), D("100.00"), bid=D("99.90"), ask=D("100.10"))
    assert b.place(order("a", BUY)).fills[0].price == D("100.10")
    assert b.place(order("b", SELL)).fills[0].price == D("99.90")


def test_without_a_book_fill_at_ltp_plus_minus_slippage():
    b = PaperBroker(slippage=D("0.25"))
    b.on_quote(KEY, at("10:00"), D("100"))
    assert b.place(order("a", BUY)).fills[0].price == D("100.25")
    assert b.place(order("b", SELL)).fills[0].price == D("99.75")


def test_round_trip_pnl_and_charges_per_strategy_and_day():
    b = PaperBroker(slippage=D("0"))
    b.on_quote(KEY, at("10:00"), D("100"))
    b.place(order("a", BUY))
    assert b.unrealised() == 0
    b.on_quote(KEY, at("11:00"), D("110"))
    assert b.unrealised("ib_breakout") == D("650")
    b.place(order("b", SELL, ts="11:00"))
    day = b.daily_pnl("ib_breakout", DAY)
    expected = round_trip_charges(D("100"), D("110"), 65, DAY)
    assert day["realised"] == D("650") and day["charges"] == expected.total
    assert to_paisa(day["charges"]) == D("63.86")  # the worked example of india_fo.md
    assert to_paisa(day["net"]) == D("586.14")
    (pos,) = b.positions()
    assert pos.quantity == 0 and pos.realised == D("650")
    assert b.daily_pnl("other", DAY)["net"] == 0


def test_average_price_partial_close_and_flip():
    b = PaperBroker(slippage=D("0"))
    b.on_quote(KEY, at("10:00"), D("100"))
    b.place(order("a", BUY, qty=10))
    b.on_quote(KEY, at("10:01"), D("110"))
    b.place(order("b", BUY, qty=10))
    assert b.positions()[0].average_price == D("105")
    b.on_quote(KEY, at("10:02"), D("120"))
    b.place(order("c", SELL, qty=25))  # closes 20 (+300), opens 5 short at 120
    pos = b.positions()[0]
    assert (pos.quantity, pos.average_price, pos.realised) == (-5, D("120"), D("300"))


def test_limit_orders_rest_until_marketable_and_can_be_cancelled():
    b = PaperBroker(slippage=D("0"))
    b.on_quote(KEY, at("10:00"), D("100"), bid=D("99.95"), ask=D("100.05"))
    resting = b.place(order("a", BUY, order_type=LIMIT, limit_price=D("99.00")))
    assert resting.state == OPEN and not resting.fills
    fills = b.on_quote(KEY, at("10:05"), D("98.9"), bid=D("98.85"), ask=D("98.95"))
    assert resting.state == FILLED and fills[0].price == D("98.95")
    other = b.place(order("c", BUY, order_type=LIMIT, limit_price=D("50")))
    assert b.cancel("c").state == CANCELLED and other.state == CANCELLED


def test_rejections_and_idempotent_client_order_ids():
    b = PaperBroker()
    assert b.place(order("x", BUY)).state == REJECTED  # no price known yet
    b.on_quote(KEY, at("10:00"), D("100"))
    first = b.place(order("y", BUY))
    assert b.place(order("y", BUY)) is first and len(b.fills) == 1
    assert b.place(order("z", BUY, qty=0)).state == REJECTED
    assert b.place(order("w", BUY, order_type=LIMIT)).state == REJECTED


def test_square_off_at_the_configured_time():
    b = PaperBroker(slippage=D("0"), square_off_time=time(15, 15))
    b.on_quote(KEY, at("10:00"), D("100"))
    b.place(order("a", BUY))
    assert b.on_quote(KEY, at("15:14"), D("90")) == []
    fills = b.on_quote(KEY, at("15:15"), D("95"))
    assert [(f.side, f.quantity, f.price) for f in fills] == [(SELL, 65, D("95"))]
    assert b.positions()[0].quantity == 0
    assert b.daily_pnl("ib_breakout", DAY)["realised"] == D("-325")


def test_orders_above_the_freeze_quantity_fill_as_slices_each_charged():
    b = PaperBroker(slippage=D("0"), freeze_qty=1800)
    b.on_quote(KEY, at("10:00"), D("100"))
    o = b.place(order("big", BUY, qty=4000))
    assert [f.quantity for f in o.fills] == [1800, 1800, 400] and o.state == FILLED
    assert sum(f.charges.brokerage for f in o.fills) == D("60")  # three executed orders
    assert b.positions()[0].quantity == 4000
