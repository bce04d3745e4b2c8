"""Value-area acceptance on constructed sessions (prior VA 100-120, high 120, low 100)."""

from __future__ import annotations

from strategies.library.va_acceptance import ValueAreaAcceptance
from tests.strategies.library.amt_days import DAY2, backtest, day_from_minutes, minute_ts


def test_opened_above_and_held_through_a_and_b_goes_long_at_b_close():
    rows = {"09:15": (125, 130, 124, 128), "09:50": (128, 135, 127, 134), "10:14": (134, 135, 133, 135)}
    (trade,) = backtest(ValueAreaAcceptance, day_from_minutes(DAY2, rows, 125)).trades
    assert trade.side == "long" and trade.entry_price == 135.0
    assert trade.entry_ts_ms == minute_ts(DAY2, "10:15")
    # no prior reference above 135: target entry + 1 x IBR (IB 124-135 = 11); stop one row inside value
    assert (trade.stop, trade.target) == (115.0, 146.0)


def test_opened_below_and_held_goes_short_toward_nothing_but_ibr():
    rows = {"09:15": (95, 96, 90, 92), "09:50": (92, 93, 85, 86)}
    (trade,) = backtest(ValueAreaAcceptance, day_from_minutes(DAY2, rows, 95)).trades
    assert (trade.side, trade.entry_price, trade.stop, trade.target) == ("short", 86.0, 105.0, 75.0)


def test_quiet_when_a_period_trades_back_into_value():
    rows = {"09:15": (125, 130, 124, 128), "09:50": (128, 128, 119, 126)}  # B dips into value
    assert backtest(ValueAreaAcceptance, day_from_minutes(DAY2, rows, 125)).trades == []


def test_quiet_when_opening_in_value():
    rows = {"09:15": (115, 130, 115, 128), "09:50": (128, 135, 127, 134)}
    assert backtest(ValueAreaAcceptance, day_from_minutes(DAY2, rows, 115)).trades == []
