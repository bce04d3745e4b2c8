"""Two-session scenarios for the engine-based strategies: a first session whose value area is known
(every period trades 100-120 once and sits at 110: POC 110, VA 100-120, high 120, low 100, 5-point
rows), then a second session built minute by minute from period paths."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pyarrow as pa

from strategies.backtest.data import series_from_table
from strategies.backtest.runner import run_backtest
from strategies.base import IST, Candle

KEY = "NSE_INDEX|Nifty 50"
DAY1, DAY2 = date(2024, 3, 12), date(2024, 3, 13)


def minute_ts(day: date, hhmm: str) -> int:
    return int(datetime.combine(day, time.fromisoformat(hhmm), IST).timestamp() * 1000)


def value_day(day: date = DAY1) -> list[Candle]:
    out = []
    t = datetime.combine(day, time(9, 15), IST)
    for i in range(375):
        ts = int(t.timestamp() * 1000)
        out.append(Candle(ts, 110, 120, 100, 110) if i % 30 == 0 else Candle(ts, 110, 110, 110, 110))
        t += timedelta(minutes=1)
    return out


def day_from_minutes(
    day: date, rows: dict[str, tuple[float, float, float, float]], fill: float
) -> list[Candle]:
    """Every minute 09:15-15:29: the given (o, h, l, c) at HH:MM keys, else flat at the last close
    (`fill` before the first key)."""
    out, last = [], fill
    t = datetime.combine(day, time(9, 15), IST)
    for _ in range(375):
        key = t.strftime("%H:%M")
        if key in rows:
            o, h, lo, c = rows[key]
            last = c
        else:
            o = h = lo = c = last
        out.append(Candle(int(t.timestamp() * 1000), o, h, lo, c))
        t += timedelta(minutes=1)
    return out


def ramp(start: str, n: int, p0: float, p1: float) -> dict[str, tuple[float, float, float, float]]:
    """n minutes from `start` moving in equal steps from p0 to p1 (each candle open->close)."""
    out = {}
    t = datetime.combine(DAY2, time.fromisoformat(start))
    step = (p1 - p0) / n
    for i in range(n):
        o, c = round(p0 + i * step, 2), round(p0 + (i + 1) * step, 2)
        out[t.strftime("%H:%M")] = (o, max(o, c), min(o, c), c)
        t += timedelta(minutes=1)
    return out


def backtest(strategy_cls, second_day: list[Candle], **params):
    candles = value_day() + second_day
    table = pa.table(
        {
            "instrument_key": [KEY] * len(candles),
            "ts": [c.ts_ms for c in candles],
            "open": [float(c.open) for c in candles],
            "high": [float(c.high) for c in candles],
            "low": [float(c.low) for c in candles],
            "close": [float(c.close) for c in candles],
        }
    )
    return run_backtest(strategy_cls, series_from_table(table), params)
