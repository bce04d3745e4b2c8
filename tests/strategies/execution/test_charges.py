"""Charges: the worked example of india_fo.md to the paisa, effective dates, the config file."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from strategies.execution.charges import (
    BUY,
    SELL,
    Charges,
    load_schedules,
    order_charges,
    round_trip_charges,
    schedule_on,
)

D = Decimal


def test_worked_example_after_april_2026_to_the_paisa():
    c = round_trip_charges(D("100"), D("110"), 65, date(2026, 4, 1))
    assert c.rounded() == {
        "brokerage": D("40.00"),
        "stt": D("10.73"),
        "exchange": D("4.78"),
        "ipft": D("0.07"),
        "sebi": D("0.01"),
        "stamp": D("0.20"),
        "gst": D("8.08"),
        "total": D("63.86"),
    }


def test_worked_example_with_stt_at_point_one_percent():
    c = round_trip_charges(D("100"), D("110"), 65, date(2026, 3, 31))
    assert c.rounded()["stt"] == D("7.15")
    assert c.rounded()["total"] == D("60.28")


def test_exact_components_are_kept_unrounded():
    c = round_trip_charges(D("100"), D("110"), 65, date(2026, 5, 4))
    assert c.exchange == D("4.781595") and c.sebi == D("0.01365") and c.stt == D("10.725")
    assert c.total == D("63.8589241")


def test_sides_stt_on_sell_stamp_on_buy():
    buy = order_charges(BUY, D("100"), 65, date(2025, 1, 2))
    sell = order_charges(SELL, D("100"), 65, date(2025, 1, 2))
    assert buy.stt == 0 and buy.stamp == D("0.195")
    assert sell.stamp == 0 and sell.stt == D("6.5")
    assert buy + sell == round_trip_charges(D("100"), D("100"), 65, date(2025, 1, 2))
    with pytest.raises(ValueError):
        order_charges("hold", D("1"), 1, date(2025, 1, 2))


def test_effective_dates_and_no_schedule_before_the_first():
    assert schedule_on(date(2026, 3, 31)).stt_sell_pct == D("0.1")
    assert schedule_on(date(2026, 4, 1)).stt_sell_pct == D("0.15")
    with pytest.raises(ValueError, match="no charge schedule"):
        schedule_on(date(2010, 1, 1))


def test_schedules_come_from_the_data_file(tmp_path):
    path = tmp_path / "charges.json"
    path.write_text(
        json.dumps(
            {
                "index_options": [
                    {
                        "effective_from": "2020-01-01",
                        "brokerage_per_order": "0",
                        "stt_sell_pct": "1",
                        "exchange_txn_pct": "0",
                        "ipft_pct": "0",
                        "sebi_pct": "0",
                        "stamp_buy_pct": "0",
                        "gst_pct": "18",
                    }
                ]
            }
        )
    )
    schedules = load_schedules(path)
    c = order_charges(SELL, D("50"), 10, date(2024, 1, 1), schedules)
    assert c == Charges(stt=D("5"))


def test_zero_charges_add_identity():
    c = round_trip_charges(D("12.35"), D("9.8"), 75, date(2025, 8, 1))
    assert c + Charges() == c
