"""Contract facts from configs/contracts.json and configs/holidays.json (india_fo.md)."""

from datetime import date

import pytest

from feeds import contracts as c


def test_lot_sizes_follow_expiry_date():
    assert c.lot_size("NIFTY", date(2025, 7, 31)) == 75
    assert c.lot_size("NIFTY", date(2025, 12, 30)) == 75
    assert c.lot_size("NIFTY", date(2026, 1, 27)) == 65
    assert c.lot_size("NSE_INDEX|Nifty Bank", date(2025, 12, 30)) == 35
    assert c.lot_size("Nifty Bank", date(2026, 1, 27)) == 30


def test_strike_steps_and_freeze():
    assert c.strike_step("NSE_INDEX|Nifty 50") == 50
    assert c.strike_step("BANKNIFTY") == 100
    assert c.freeze_qty("NIFTY", date(2025, 12, 15)) == 1800
    assert c.freeze_qty("BANKNIFTY", date(2025, 12, 15)) == 600


def test_unknown_underlying_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown underlying"):
        c.lot_size("FINNIFTY", date(2025, 1, 1))


def test_trading_days():
    assert c.is_trading_day(date(2025, 12, 24))
    assert not c.is_trading_day(date(2025, 12, 25))  # Christmas
    assert not c.is_trading_day(date(2025, 12, 27))  # Saturday
    assert c.is_trading_day(date(2025, 2, 1))  # Budget Saturday, a full session
    assert c.previous_trading_day(date(2025, 12, 26)) == date(2025, 12, 24)


def test_nifty_weekly_moves_from_thursday_to_tuesday_in_september_2025():
    weekly = c.expiries("NIFTY", date(2025, 8, 20), "weekly")
    assert weekly == [date(2025, 8, 21), date(2025, 9, 2), date(2025, 9, 9), date(2025, 9, 16)]
    assert c.expiries("NIFTY", date(2025, 8, 20), "monthly") == [
        date(2025, 8, 28),  # last Thursday (before the switch)
        date(2025, 9, 30),  # last Tuesday
        date(2025, 10, 28),
    ]
    assert c.nearest_expiry("NIFTY", date(2025, 8, 22)) == date(2025, 8, 28)
    # An expiry day still counts as the nearest expiry.
    assert c.nearest_expiry("NIFTY", date(2025, 9, 2)) == date(2025, 9, 2)


def test_bank_nifty_is_monthly_only_and_falls_back():
    assert c.expiries("BANKNIFTY", date(2025, 12, 1), "weekly") == []
    assert c.nearest_expiry("BANKNIFTY", date(2025, 12, 1), weekly=True) == date(2025, 12, 30)
    assert c.nearest_expiry("BANKNIFTY", date(2025, 12, 1), weekly=False) == date(2025, 12, 30)


def test_expiry_on_a_holiday_moves_to_the_previous_trading_day():
    # Nifty weekly Thursday 11 Apr 2024 was Id-ul-Fitr -> Wednesday 10 Apr.
    assert date(2024, 4, 10) in c.expiries("NIFTY", date(2024, 4, 5), "weekly")
    # Bank Nifty monthly, last Wednesday 25 Dec 2024 (Christmas) -> 24 Dec.
    assert c.nearest_expiry("BANKNIFTY", date(2024, 12, 20), weekly=False) == date(2024, 12, 24)


def test_every_expiry_is_a_trading_day_and_sorted():
    d = date(2024, 1, 1)
    while d < date(2026, 12, 31):
        for u in ("NIFTY", "BANKNIFTY"):
            all_ = c.expiries(u, d)
            assert all_ == sorted(set(all_))
            assert all(c.is_trading_day(e) and e >= d for e in all_)
        d = d.replace(day=1).replace(month=d.month % 12 + 1, year=d.year + (d.month == 12))


def test_time_to_expiry():
    open_ms = int(c.session_bounds(date(2025, 12, 30))[0].timestamp() * 1000)
    t = c.time_to_expiry_years(open_ms, date(2025, 12, 30))
    assert abs(t * 365 * 24 - 6.25) < 1e-9
    assert c.time_to_expiry_years(open_ms + 10 * 3600 * 1000, date(2025, 12, 30)) == 0.0
