"""Performance metrics of a backtest from its trade list. Pure Python, exact sums in Decimal.

Conventions (stated because tools differ):
- A trade's `pnl` is its net result (points on the underlying, or rupees net of charges for option
  fills); `gross` before costs; `costs` = gross - net.
- Daily returns are the net PnL summed by exit day over EVERY session of the run (0 on a day without
  a trade), in PnL units: ratios are scale-free, so no capital figure is assumed.
- Sharpe = mean / sample standard deviation (n-1) x sqrt(252). Sortino = mean / downside deviation
  x sqrt(252), downside deviation = sqrt(mean over all days of min(r, 0)^2). None when undefined.
- Max drawdown: the largest fall of cumulative daily PnL (starting from 0) from a running peak, with
  the peak's and the trough's dates. Calmar = mean daily PnL x 252 / max drawdown.
- Profit factor = sum of winning trades / |sum of losing trades| (None without losses);
  expectancy = net PnL / trades; win rate = winners / trades (a trade at exactly 0 is not a winner).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

TRADING_DAYS = 252


@dataclass(frozen=True, slots=True)
class TradeResult:
    day: date  # the exit's session date
    pnl: Decimal  # net
    gross: Decimal


def _f(x: Decimal | None, places: int = 4) -> float | None:
    return None if x is None else round(float(x), places)


def compute_metrics(trades: Sequence[TradeResult], sessions: Iterable[date] = ()) -> dict[str, Any]:
    n = len(trades)
    net = sum((t.pnl for t in trades), Decimal(0))
    gross = sum((t.gross for t in trades), Decimal(0))
    wins = [t.pnl for t in trades if t.pnl > 0]
    losses = [t.pnl for t in trades if t.pnl < 0]
    won, lost = sum(wins, Decimal(0)), sum(losses, Decimal(0))

    daily: dict[date, Decimal] = {d: Decimal(0) for d in sessions}
    for t in trades:
        daily[t.day] = daily.get(t.day, Decimal(0)) + t.pnl
    days = sorted(daily)
    returns = [float(daily[d]) for d in days]

    sharpe = sortino = None
    if len(returns) >= 2:
        mean = sum(returns) / len(returns)
        var = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
        if var > 0:
            sharpe = mean / math.sqrt(var) * math.sqrt(TRADING_DAYS)
        downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / len(returns))
        if downside > 0:
            sortino = mean / downside * math.sqrt(TRADING_DAYS)

    equity = Decimal(0)
    peak, peak_day = Decimal(0), None
    max_dd, dd_peak, dd_trough = Decimal(0), None, None
    for d in days:
        equity += daily[d]
        if equity > peak:
            peak, peak_day = equity, d
        drawdown = peak - equity
        if drawdown > max_dd:
            max_dd, dd_peak, dd_trough = drawdown, peak_day, d
    calmar = None
    if max_dd > 0 and returns:
        calmar = (sum(returns) / len(returns)) * TRADING_DAYS / float(max_dd)

    return {
        "trades": n,
        "sessions": len(days),
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": round(len(wins) / n, 4) if n else None,
        "gross_pnl": _f(gross),
        "costs": _f(gross - net),
        "net_pnl": _f(net),
        "profit_factor": _f(won / -lost) if lost else None,
        "expectancy": _f(net / n) if n else None,
        "avg_win": _f(won / len(wins)) if wins else None,
        "avg_loss": _f(lost / len(losses)) if losses else None,
        "sharpe": None if sharpe is None else round(sharpe, 4),
        "sortino": None if sortino is None else round(sortino, 4),
        "max_drawdown": _f(max_dd),
        # the peak before the worst fall (None when it came from the starting 0) and its trough
        "max_drawdown_peak": dd_peak.isoformat() if dd_peak else None,
        "max_drawdown_trough": dd_trough.isoformat() if dd_trough else None,
        "calmar": None if calmar is None else round(calmar, 4),
    }
