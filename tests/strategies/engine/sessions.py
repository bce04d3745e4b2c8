"""Builders of constructed sessions for the engine tests (IST clock, 1-minute candles and ticks)."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from strategies.engine import AuctionEngine, Candles, ProfileParams

IST = ZoneInfo("Asia/Kolkata")
DAY = date(2024, 3, 12)


def at(hhmm: str, day: date = DAY, second: int = 0) -> int:
    """Epoch ms of an IST wall-clock time."""
    h, m = (int(x) for x in hhmm.split(":"))
    return int(datetime.combine(day, time(h, m, second), IST).timestamp() * 1000)


def period_start(k: int, day: date = DAY) -> int:
    return at("09:15", day) + k * 30 * 60_000


def candles_from_periods(periods: list[tuple[float, float, float, float]], day: date = DAY) -> Candles:
    """One candle at the start of each period: (open, high, low, close)."""
    ts, o, h, lo, c = [], [], [], [], []
    for k, (po, ph, pl, pc) in enumerate(periods):
        ts.append(period_start(k, day))
        o.append(po)
        h.append(ph)
        lo.append(pl)
        c.append(pc)
    return Candles(ts, o, h, lo, c)


def feed_candles(engine: AuctionEngine, candles: Candles) -> AuctionEngine:
    vol = candles.volume
    for i in range(len(candles)):
        engine.on_candle(
            candles.ts_ms[i],
            candles.open[i],
            candles.high[i],
            candles.low[i],
            candles.close[i],
            vol[i] if vol is not None else 0,
        )
    return engine


def run_periods(periods, params: ProfileParams | None = None, **engine_kwargs):
    engine = AuctionEngine(params or ProfileParams(), **engine_kwargs)
    return feed_candles(engine, candles_from_periods(periods)).state()
