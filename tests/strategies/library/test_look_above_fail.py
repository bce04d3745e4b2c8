"""Look above / below and fail on constructed sessions (prior high 120 = VAH, low 100 = VAL, POC 110)."""

from __future__ import annotations

from strategies.library.look_above_fail import LookAboveAndFail
from tests.strategies.library.amt_days import DAY2, backtest, day_from_minutes, minute_ts


def test_probe_above_prior_high_that_fails_within_the_period_is_faded():
    rows = {"09:15": (115, 116, 114, 115), "09:20": (115, 124, 115, 123), "09:25": (123, 123, 117, 118)}
    (trade,) = backtest(LookAboveAndFail, day_from_minutes(DAY2, rows, 115)).trades
    assert trade.side == "short" and trade.entry_price == 118.0
    assert trade.entry_ts_ms == minute_ts(DAY2, "09:26")
    assert trade.stop == 129.0  # one row above the failed high 124
    assert trade.target == 110.0  # the prior POC (today's developing POC 115 is not a row below)
    assert trade.facts["entry"]["reference"] in ("prior high", "prior VAH")


def test_a_full_period_of_acceptance_above_is_not_faded():
    rows = {"09:15": (121, 126, 121, 125), "09:45": (125, 125, 115, 116)}  # all of A above 120, then back
    result = backtest(LookAboveAndFail, day_from_minutes(DAY2, rows, 121), sides="above")
    assert result.trades == []


def test_look_below_prior_low_and_fail_goes_long():
    rows = {"09:15": (105, 106, 104, 105), "09:20": (105, 105, 96, 97), "09:25": (97, 103, 97, 102)}
    (trade,) = backtest(LookAboveAndFail, day_from_minutes(DAY2, rows, 105), sides="below").trades
    assert (trade.side, trade.entry_price, trade.stop, trade.target) == ("long", 102.0, 91.0, 110.0)


def test_quiet_without_a_probe():
    rows = {"09:15": (110, 118, 102, 111)}
    assert backtest(LookAboveAndFail, day_from_minutes(DAY2, rows, 110)).trades == []
