"""Metrics on a hand-computed trade list."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal

import pytest

from strategies.backtest.metrics import TradeResult, compute_metrics

D = Decimal
DAYS = [date(2024, 1, d) for d in (1, 2, 3, 4, 5)]


def trades():
    # day 1: +100 (gross 110); day 2: -50 (gross -40); day 3: none; day 4: +30 and -80; day 5: +20
    return [
        TradeResult(DAYS[0], D(100), D(110)),
        TradeResult(DAYS[1], D(-50), D(-40)),
        TradeResult(DAYS[3], D(30), D(40)),
        TradeResult(DAYS[3], D(-80), D(-70)),
        TradeResult(DAYS[4], D(20), D(30)),
    ]


def test_hand_computed_metrics():
    m = compute_metrics(trades(), DAYS)
    assert m["trades"] == 5 and m["sessions"] == 5 and (m["wins"], m["losses"]) == (3, 2)
    assert m["win_rate"] == 0.6
    assert (m["gross_pnl"], m["net_pnl"], m["costs"]) == (70.0, 20.0, 50.0)
    assert m["profit_factor"] == round(150 / 130, 4)
    assert m["expectancy"] == 4.0 and m["avg_win"] == 50.0 and m["avg_loss"] == -65.0
    # daily: 100, -50, 0, -50, 20 -> equity 100, 50, 50, 0, 20: drawdown 100 from 1 Jan to 4 Jan
    assert m["max_drawdown"] == 100.0
    assert (m["max_drawdown_peak"], m["max_drawdown_trough"]) == ("2024-01-01", "2024-01-04")
    r = [100, -50, 0, -50, 20]
    mean = 4.0
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / 4)  # sample sd = sqrt(14920 / 4)
    assert m["sharpe"] == pytest.approx(mean / sd * math.sqrt(252), abs=1e-4)
    downside = math.sqrt((50**2 + 50**2) / 5)  # sqrt(1000)
    assert m["sortino"] == pytest.approx(mean / downside * math.sqrt(252), abs=1e-4)
    assert m["calmar"] == pytest.approx(4.0 * 252 / 100, abs=1e-4)


def test_no_trades_and_no_losses():
    m = compute_metrics([], DAYS[:2])
    assert m["trades"] == 0 and m["win_rate"] is None and m["sharpe"] is None and m["max_drawdown"] == 0
    m = compute_metrics([TradeResult(DAYS[0], D(10), D(10))], DAYS[:1])
    assert m["profit_factor"] is None and m["avg_loss"] is None and m["sharpe"] is None


def test_drawdown_from_the_start_has_no_peak_date():
    m = compute_metrics([TradeResult(DAYS[0], D(-10), D(-10)), TradeResult(DAYS[1], D(5), D(5))], DAYS[:2])
    assert m["max_drawdown"] == 10.0 and m["max_drawdown_peak"] is None
    assert m["max_drawdown_trough"] == "2024-01-01"
