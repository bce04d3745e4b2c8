"""The pure risk engine: each limit blocks what it must and lets closing orders through."""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeds.ticks import IST
from strategies.execution import risk
from strategies.execution.risk import (
    ACCOUNT,
    HALTED,
    REDUCING,
    STRATEGY,
    Exposure,
    OrderIntent,
    RiskLimits,
    check,
    is_closing,
    split_quantity,
)

MORNING = datetime(2026, 11, 20, 10, 30, tzinfo=IST)
KEY = "NSE_FO|43919"
LIMITS = RiskLimits(
    strategy_max_daily_loss=Decimal("5000"),
    account_max_daily_loss=Decimal("20000"),
    max_open_positions=2,
    strategy_max_open_lots=4,
    account_max_open_lots=6,
    strategy_max_orders_per_minute=3,
    account_max_orders_per_minute=5,
    entry_cutoff=time(15, 0),
    square_off=time(15, 15),
)


def buy(qty: int = 65, **kw) -> OrderIntent:
    return OrderIntent("s1", KEY, "BUY", qty, lot_size=65, **kw)


def sell(qty: int = 65, **kw) -> OrderIntent:
    return OrderIntent("s1", KEY, "SELL", qty, lot_size=65, **kw)


def book(**kw) -> Exposure:
    return Exposure(now=kw.pop("now", MORNING), **kw)


def test_an_ordinary_entry_passes_within_limits():
    decision = check(buy(), book(), LIMITS)
    assert decision.allowed and not decision.closing and decision.slices == (65,)


@pytest.mark.parametrize(
    ("exposure", "rule"),
    [
        (book(now=MORNING.replace(hour=15, minute=0)), "entry_cutoff"),
        (book(now=MORNING.replace(hour=15, minute=20)), "square_off"),
        (book(strategy_orders_last_minute=3), "orders_per_minute"),
        (book(account_orders_last_minute=5), "orders_per_minute"),
        (book(open_positions=2), "open_positions"),
        (book(strategy_open_lots=4), "open_lots"),
        (book(account_open_lots=6), "open_lots"),
        (book(strategy_pnl=Decimal("-5000")), "reducing"),
        (book(account_pnl=Decimal("-20000.01")), "reducing"),
        (book(strategy_state=REDUCING), "reducing"),
        (book(account_state=HALTED), "halted"),
    ],
)
def test_each_limit_blocks_an_entry_and_lets_the_closing_order_through(exposure, rule):
    blocked = check(buy(), exposure, LIMITS)
    assert not blocked.allowed and blocked.rule == rule, blocked
    # The same book holding a long position: selling it (all or part) closes, and passes —
    # except when halted, where only the kill switch's emergency orders pass.
    holding = Exposure(**{**{f: getattr(exposure, f) for f in exposure.__slots__}, "strategy_position": 130})
    closing = check(sell(65), holding, LIMITS)
    if rule == "halted":
        assert not closing.allowed and closing.rule == "halted"
        assert check(sell(130, emergency=True), holding, LIMITS).allowed
        assert not check(buy(65, emergency=True), holding, LIMITS).allowed  # emergency never opens
    else:
        assert closing.allowed and closing.closing, closing


def test_a_daily_loss_reached_escalates_that_scope_to_reducing():
    decision = check(buy(), book(strategy_pnl=Decimal("-6000")), LIMITS)
    assert [(e.scope, e.state) for e in decision.escalations] == [(STRATEGY, REDUCING)]
    decision = check(buy(), book(account_pnl=Decimal("-25000")), LIMITS)
    assert [(e.scope, e.state) for e in decision.escalations] == [(ACCOUNT, REDUCING)]
    # Already reducing (or worse): no escalation again.
    assert (
        check(buy(), book(strategy_pnl=Decimal("-6000"), strategy_state=REDUCING), LIMITS).escalations == ()
    )
    # Just inside the limit: no escalation, the order passes.
    assert check(buy(), book(strategy_pnl=Decimal("-4999.99")), LIMITS).allowed


def test_an_order_larger_than_the_position_is_not_closing():
    assert is_closing("SELL", 65, 130) and is_closing("SELL", 130, 130)
    assert not is_closing("SELL", 195, 130)  # would flip short
    assert not is_closing("BUY", 65, 130) and not is_closing("SELL", 65, 0)
    assert is_closing("BUY", 30, -30)
    flip = check(sell(195), book(strategy_position=130, strategy_state=REDUCING), LIMITS)
    assert not flip.allowed and flip.rule == "reducing"


def test_freeze_quantity_splits_into_whole_lots():
    assert split_quantity(3900, 1800, 65) == (1755, 1755, 390)
    assert split_quantity(1800, 1800, 65) == (1800,)
    assert split_quantity(600, None, 30) == (600,)
    assert split_quantity(1300, 600, 30) == (600, 600, 100)
    decision = check(
        buy(3900, freeze_qty=1800),
        book(),
        RiskLimits(strategy_max_open_lots=None, account_max_open_lots=None),
    )
    assert decision.allowed and sum(decision.slices) == 3900 and max(decision.slices) <= 1800


@given(
    qty=st.integers(1, 100_000),
    freeze=st.integers(1, 5000),
    lot=st.integers(1, 100),
)
def test_slices_always_add_up_and_respect_the_freeze_quantity(qty, freeze, lot):
    slices = split_quantity(qty, freeze, lot)
    assert sum(slices) == qty and all(0 < s <= max(freeze, 1) for s in slices)
    if lot <= freeze:
        assert all(s % lot == 0 for s in slices[:-1])


def test_limits_from_settings_strings_and_unknown_names():
    limits = RiskLimits.from_mapping(
        {"entry_cutoff": "14:45", "account_max_daily_loss": "25000", "max_open_positions": "3"}
    )
    assert limits.entry_cutoff == time(14, 45) and limits.account_max_daily_loss == Decimal("25000")
    assert limits.max_open_positions == 3
    assert RiskLimits.from_mapping({"square_off": None}).square_off is None
    with pytest.raises(ValueError):
        RiskLimits.from_mapping({"max_lots": 3})


def test_invalid_orders_are_refused():
    assert check(OrderIntent("s1", KEY, "HOLD", 65), book(), LIMITS).rule == "invalid"
    assert check(OrderIntent("s1", KEY, "BUY", 0), book(), LIMITS).rule == "invalid"


def test_square_off_due():
    assert risk.square_off_due(MORNING.replace(hour=15, minute=15), LIMITS)
    assert not risk.square_off_due(MORNING, LIMITS)


def test_a_reduce_only_exit_passes_only_when_it_closes():
    assert check(sell(65, reduce_only=True), book(strategy_position=65), LIMITS).allowed
    refused = check(sell(65, reduce_only=True), book(), LIMITS)
    assert not refused.allowed and refused.rule == "reduce_only"
    assert check(sell(130, reduce_only=True), book(strategy_position=65), LIMITS).rule == "reduce_only"
