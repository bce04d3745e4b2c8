"""Option selection on listed strikes and modelled Black-Scholes premiums."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import pytest

from feeds import contracts, universe
from feeds.ticks import IST
from strategies.execution.options import (
    CE,
    PE,
    OptionContract,
    PremiumModel,
    black_scholes,
    option_type_for,
    select_contract,
    to_option_tick,
)

DAY = date(2024, 3, 12)  # a Tuesday; Nifty weekly then expired on Thursday 14 Mar 2024


def row(strike, option_type="CE", expiry=date(2024, 3, 14), lot=25, key=None):
    return {
        "instrument_key": key or f"NSE_FO|{option_type}{strike}{expiry:%m%d}",
        "instrument_type": option_type,
        "underlying_symbol": "NIFTY",
        "strike_price": float(strike),
        "expiry": universe.expiry_epoch_ms(expiry),
        "lot_size": lot,
        "trading_symbol": f"NIFTY {strike} {option_type}",
    }


def test_long_buys_call_short_buys_put():
    assert option_type_for("long") == CE and option_type_for("short") == PE
    with pytest.raises(ValueError):
        option_type_for("flat")


def test_atm_is_the_nearest_listed_strike_not_rounding_to_the_step():
    # 22300 is not listed: rounding 22310 to the 50 step would name a contract that does not exist
    master = [row(s) for s in (22200, 22250, 22350, 22400)] + [row(s, "PE") for s in (22250, 22350)]
    c = select_contract(master, "NSE_INDEX|Nifty 50", "long", 22310.0, DAY)
    assert (c.option_type, c.strike, c.lot_size) == (CE, Decimal("22350.0"), 25)
    assert select_contract(master, "NIFTY", "long", 22300.0, DAY).strike == Decimal("22250.0")  # tie: lower


def test_offsets_walk_the_sorted_listed_strikes():
    master = [row(s, t) for s in (22100, 22200, 22300, 22400, 22500) for t in ("CE", "PE")]
    assert select_contract(master, "NIFTY", "long", 22290, DAY, offset=1).strike == Decimal(
        "22200.0"
    )  # ITM call
    assert select_contract(master, "NIFTY", "long", 22290, DAY, offset=-2).strike == Decimal(
        "22500.0"
    )  # OTM call
    assert select_contract(master, "NIFTY", "short", 22290, DAY, offset=1).strike == Decimal(
        "22400.0"
    )  # ITM put
    assert select_contract(master, "NIFTY", "short", 22290, DAY, offset=-1).strike == Decimal("22200.0")
    with pytest.raises(LookupError):
        select_contract(master, "NIFTY", "long", 22290, DAY, offset=5)


def test_nearest_eligible_expiry_and_lot_from_the_master():
    master = [row(22300, expiry=date(2024, 3, 14), lot=25), row(22300, expiry=date(2024, 3, 21), lot=50)]
    assert select_contract(master, "NIFTY", "long", 22300, DAY).expiry == date(2024, 3, 14)
    far = select_contract(master, "NIFTY", "long", 22300, DAY, min_days_to_expiry=3)
    assert (far.expiry, far.lot_size) == (date(2024, 3, 21), 50)  # the master's lot wins
    with pytest.raises(LookupError):
        select_contract(master, "NIFTY", "long", 22300, date(2024, 3, 22))


def test_lot_falls_back_to_the_contract_calendar():
    r = row(22300)
    r["lot_size"] = None
    assert OptionContract.from_master_row(r).lot_size == contracts.lot_size("NIFTY", date(2024, 3, 14))


def test_generated_master_chain_selects_a_listed_contract():
    master = universe.generate_master(DAY, spot={"NIFTY": 22335.7})
    c = select_contract(master, "NSE_INDEX|Nifty 50", "long", 22335.7, DAY)
    assert c.strike == Decimal("22350.0") and c.expiry == contracts.nearest_expiry("NIFTY", DAY)
    assert c.instrument_key in {r["instrument_key"] for r in master}


def test_black_scholes_known_value_and_put_call_parity():
    # S=100, K=100, T=1, sigma=0.2, r=0.05: call 10.4506, put 5.5735 (textbook values)
    assert black_scholes(CE, 100, 100, 1.0, 0.2, 0.05) == pytest.approx(10.4506, abs=1e-4)
    assert black_scholes(PE, 100, 100, 1.0, 0.2, 0.05) == pytest.approx(5.5735, abs=1e-4)
    assert black_scholes(CE, 110, 100, 0.0, 0.2) == 10 and black_scholes(PE, 110, 100, 0.0, 0.2) == 0


def test_modelled_premium_uses_the_expiry_calendar_and_the_tick():
    c = OptionContract("k", "NIFTY", CE, Decimal(22350), date(2024, 3, 14), 25)
    model = PremiumModel(iv=0.14, rate=0.065)
    morning = int(datetime.combine(DAY, time(9, 30), IST).timestamp() * 1000)
    expiry_close = int(datetime.combine(date(2024, 3, 14), time(15, 30), IST).timestamp() * 1000)
    p = model.premium(c, 22335.7, morning)
    assert p % Decimal("0.05") == 0 and Decimal(40) < p < Decimal(150)
    assert model.premium(c, 22335.7, expiry_close) == Decimal("0.05")  # worthless OTM at expiry: one tick
    assert model.premium(c, 22400.0, expiry_close) == Decimal("50.00")
    assert to_option_tick(12.374) == Decimal("12.35") and to_option_tick(0.0) == Decimal("0.05")
