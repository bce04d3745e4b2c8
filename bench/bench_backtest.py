"""Benchmark: ib_breakout over the 77 real Nifty 50 sessions of 2024-01..04, end to end in one process
(load the Parquet, run, metrics), side by side with the same strategy written idiomatically in
backtesting.py and in backtrader, and a check that all three produce the same trades.

Prints ONE JSON object. `--quick` runs each engine once instead of `--repeat` times (default 3).
Needs /work/shared/data (../shared/data from the project root); backtesting and backtrader come from
requirements-dev.txt. Each is timed from "file on disk" to "metrics computed"; imports are timed
separately. The other two frameworks express the spec's fills with their own order types:
- entries fill at the 5-minute close (backtesting.py `trade_on_close=True`; backtrader cheat-on-close);
- stop = stop order (fills at the level, or at the open on a gap), target = limit order (same), the
  stop checked first in a bar (backtesting.py processes SL orders first; backtrader the bracket's
  stop child before its limit child);
- the square-off at the open of the 15:15 candle: on the 15:14 candle the stop is moved to a level
  the next open is sure to cross (backtesting.py `trade.sl`), or the bracket is cancelled for a stop
  order at such a level (backtrader), so the exit fills at the 15:15 open like ours.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from datetime import time as dtime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "nifty50_1m_2024-01_2024-04.parquet"
ROW, K, EXIT = 5.0, 1.0, dtime(15, 15)
OPEN_MIN, IB_END_MIN, EXIT_MIN = 9 * 60 + 15, 10 * 60 + 15, 15 * 60 + 15


def run_ours():
    from strategies.backtest.data import read_candles
    from strategies.backtest.runner import run_backtest
    from strategies.library import get_strategy

    series = read_candles(DATA)
    result = run_backtest(get_strategy("ib_breakout"), series, {"row_size": ROW, "target_ibr": K})
    trades = [(t.side, t.entry_ts_ms, t.exit_ts_ms, t.entry_price, t.exit_price) for t in result.trades]
    return trades, result.metrics, len(series)


def load_frame():
    import pandas as pd

    df = pd.read_parquet(DATA)
    df["ts"] = df["ts"].dt.tz_convert("Asia/Kolkata")
    df = df.set_index("ts").sort_index()
    df = df.rename(
        columns={"open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume"}
    )
    df["Volume"] = df["Volume"].fillna(0)
    return df[["Open", "High", "Low", "Close", "Volume"]]


def run_backtesting_py():
    import numpy as np
    import pandas as pd
    from backtesting import Backtest, Strategy

    df = load_frame()

    class IBBreakout(Strategy):
        row = ROW
        k = K

        def init(self):
            idx = self.data.index
            minute = idx.hour * 60 + idx.minute
            day = idx.normalize()
            in_ib = (minute >= OPEN_MIN) & (minute < IB_END_MIN)
            high = pd.Series(np.where(in_ib, self.data.High, np.nan), index=idx)
            low = pd.Series(np.where(in_ib, self.data.Low, np.nan), index=idx)
            self.ibh = self.I(lambda: high.groupby(day).transform("max").to_numpy(), name="IBH")
            self.ibl = self.I(lambda: low.groupby(day).transform("min").to_numpy(), name="IBL")
            bucket_start = OPEN_MIN + (minute - OPEN_MIN) // 5 * 5
            closes_5m = (
                ((minute - OPEN_MIN) % 5 == 4) & (bucket_start >= IB_END_MIN) & (bucket_start < EXIT_MIN)
            )
            self.five_close = self.I(lambda: np.asarray(closes_5m, dtype=float), name="5m close", plot=False)
            self.minute = self.I(lambda: np.asarray(minute, dtype=float), name="minute", plot=False)
            self.day = self.I(lambda: np.asarray(day.dayofyear + day.year * 1000, dtype=float), plot=False)
            self.traded_day = None

        def next(self):
            if self.position and self.minute[-1] + 1 >= EXIT_MIN:
                for trade in self.trades:  # out at the next (15:15) open
                    trade.tp = None
                    trade.sl = 1e12 if trade.is_long else 1e-9
                return
            if self.position or not self.five_close[-1] or self.traded_day == self.day[-1]:
                return
            ibh, ibl, close = self.ibh[-1], self.ibl[-1], self.data.Close[-1]
            ibr = ibh - ibl
            if not ibr > 0:
                return
            mid = (ibh + ibl) / 2
            if round(close * 20) >= round((ibh + self.row) * 20):
                self.buy(size=1, sl=mid, tp=ibh + self.k * ibr)
                self.traded_day = self.day[-1]
            elif round(close * 20) <= round((ibl - self.row) * 20):
                self.sell(size=1, sl=mid, tp=ibl - self.k * ibr)
                self.traded_day = self.day[-1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(
            df, IBBreakout, cash=10_000_000, commission=0, trade_on_close=True, finalize_trades=True
        )
        stats = bt.run()
    trades = []
    for row in stats["_trades"].itertuples():
        side = "long" if row.Size > 0 else "short"
        # a trade_on_close fill is stamped on the bar whose close it took: the 5-minute close is its end
        entry_ms = int(row.EntryTime.timestamp() * 1000) + 60_000
        trades.append((side, entry_ms, int(row.ExitTime.timestamp() * 1000), row.EntryPrice, row.ExitPrice))
    return trades, {"trades": int(stats["# Trades"]), "return_pct": float(stats["Return [%]"])}


def run_backtrader():
    import backtrader as bt

    df = load_frame()
    df.index = df.index.tz_localize(None)  # backtrader works in naive exchange time

    class IBBreakout(bt.Strategy):
        params = (("row", ROW), ("k", K))

        def __init__(self):
            self.day = None
            self.ibh = self.ibl = None
            self.traded = False
            self.bracket = None
            self.fills = []

        def notify_order(self, order):
            if order.status == order.Completed:
                dt = bt.num2date(order.executed.dt)
                self.fills.append((dt, order.isbuy(), order.executed.price))

        def next(self):
            dt = self.data.datetime.datetime(0)
            minute = dt.hour * 60 + dt.minute
            if dt.date() != self.day:
                self.day, self.ibh, self.ibl, self.traded = dt.date(), None, None, False
            d = self.data
            if OPEN_MIN <= minute < IB_END_MIN:
                self.ibh = d.high[0] if self.ibh is None else max(self.ibh, d.high[0])
                self.ibl = d.low[0] if self.ibl is None else min(self.ibl, d.low[0])
                return
            if self.position:
                if minute + 1 >= EXIT_MIN and self.bracket:
                    self.cancel(self.bracket[1])  # OCO: cancels the limit child too
                    long = self.position.size > 0
                    self.close(exectype=bt.Order.Stop, price=1e12 if long else 1e-9)
                    self.bracket = None
                return
            if self.traded or self.ibh is None:
                return
            start = OPEN_MIN + (minute - OPEN_MIN) // 5 * 5
            if (minute - OPEN_MIN) % 5 != 4 or not (IB_END_MIN <= start < EXIT_MIN):
                return
            ibr = self.ibh - self.ibl
            if ibr <= 0:
                return
            mid, close = (self.ibh + self.ibl) / 2, d.close[0]
            if round(close * 20) >= round((self.ibh + self.p.row) * 20):
                self.bracket = self.buy_bracket(
                    size=1, exectype=bt.Order.Market, stopprice=mid, limitprice=self.ibh + self.p.k * ibr
                )
                self.traded = True
            elif round(close * 20) <= round((self.ibl - self.p.row) * 20):
                self.bracket = self.sell_bracket(
                    size=1, exectype=bt.Order.Market, stopprice=mid, limitprice=self.ibl - self.p.k * ibr
                )
                self.traded = True

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df, timeframe=bt.TimeFrame.Minutes, compression=1))
    cerebro.addstrategy(IBBreakout)
    cerebro.broker.setcash(10_000_000)
    cerebro.broker.set_coc(True)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    cerebro.addanalyzer(bt.analyzers.DrawDown, _name="dd")
    (strategy,) = cerebro.run()
    from zoneinfo import ZoneInfo

    ist = ZoneInfo("Asia/Kolkata")
    trades = []
    fills = strategy.fills
    for (t_in, buy, p_in), (t_out, _, p_out) in zip(fills[0::2], fills[1::2], strict=False):
        t_in = t_in.replace(tzinfo=ist)
        t_out = t_out.replace(tzinfo=ist)
        # cheat-on-close fills are stamped with the bar whose close they took: +1 min = the 5-min close
        trades.append(
            (
                "long" if buy else "short",
                int(t_in.timestamp() * 1000) + 60_000,
                int(t_out.timestamp() * 1000),
                p_in,
                p_out,
            )
        )
    analysis = strategy.analyzers.trades.get_analysis()
    return trades, {"trades": int(analysis.get("total", {}).get("closed", 0))}


def compare(ours, theirs):
    """Mismatches: trades whose side, times or prices (in half-ticks: midpoint stops) differ, each
    with the known cause it matches."""

    def key(t):
        return (t[0], t[1], t[2], round(t[3] * 40), round(t[4] * 40))

    a, b = [key(t) for t in ours], [key(t) for t in theirs]
    only_ours = [t for t in a if t not in set(b)]
    only_theirs = [t for t in b if t not in set(a)]
    causes = []
    for t in only_ours:
        entry_minute = (t[1] // 60_000 + 330) % 1440
        if entry_minute >= EXIT_MIN:
            cause = (
                "entered at the 15:15 close of the 15:10 candle: ours squares off at the 15:15 open, the "
                "framework sees the new position only after that bar and exits a minute later"
            )
        elif t[2] == t[1]:
            cause = (
                "stop/target reached in the first candle after the entry: the framework's bracket did not fill on "
                "the bar right after its cheat-on-close entry (observed: it fills the same level later)"
            )
        else:
            cause = "unexplained"
        causes.append({"ours": t, "cause": cause})
    return {
        "equal": a == b,
        "only_ours": len(only_ours),
        "only_theirs": len(only_theirs),
        "mismatches": causes,
        "theirs": only_theirs[:5],
    }


def timed(fn, repeat):
    runs, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - start)
    return out, runs


def main(argv):
    if not DATA.exists():
        print(json.dumps({"skipped": f"data not found: {DATA}"}))
        return 0
    repeat = 1 if "--quick" in argv else 3
    imports = {}
    start = time.perf_counter()
    import strategies.backtest.runner
    import strategies.library  # noqa: F401

    imports["ours"] = time.perf_counter() - start
    start = time.perf_counter()
    import backtesting  # noqa: F401
    import pandas  # noqa: F401

    imports["backtesting.py"] = time.perf_counter() - start
    start = time.perf_counter()
    import backtrader  # noqa: F401

    imports["backtrader"] = time.perf_counter() - start

    (ours, our_metrics, candles), t_ours = timed(run_ours, repeat)
    (bpy, bpy_metrics), t_bpy = timed(run_backtesting_py, repeat)
    (btr, btr_metrics), t_btr = timed(run_backtrader, repeat)

    def summary(runs):
        return {
            "best_s": round(min(runs), 4),
            "median_s": round(statistics.median(runs), 4),
            "runs": len(runs),
        }

    best = {"ours": min(t_ours), "backtesting.py": min(t_bpy), "backtrader": min(t_btr)}
    result = {
        "bench": "backtest",
        "data": DATA.name,
        "candles": candles,
        "sessions": our_metrics["sessions"],
        "strategy": "ib_breakout",
        "trades": {"ours": len(ours), "backtesting.py": len(bpy), "backtrader": len(btr)},
        "time": {"ours": summary(t_ours), "backtesting.py": summary(t_bpy), "backtrader": summary(t_btr)},
        "import_s": {k: round(v, 3) for k, v in imports.items()},
        "speedup_vs_backtesting_py": round(best["backtesting.py"] / best["ours"], 1),
        "speedup_vs_backtrader": round(best["backtrader"] / best["ours"], 1),
        "goal": {"vs_backtesting_py": 5, "vs_backtrader": 30},
        "same_trades": {"backtesting.py": compare(ours, bpy), "backtrader": compare(ours, btr)},
        "ours_net_points": our_metrics["net_pnl"],
        "their_metrics": {"backtesting.py": bpy_metrics, "backtrader": btr_metrics},
    }
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
