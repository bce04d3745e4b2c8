"""Fixtures of the web backtest tests: small generated candle histories written into a temporary
history store with the real `HistoryWriter`."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from feeds.ticks import IST

NIFTY = "NSE_INDEX|Nifty 50"


def trading_days(first: date, count: int) -> list[date]:
    days, day = [], first
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def session_candles(day: date, rng: random.Random, start_price: float) -> list[dict]:
    """375 one-minute candles 09:15..15:29 of a random walk on the 0.05 grid with a drift that changes
    after the initial balance, so some sessions break out of it and some do not."""
    rows = []
    price = start_price
    drift = rng.choice([-1.2, -0.6, 0.0, 0.6, 1.2])
    t0 = datetime.combine(day, time(9, 15), IST)
    for i in range(375):
        step = rng.gauss(drift if i >= 60 else 0.0, 4.0)
        o = price
        c = round((price + step) * 20) / 20
        hi = round((max(o, c) + abs(rng.gauss(0, 1.5))) * 20) / 20
        lo = round((min(o, c) - abs(rng.gauss(0, 1.5))) * 20) / 20
        ts_ms = int((t0 + timedelta(minutes=i)).timestamp() * 1000)
        rows.append({"ts_ms": ts_ms, "open": o, "high": hi, "low": lo, "close": c})
        price = c
    return rows


def make_history(days: list[date], seed: int = 7, key: str = NIFTY) -> pa.Table:
    rng = random.Random(seed)
    rows: list[dict] = []
    price = 22000.0
    for day in days:
        candles = session_candles(day, rng, price)
        price = candles[-1]["close"]
        rows.extend(candles)
    return pa.table(
        {
            "instrument_key": [key] * len(rows),
            "ts_ms": pa.array([r["ts_ms"] for r in rows], pa.int64()),
            "open": [r["open"] for r in rows],
            "high": [r["high"] for r in rows],
            "low": [r["low"] for r in rows],
            "close": [r["close"] for r in rows],
        }
    )


def write_history(root: Path, table: pa.Table) -> None:
    from persistence.writer import HistoryWriter

    with HistoryWriter(root, flush_interval=None) as writer:
        writer.write_candles(table)


@pytest.fixture
def history_dir(tmp_path, settings):
    """A history store with 6 generated sessions of Nifty 50 candles, set as settings.HISTORY_DIR."""
    root = tmp_path / "history"
    write_history(root, make_history(trading_days(date(2024, 3, 4), 6)))
    settings.HISTORY_DIR = root
    return root
