"""Drive a strategy over candles session by session and pair its signals into trades: the minimal
loop the tests use to look at a strategy alone (the backtest runner does the same with more)."""

from __future__ import annotations

from itertools import groupby

from strategies.base import ENTRY, EXIT, Candle, Strategy, session_date_of


def drive(strategy: Strategy, candles: list[Candle], engine_factory=None):
    """Returns (signals, trades); trades are (entry Signal, exit Signal) pairs."""
    signals = []
    for day, group in groupby(candles, key=lambda c: session_date_of(c.ts_ms)):
        day_candles = list(group)
        engine = engine_factory(day) if engine_factory else None
        state = engine.state() if engine else None
        signals += strategy.on_session_start(day, state)
        for c in day_candles:
            if engine:
                engine.on_candle(c.ts_ms, c.open, c.high, c.low, c.close, c.volume)
                state = engine.state()
            signals += strategy.on_candle(c, state)
        signals += strategy.on_session_end(day_candles[-1] if day_candles else None, state)
    trades, open_entry = [], None
    for s in signals:
        if s.kind == ENTRY:
            assert open_entry is None, "entry while a position is open"
            open_entry = s
        elif s.kind == EXIT:
            assert open_entry is not None and open_entry.side == s.side
            trades.append((open_entry, s))
            open_entry = None
    assert open_entry is None, "a position left open at the end"
    return signals, trades
