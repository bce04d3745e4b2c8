"""Constructed 1-minute sessions for strategy, runner and backtest tests (no real data needed)."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta

from strategies.base import IST, Candle


def ts_ms(day: date, hhmm: str) -> int:
    return int(datetime.combine(day, time.fromisoformat(hhmm), tzinfo=IST).timestamp() * 1000)


def session_from_path(day: date, bars: list[tuple[str, float, float, float, float]]) -> list[Candle]:
    """Candles from (HH:MM, open, high, low, close) rows."""
    return [Candle(ts_ms(day, hhmm), o, h, lo, c) for hhmm, o, h, lo, c in bars]


def flat_fill(day: date, start: str, end: str, price: float) -> list[Candle]:
    """Flat candles at `price` for every minute in [start, end)."""
    out = []
    t = datetime.combine(day, time.fromisoformat(start), tzinfo=IST)
    stop = datetime.combine(day, time.fromisoformat(end), tzinfo=IST)
    while t < stop:
        out.append(Candle(int(t.timestamp() * 1000), price, price, price, price))
        t += timedelta(minutes=1)
    return out


def random_session(
    day: date, rng: random.Random, start_price: float = 22000.0, vol: float = 6.0, drop: float = 0.0
) -> list[Candle]:
    """A random-walk session 09:15-15:29 on the 0.05 grid, with occasional gaps between candles and,
    with probability `drop` per minute, missing minutes (as in real recorded data)."""
    candles = []
    price = round(start_price * 20)
    drift = rng.choice((-1, 0, 1)) * rng.random() * vol * 4
    t = datetime.combine(day, time(9, 15), tzinfo=IST)
    for _ in range(375):
        if rng.random() < 0.03:
            price += rng.randint(-int(vol * 200), int(vol * 200))  # a gap
        o = price
        steps = [o]
        for _ in range(4):
            steps.append(steps[-1] + round(rng.gauss(drift, vol * 20)))
        c = steps[-1]
        h = max(steps) + rng.randint(0, int(vol * 10))
        lo = min(steps) - rng.randint(0, int(vol * 10))
        price = c
        if rng.random() >= drop:
            candles.append(Candle(int(t.timestamp() * 1000), o / 20, h / 20, lo / 20, c / 20))
        t += timedelta(minutes=1)
    return candles


def trading_days(start: date, n: int) -> list[date]:
    days, d = [], start
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days
