"""The backtest runner: same strategy classes, trades from signals, option fills through the
PaperBroker with charges, the engine path, and candle loading from Parquet and CSV."""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from strategies.backtest.data import read_candles, series_from_table, ticks_from_table
from strategies.backtest.runner import MODELLED, OptionFillConfig, run_backtest
from strategies.base import ENTRY, Param, Strategy
from strategies.execution.charges import round_trip_charges, to_paisa
from strategies.execution.options import PremiumModel
from strategies.library.ib_breakout import IBBreakout
from tests.strategies.library.drive import drive
from tests.strategies.library.sessions import flat_fill, random_session, session_from_path, trading_days

KEY = "NSE_INDEX|Nifty 50"
DAY = date(2026, 4, 7)


def table_of(candles, key=KEY):
    return pa.table(
        {
            "instrument_key": [key] * len(candles),
            "ts": pa.array([c.ts_ms * 1000 for c in candles], pa.timestamp("us", tz="Asia/Kolkata")),
            "open": [c.open for c in candles],
            "high": [c.high for c in candles],
            "low": [c.low for c in candles],
            "close": [c.close for c in candles],
        }
    )


def breakout_day(day=DAY):
    c = flat_fill(day, "09:15", "10:15", 22000.0)
    c[0] = c[0].__class__(c[0].ts_ms, 22000, 22050, 21950, 22000)
    c += flat_fill(day, "10:15", "10:19", 22040.0)
    c += session_from_path(day, [("10:19", 22040, 22060, 22040, 22060.0)])
    c += flat_fill(day, "10:20", "15:30", 22070.0)
    return c


def test_runner_trades_equal_the_strategy_driven_alone():
    rng = random.Random(7)
    candles = []
    for day in trading_days(date(2024, 2, 5), 25):
        candles += random_session(day, rng, vol=4)
    series = series_from_table(table_of(candles))
    result = run_backtest(IBBreakout, series, {"target_ibr": 0.5})
    _, alone = drive(IBBreakout(KEY, {"target_ibr": 0.5}), candles)
    assert len(result.sessions) == 25 and len(result.trades) == len(alone) > 3
    for t, (e, x) in zip(result.trades, alone, strict=True):
        assert (t.side, t.entry_ts_ms, t.exit_ts_ms, t.entry_price, t.exit_price) == (
            e.side,
            e.ts_ms,
            x.ts_ms,
            e.price,
            x.price,
        )
    assert result.metrics["trades"] == len(alone)
    assert result.metrics["net_pnl"] == pytest.approx(sum(t.pnl_points for t in result.trades), abs=1e-3)


def test_trade_dict_has_the_documented_fields():
    result = run_backtest(IBBreakout, series_from_table(table_of(breakout_day())))
    (trade,) = result.as_dict()["trades"]
    assert trade["side"] == "long" and trade["entry_ts"] == "2026-04-07T10:20:00+05:30"
    assert (trade["entry_price"], trade["exit_price"], trade["pnl_points"]) == (22060.0, 22070.0, 10.0)
    assert trade["exit_ts"] == "2026-04-07T15:15:00+05:30" and "option" not in trade


def test_modelled_fill_buys_the_atm_call_and_books_charges():
    config = OptionFillConfig(lots=2, iv=0.15, slippage=Decimal("0"))
    result = run_backtest(
        IBBreakout, series_from_table(table_of(breakout_day())), fill=MODELLED, options=config
    )
    (trade,) = result.trades
    leg = trade.option
    assert leg.contract.option_type == "CE" and leg.contract.strike == Decimal("22050.0")
    assert leg.contract.lot_size == 65 and leg.quantity == 130 and leg.modelled
    model = PremiumModel(iv=0.15)
    # 7 Apr 2026 is an expiry Tuesday: the premium is the model's at the entry / exit moment
    assert leg.entry_premium == model.premium(leg.contract, 22060.0, trade.entry_ts_ms)
    assert leg.exit_premium == model.premium(leg.contract, 22070.0, trade.exit_ts_ms)
    assert leg.contract.expiry == DAY
    expected = round_trip_charges(leg.entry_premium, leg.exit_premium, 130, DAY)
    assert leg.charges == expected
    assert to_paisa(leg.net_pnl) == to_paisa((leg.exit_premium - leg.entry_premium) * 130 - expected.total)
    assert result.metrics["net_pnl"] == pytest.approx(float(leg.net_pnl), abs=1e-3)
    assert result.as_dict()["trades"][0]["option"]["premiums"] == "modelled (Black-Scholes)"


def test_short_signal_buys_a_put():
    c = flat_fill(DAY, "09:15", "10:15", 22000.0)
    c[0] = c[0].__class__(c[0].ts_ms, 22000, 22050, 21950, 22000)
    c += flat_fill(DAY, "10:15", "15:30", 21940.0)
    (trade,) = run_backtest(IBBreakout, series_from_table(table_of(c)), fill=MODELLED).trades
    assert trade.side == "short" and trade.option.contract.option_type == "PE"


class UsesState(Strategy):
    """Records the auction states it is shown; enters once on the first state with a complete IB."""

    slug = "uses_state"
    needs = frozenset({"auction"})
    seen = Param("int", 0)

    def __init__(self, key, params=None):
        super().__init__(key, params)
        self.states = []

    def on_candle(self, candle, state=None):
        self.states.append(state)
        if state.ib_complete and not any(s.kind == ENTRY for s in getattr(self, "_sent", [])):
            self._sent = [self.signal(candle.ts_ms, "long", ENTRY, candle.close, reason="ib done")]
            return self._sent
        return []

    def on_session_end(self, last, state=None):
        if getattr(self, "_sent", None):
            self._sent = []
            return [self.signal(last.ts_ms, "long", "exit", last.close, reason="end")]
        return []


def test_strategies_that_need_the_engine_get_the_auction_state():
    candles = breakout_day(date(2024, 3, 12)) + breakout_day(date(2024, 3, 13))
    result = run_backtest(UsesState, series_from_table(table_of(candles)))
    assert len(result.trades) == 2
    # the IB is complete once the 10:14 candle has closed (the engine's clock is the candle's end)
    assert result.trades[0].entry_ts_ms == candles[59].ts_ms
    assert result.sessions == [date(2024, 3, 12), date(2024, 3, 13)]


def test_second_session_sees_the_first_as_its_prior():
    candles = breakout_day(date(2024, 3, 12)) + breakout_day(date(2024, 3, 13))
    strategy_states = []

    class Spy(UsesState):
        slug = "spy"

        def on_candle(self, candle, state=None):
            strategy_states.append(state)
            return []

        def on_session_end(self, last, state=None):
            return []

    run_backtest(Spy, series_from_table(table_of(candles)))
    first, second = strategy_states[0], strategy_states[-1]
    assert first.prior is None
    assert second.prior.date == date(2024, 3, 12) and second.prior.high == 22070.0


def test_bad_params_and_fill_model_are_errors():
    series = series_from_table(table_of(breakout_day()))
    with pytest.raises(ValueError, match="row_size"):
        run_backtest(IBBreakout, series, {"row_size": -1})
    with pytest.raises(ValueError, match="fill"):
        run_backtest(IBBreakout, series, fill="magic")


def test_reading_parquet_and_csv_with_date_range_and_instrument(tmp_path):
    candles = breakout_day(date(2024, 3, 12)) + breakout_day(date(2024, 3, 13))
    table = pa.concat_tables([table_of(candles), table_of(candles[:10], "NSE_INDEX|Nifty Bank")])
    pq.write_table(table, tmp_path / "c.parquet")
    s = read_candles(tmp_path / "c.parquet", KEY, start=date(2024, 3, 13), end=date(2024, 3, 13))
    assert len(s) == 375 and [d for d, _, _ in s.session_bounds()] == [date(2024, 3, 13)]
    with pytest.raises(ValueError, match="several instruments"):
        read_candles(tmp_path / "c.parquet")
    csv_table = (
        table_of(candles)
        .set_column(1, "ts", pa.array([f"2024-03-12T09:{15 + i:02d}:00+05:30" for i in range(len(candles))]))
        .slice(0, 40)
    )
    pacsv.write_csv(csv_table, tmp_path / "c.csv")
    s = read_candles(tmp_path / "c.csv")
    assert len(s) == 40 and s.ts_ms[0] == candles[0].ts_ms and s.volume[0] == 0


class TickCross(Strategy):
    """Enters long on the first tick above `level`, exits on the first tick below `level - 5`."""

    slug = "tick_cross"
    needs = frozenset()
    level = Param("float", 22050.0)

    def on_session_start(self, session_date, state=None):
        super().on_session_start(session_date, state)
        self.long = False
        return []

    def on_tick(self, tick, state=None):
        if not self.long and tick.ltp > self.level:
            self.long = True
            return [self.signal(tick.ts_ms, "long", ENTRY, tick.ltp, reason="tick above")]
        if self.long and tick.ltp < self.level - 5:
            self.long = False
            self.session_done = True
            return [self.signal(tick.ts_ms, "long", "exit", tick.ltp, reason="tick below")]
        return []


def test_ticks_reach_the_strategy_before_their_candle_closes():
    candles = breakout_day(date(2024, 3, 12))
    base = candles[70].ts_ms  # 10:25
    ticks = pa.table(
        {
            "ts": [base + 1_000, base + 20_500, base + 61_000, base + 90_000],
            "ltp": [22040.0, 22051.0, 22052.0, 22044.0],
        }
    )
    series = series_from_table(table_of(candles))
    result = run_backtest(TickCross, series, ticks=ticks_from_table(ticks))
    (trade,) = result.trades
    assert (trade.entry_ts_ms, trade.entry_price) == (base + 20_500, 22051.0)
    assert (trade.exit_ts_ms, trade.exit_price) == (base + 90_000, 22044.0)
    # a candle-only strategy gives the same trades whether ticks are given or not
    with_ticks = run_backtest(IBBreakout, series, ticks=ticks_from_table(ticks)).trades
    assert with_ticks == run_backtest(IBBreakout, series).trades


def test_engine_fed_by_ticks_when_given():
    candles = breakout_day(date(2024, 3, 12))
    ticks = pa.table({"ts": [candles[0].ts_ms + 500, candles[1].ts_ms + 500], "ltp": [22001.0, 22100.0]})
    seen = []

    class Spy(UsesState):
        slug = "spy_ticks"

        def on_tick(self, tick, state=None):
            seen.append((tick.ltp, state.high))
            return []

        def on_candle(self, candle, state=None):
            return []

        def on_session_end(self, last, state=None):
            return []

    run_backtest(Spy, series_from_table(table_of(candles)), ticks=ticks_from_table(ticks))
    assert seen == [(22001.0, 22001.0), (22100.0, 22100.0)]


def test_modelled_fill_splits_above_the_freeze_quantity():
    config = OptionFillConfig(lots=30, slippage=Decimal("0"))  # 30 x 65 = 1950 > Nifty freeze 1800
    (trade,) = run_backtest(
        IBBreakout, series_from_table(table_of(breakout_day())), fill=MODELLED, options=config
    ).trades
    assert trade.option.quantity == 1950
    assert trade.option.charges.brokerage == Decimal("80")  # two slices in, two out
