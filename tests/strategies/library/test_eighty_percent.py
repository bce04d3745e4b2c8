"""80% rule on constructed sessions (prior VA 100-120), including the amt.md vector."""

from __future__ import annotations

from strategies.library.eighty_percent import EightyPercentRule
from tests.strategies.library.amt_days import DAY2, backtest, day_from_minutes, minute_ts


def test_prior_session_value_area_is_as_constructed():
    from strategies.engine import AuctionEngine, params_for
    from tests.strategies.library.amt_days import value_day

    engine = AuctionEngine(params_for("NSE_INDEX|Nifty 50"))
    for c in value_day():
        engine.on_candle(c.ts_ms, c.open, c.high, c.low, c.close)
    s = engine.state()
    assert (s.val, s.vah, s.poc, s.high, s.low) == (100.0, 120.0, 110.0, 120.0, 100.0)


def test_amt_vector_opens_above_value_two_periods_inside_short_in_b_target_100():
    # open 125; A trades 119-126; B trades 112-121 (its first candle reaches 119)
    rows = {
        "09:15": (125, 126, 124, 125),
        "09:30": (125, 125, 119, 121),
        "09:45": (121, 121, 118, 119),
        "09:50": (119, 119, 112, 113),
        "10:00": (113, 113, 99, 100),
    }
    (trade,) = backtest(EightyPercentRule, day_from_minutes(DAY2, rows, 125)).trades
    assert trade.side == "short" and trade.entry_price == 119.0
    assert trade.entry_ts_ms == minute_ts(DAY2, "09:46")  # the close of B's first candle
    assert (trade.target, trade.stop) == (100.0, 125.0)
    assert trade.exit_price == 100.0 and trade.exit_reason == "target"


def test_opened_below_value_mirror_goes_long():
    rows = {"09:15": (95, 96, 94, 95), "09:30": (95, 101, 95, 96), "09:45": (96, 103, 96, 102)}
    (trade,) = backtest(EightyPercentRule, day_from_minutes(DAY2, rows, 95)).trades
    assert (trade.side, trade.entry_price, trade.target, trade.stop) == ("long", 102.0, 120.0, 95.0)


def test_quiet_when_only_one_period_trades_inside():
    rows = {"09:15": (125, 126, 124, 125), "09:30": (125, 125, 119, 125)}  # A touches value, B does not
    assert backtest(EightyPercentRule, day_from_minutes(DAY2, rows, 125)).trades == []


def test_quiet_when_a_period_between_does_not_trade_inside():
    rows = {"09:30": (125, 125, 119, 125), "10:20": (125, 125, 118, 124)}  # A and C, not B
    assert backtest(EightyPercentRule, day_from_minutes(DAY2, rows, 125)).trades == []


def test_quiet_when_opening_inside_value():
    rows = {"09:15": (110, 126, 109, 125), "09:45": (125, 125, 115, 116), "10:15": (116, 118, 112, 113)}
    assert backtest(EightyPercentRule, day_from_minutes(DAY2, rows, 110)).trades == []


def test_moved_outside_variant_arms_after_a_whole_period_outside():
    # opens in value at 110, B spends all of its period above 120, C and D trade back inside
    rows = {
        "09:15": (110, 112, 109, 111),
        "09:44": (111, 123, 111, 123),
        "09:45": (123, 127, 122, 126),
        "10:15": (126, 126, 119, 120),
        "10:45": (120, 120, 115, 116),
    }
    day = day_from_minutes(DAY2, rows, 110)
    assert backtest(EightyPercentRule, day).trades == []  # the default needs an open outside value
    (trade,) = backtest(EightyPercentRule, day, setup="open_or_move").trades
    assert (trade.side, trade.entry_price, trade.target, trade.stop) == ("short", 116.0, 100.0, 125.0)
    assert trade.entry_ts_ms == minute_ts(DAY2, "10:46")
