"""Open-drive follow on constructed sessions."""

from __future__ import annotations

from strategies.library.open_drive import OpenDriveFollow
from tests.strategies.library.amt_days import DAY2, backtest, day_from_minutes, minute_ts, ramp


def test_open_drive_up_is_followed_with_stop_at_the_open():
    rows = ramp("09:15", 30, 110, 140)  # straight up from the open, no adverse move
    result = backtest(OpenDriveFollow, day_from_minutes(DAY2, rows, 110))
    (trade,) = result.trades
    assert result.signals[0].facts["open_type"] == "open_drive_up"
    assert trade.side == "long" and trade.entry_ts_ms == minute_ts(DAY2, "09:45")
    assert trade.entry_price == 140.0 and trade.stop == 110.0
    assert trade.target == 155.0  # open 110 + 1.5 x A range 30, before the IB completes


def test_target_moves_to_the_ib_range_when_the_ib_completes():
    rows = ramp("09:15", 30, 110, 140) | ramp("09:45", 30, 140, 150)  # IB 110-150 -> target 110 + 60
    rows["11:00"] = (150, 171, 150, 170)
    (trade,) = backtest(OpenDriveFollow, day_from_minutes(DAY2, rows, 110)).trades
    assert (trade.exit_price, trade.exit_reason, trade.exit_ts_ms) == (
        170.0,
        "target",
        minute_ts(DAY2, "11:00"),
    )


def test_stop_at_a_extreme_and_drive_down():
    rows = ramp("09:15", 30, 110, 80)
    (trade,) = backtest(OpenDriveFollow, day_from_minutes(DAY2, rows, 110), stop_at="a_extreme").trades
    assert (trade.side, trade.stop, trade.entry_price) == ("short", 110.0, 80.0)


def test_quiet_on_an_open_auction():
    # rotates around the open by less than the drive D (20% of the prior 20-point range = 4 points)
    rows = ramp("09:15", 10, 110, 113) | ramp("09:25", 10, 113, 107) | ramp("09:35", 10, 107, 111)
    assert backtest(OpenDriveFollow, day_from_minutes(DAY2, rows, 110)).trades == []
