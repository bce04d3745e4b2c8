"""An independent implementation of ib_breakout, written straight from the rules in the task (not
from strategies/library/ib_breakout.py), to check the strategy against: whole days at a time, with
the 5-minute candles built first and levels as exact fractions."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, time, timedelta
from fractions import Fraction

from strategies.base import IST


def t(p: float) -> int:
    return round(p * 20)


def reference_trades(candles, row_size=5.0, target_ibr=1.0, exit_time=time(15, 15)):
    """candles: iterable of objects with ts_ms, open, high, low, close. Returns a list of dicts
    with entry_ts, exit_ts (ms), side, entry_t, exit_t (price in ticks, a Fraction for levels)."""
    by_day = defaultdict(list)
    for c in candles:
        dt = datetime.fromtimestamp(c.ts_ms / 1000, tz=IST)
        by_day[dt.date()].append((dt, c))
    trades = []
    row = t(row_size)
    k = Fraction(str(target_ibr))
    for day in sorted(by_day):
        rows = sorted(by_day[day], key=lambda x: x[0])
        open_dt = datetime.combine(day, time(9, 15), tzinfo=IST)
        ib_end = datetime.combine(day, time(10, 15), tzinfo=IST)
        exit_dt = datetime.combine(day, exit_time, tzinfo=IST)
        ib = [c for dt, c in rows if open_dt <= dt < ib_end]
        if not ib:
            continue
        ibh = max(t(c.high) for c in ib)
        ibl = min(t(c.low) for c in ib)
        ibr = ibh - ibl
        if ibr == 0:
            continue
        # 5-minute candles: close = close of the last 1-minute candle inside it
        fives = {}
        for dt, c in rows:
            if dt < open_dt:
                continue
            start = open_dt + timedelta(minutes=5 * ((dt - open_dt) // timedelta(minutes=5)))
            fives[start] = (dt, c)  # rows are sorted: the last one wins
        trade = None
        for start in sorted(fives):
            if start < ib_end or start >= exit_dt:
                continue
            last_dt, last = fives[start]
            close = t(last.close)
            if close >= ibh + row:
                trade = ("long", start, last_dt, close, ibh + k * ibr)
            elif close <= ibl - row:
                trade = ("short", start, last_dt, close, ibl - k * ibr)
            if trade:
                break
        if not trade:
            continue
        side, start, entry_dt, entry, target = trade
        stop = Fraction(ibh + ibl, 2)
        exit_t = exit_at = None
        for dt, c in rows:
            if dt <= entry_dt:
                continue
            o, h, lo = t(c.open), t(c.high), t(c.low)
            if dt >= exit_dt:
                exit_t, exit_at = Fraction(o), dt
                break
            if side == "long":
                if lo <= stop:
                    exit_t, exit_at = (Fraction(o) if o < stop else stop), dt
                    break
                if h >= target:
                    exit_t, exit_at = (Fraction(o) if o > target else target), dt
                    break
            else:
                if h >= stop:
                    exit_t, exit_at = (Fraction(o) if o > stop else stop), dt
                    break
                if lo <= target:
                    exit_t, exit_at = (Fraction(o) if o < target else target), dt
                    break
        if exit_t is None:  # the data ended first: out at the last close
            last_dt, last = rows[-1]
            exit_t, exit_at = Fraction(t(last.close)), last_dt + timedelta(minutes=1)
        trades.append(
            {
                "side": side,
                "entry_ts": int((start + timedelta(minutes=5)).timestamp() * 1000),
                "exit_ts": int(exit_at.timestamp() * 1000),
                "entry_t": Fraction(entry),
                "exit_t": exit_t,
                "pnl_t": (exit_t - entry) if side == "long" else (entry - exit_t),
            }
        )
    return trades
