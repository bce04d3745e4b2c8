"""The backtest runner: drives a strategy class (and, when it needs it, the auction engine) over
1-minute candles session by session, turns its signals into trades, optionally fills them as
option orders through the PaperBroker with charges, and computes metrics.

This is the code path the live worker follows too: per session `on_session_start`, per completed
candle `engine.on_candle` then `strategy.on_candle(candle, state)`, `on_session_end` after the last
one; an entry signal opens a trade, the matching exit closes it. Fill models:
- `underlying`: the trade on the index itself, in points (no charges).
- `modelled`: a long signal buys the CE, a short the PE (listed strikes from the instrument master,
  nearest expiry), premiums from Black-Scholes at a configured IV — MODELLED prices, labelled so —
  bought and sold through `PaperBroker` (LTP ± slippage, no book) with Indian charges.

Fast path: a strategy whose `needs` is empty gets no engine (state None), so no TPO profile is built.
No Django, Celery or Redis here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from feeds.ticks import IST
from strategies.backtest.data import CandleSeries, TickSeries
from strategies.backtest.metrics import TradeResult, compute_metrics
from strategies.base import ENTRY, EXIT, LONG, Candle, Signal, Strategy
from strategies.execution.charges import BUY, SELL, Charges, to_paisa
from strategies.execution.options import OptionContract, PremiumModel, select_contract
from strategies.execution.paper import OrderRequest, PaperBroker

UNDERLYING = "underlying"
MODELLED = "modelled"
FILL_MODELS = (UNDERLYING, MODELLED)
AVERAGE_DAYS = 20  # the engine's average IBR / daily range look-back (amt.md §5-§6)


@dataclass(frozen=True, slots=True)
class OptionFillConfig:
    lots: int = 1
    iv: float = 0.14
    rate: float = 0.065
    strike_offset: int = 0  # 0 ATM, +n ITM, -n OTM (listed strikes)
    min_days_to_expiry: int = 0
    slippage: Decimal = Decimal("0.05")
    freeze_qty: int | None = None  # split orders above it; None: feeds.contracts.freeze_qty of the day
    # (session date, underlying spot) -> instrument master rows; default: the generated master
    master: Callable[[date, str, float], list[dict]] | None = None
    # an object with premium(contract, spot, ts_ms) -> Decimal and `modelled` (False for recorded
    # prices, e.g. the web backtests' history-store premiums); default: Black-Scholes at `iv`
    premiums: Any = None


@dataclass(frozen=True, slots=True)
class OptionLeg:
    contract: OptionContract
    quantity: int
    entry_premium: Decimal
    exit_premium: Decimal
    charges: Charges
    modelled: bool = True

    @property
    def gross_pnl(self) -> Decimal:
        return (self.exit_premium - self.entry_premium) * self.quantity

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.charges.total

    def as_dict(self) -> dict[str, Any]:
        return {
            "contract": self.contract.as_dict(),
            "quantity": self.quantity,
            "entry_premium": str(self.entry_premium),
            "exit_premium": str(self.exit_premium),
            "charges": {k: str(v) for k, v in self.charges.rounded().items()},
            "gross_pnl": str(to_paisa(self.gross_pnl)),
            "net_pnl": str(to_paisa(self.net_pnl)),
            "premiums": "modelled (Black-Scholes)" if self.modelled else "traded",
        }


@dataclass(frozen=True, slots=True)
class Trade:
    strategy: str
    instrument_key: str
    side: str
    entry_ts_ms: int
    exit_ts_ms: int
    entry_price: float
    exit_price: float
    pnl_points: float
    entry_reason: str
    exit_reason: str
    stop: float | None = None
    target: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    option: OptionLeg | None = None

    @property
    def session_date(self) -> date:
        return datetime.fromtimestamp(self.entry_ts_ms / 1000, tz=IST).date()

    def as_dict(self) -> dict[str, Any]:
        out = {
            "strategy": self.strategy,
            "instrument_key": self.instrument_key,
            "side": self.side,
            "entry_ts": _iso(self.entry_ts_ms),
            "exit_ts": _iso(self.exit_ts_ms),
            "entry_price": self.entry_price,
            "exit_price": self.exit_price,
            "pnl_points": self.pnl_points,
            "stop": self.stop,
            "target": self.target,
            "entry_reason": self.entry_reason,
            "exit_reason": self.exit_reason,
            "facts": self.facts,
        }
        if self.option is not None:
            out["option"] = self.option.as_dict()
        return out


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=IST).isoformat()


@dataclass(slots=True)
class BacktestResult:
    strategy: str
    instrument_key: str
    params: dict[str, Any]
    fill: str
    sessions: list[date]
    trades: list[Trade]
    signals: list[Signal]
    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        params = {k: (v.strftime("%H:%M") if hasattr(v, "strftime") else v) for k, v in self.params.items()}
        params = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in params.items()}
        return {
            "strategy": self.strategy,
            "instrument_key": self.instrument_key,
            "params": params,
            "fill": self.fill,
            "pnl_unit": "points" if self.fill == UNDERLYING else "INR net of charges (modelled premiums)",
            "sessions": len(self.sessions),
            "from": self.sessions[0].isoformat() if self.sessions else None,
            "to": self.sessions[-1].isoformat() if self.sessions else None,
            "metrics": self.metrics,
            "trades": [t.as_dict() for t in self.trades],
        }


class _OptionExecution:
    """Turns underlying entries/exits into option buys/sells through the PaperBroker."""

    def __init__(self, strategy: str, instrument_key: str, config: OptionFillConfig) -> None:
        from feeds import contracts

        self.strategy = strategy
        self.underlying = contracts.symbol_of(instrument_key)
        self.config = config
        self.model = config.premiums or PremiumModel(config.iv, config.rate)
        self.broker = PaperBroker(
            slippage=config.slippage, square_off_time=None, freeze_qty=config.freeze_qty
        )
        self._masters: dict[date, list[dict]] = {}
        self._open: tuple[OptionContract, int, Decimal, Charges] | None = None
        self._seq = 0

    def _master(self, day: date, spot: float) -> list[dict]:
        if day not in self._masters:
            if self.config.master is not None:
                self._masters[day] = self.config.master(day, self.underlying, spot)
            else:
                from feeds import universe

                self._masters[day] = universe.generate_master(day, spot={self.underlying: spot})
        return self._masters[day]

    def _order(self, contract: OptionContract, side: str, qty: int, spot: float, ts_ms: int):
        """(fill price, charges of all its slices) of a market order for `qty` at the modelled premium."""
        premium = self.model.premium(contract, spot, ts_ms)
        self.broker.on_quote(contract.instrument_key, ts_ms, premium)
        self._seq += 1
        order = self.broker.place(
            OrderRequest(
                f"bt-{self.strategy}-{self._seq}", self.strategy, contract.instrument_key, side, qty, ts_ms
            )
        )
        if not order.fills:
            raise LookupError(f"the paper broker did not fill {contract.trading_symbol}: {order.reason}")
        charges = Charges()
        for fill in order.fills:
            charges = charges + fill.charges
        return order.fills[0].price, charges

    def enter(self, signal: Signal, day: date) -> None:
        contract = select_contract(
            self._master(day, signal.price),
            self.underlying,
            signal.side,
            signal.price,
            day,
            self.config.strike_offset,
            self.config.min_days_to_expiry,
        )
        qty = self.config.lots * contract.lot_size
        from feeds import contracts

        self.broker.freeze_qty = self.config.freeze_qty or contracts.freeze_qty(self.underlying, day)
        price, charges = self._order(contract, BUY, qty, signal.price, signal.ts_ms)
        self._open = (contract, qty, price, charges)

    def exit(self, signal: Signal) -> OptionLeg:
        assert self._open is not None
        contract, qty, entry_premium, entry_charges = self._open
        self._open = None
        price, charges = self._order(contract, SELL, qty, signal.price, signal.ts_ms)
        modelled = getattr(self.model, "modelled", True)
        return OptionLeg(contract, qty, entry_premium, price, entry_charges + charges, modelled)


def run_backtest(
    strategy_cls: type[Strategy],
    series: CandleSeries,
    params: Mapping[str, Any] | None = None,
    fill: str = UNDERLYING,
    options: OptionFillConfig | None = None,
    engine_factory: Callable[[str], Any] | None = None,
    ticks: TickSeries | None = None,
) -> BacktestResult:
    """Run `strategy_cls` with `params` over `series`; ValueError on bad params or fill model.

    With `ticks`, each candle's ticks (ts in [candle start, candle end)) reach the engine (which
    then builds the profile from ticks, not candles) and `strategy.on_tick` before the candle closes
    and `strategy.on_candle` is called: the order in which the live worker sees them."""
    if fill not in FILL_MODELS:
        raise ValueError(f"fill must be one of {', '.join(FILL_MODELS)}")
    key = series.instrument_key
    strategy = strategy_cls(key, params)
    execution = (
        _OptionExecution(strategy.slug, key, options or OptionFillConfig()) if fill == MODELLED else None
    )
    wants_engine = bool(strategy.needs)
    engine = None
    recent_ibr: list[float] = []
    recent_range: list[float] = []
    trades: list[Trade] = []
    signals: list[Signal] = []
    sessions: list[date] = []
    open_entry: Signal | None = None

    ts, op, hi, lo, cl, vol = series.ts_ms, series.open, series.high, series.low, series.close, series.volume

    def handle(batch: list[Signal], day: date) -> None:
        nonlocal open_entry
        for s in batch:
            signals.append(s)
            if s.kind == ENTRY:
                if open_entry is not None:
                    raise RuntimeError(
                        f"{strategy.slug} entered while a position was open at {_iso(s.ts_ms)}"
                    )
                open_entry = s
                if execution is not None:
                    execution.enter(s, day)
            elif s.kind == EXIT and open_entry is not None:
                e, open_entry = open_entry, None
                points = s.price - e.price if e.side == LONG else e.price - s.price
                trades.append(
                    Trade(
                        strategy.slug,
                        key,
                        e.side,
                        e.ts_ms,
                        s.ts_ms,
                        e.price,
                        s.price,
                        round(points, 4),
                        e.reason,
                        s.reason,
                        e.stop,
                        e.target,
                        {"entry": e.facts, "exit": s.facts},
                        execution.exit(s) if execution is not None else None,
                    )
                )

    for day, a, b in series.session_bounds():
        sessions.append(day)
        state = None
        if wants_engine:
            engine = _next_engine(engine, key, engine_factory, recent_ibr, recent_range)
            state = engine.state()
        handle(strategy.on_session_start(day, state), day)
        on_candle = strategy.on_candle
        if ticks is not None:
            state = _run_session_with_ticks(
                strategy, engine, ticks, series, a, b, state, lambda out, day=day: handle(out, day)
            )
            if engine is not None:
                engine.close_session()
                state = engine.state()
        elif engine is None:
            for i in range(a, b):
                out = on_candle(Candle(ts[i], op[i], hi[i], lo[i], cl[i], vol[i]), None)
                if out:
                    handle(out, day)
                if strategy.session_done:
                    break  # nothing more can happen today: skip the rest of the session
        else:
            feed = engine.on_candle
            for i in range(a, b):
                feed(ts[i], op[i], hi[i], lo[i], cl[i], vol[i])
                if strategy.session_done:
                    continue  # the engine still sees the whole day (tomorrow's prior)
                state = engine.state()
                out = on_candle(Candle(ts[i], op[i], hi[i], lo[i], cl[i], vol[i]), state)
                if out:
                    handle(out, day)
            engine.close_session()
            state = engine.state()
        if engine is not None and state is not None:
            if state.ibr is not None:
                recent_ibr.append(state.ibr)
            if state.high is not None and state.low is not None:
                recent_range.append(state.high - state.low)
        last = Candle(ts[b - 1], op[b - 1], hi[b - 1], lo[b - 1], cl[b - 1], vol[b - 1]) if b > a else None
        handle(strategy.on_session_end(last, state), day)
        if open_entry is not None:
            raise RuntimeError(f"{strategy.slug} left a position open at the end of {day.isoformat()}")

    results = [
        TradeResult(
            t.session_date,
            t.option.net_pnl if t.option else Decimal(str(t.pnl_points)),
            t.option.gross_pnl if t.option else Decimal(str(t.pnl_points)),
        )
        for t in trades
    ]
    return BacktestResult(
        strategy.slug,
        key,
        dict(strategy.params),
        fill,
        sessions,
        trades,
        signals,
        compute_metrics(results, sessions),
    )


def _run_session_with_ticks(
    strategy, engine, ticks: TickSeries, series: CandleSeries, a: int, b: int, state, handle
):
    from feeds.ticks import Tick

    key = series.instrument_key
    ts, op, hi, lo, cl, vol = series.ts_ms, series.open, series.high, series.low, series.close, series.volume
    t_ts, t_px, t_qty = ticks.ts_ms, ticks.price, ticks.qty
    n = len(t_ts)
    j = bisect_left(t_ts, ts[a]) if b > a else n
    for i in range(a, b):
        end = ts[i] + 60_000
        first = j
        while j < n and t_ts[j] < end:
            if engine is not None:
                engine.on_tick(t_ts[j], t_px[j], t_qty[j])
                state = engine.state()
            if not strategy.session_done:
                out = strategy.on_tick(Tick(key, t_ts[j], t_px[j], t_qty[j]), state)
                if out:
                    handle(out)
            j += 1
        if engine is not None and j == first:
            # no tick inside this candle: the candle itself keeps the engine's clock and range
            engine.on_candle(ts[i], op[i], hi[i], lo[i], cl[i], vol[i])
            state = engine.state()
        if not strategy.session_done:
            out = strategy.on_candle(Candle(ts[i], op[i], hi[i], lo[i], cl[i], vol[i]), state)
            if out:
                handle(out)
    return state


def _next_engine(engine, key, factory, recent_ibr, recent_range):
    avg_ibr = sum(recent_ibr[-AVERAGE_DAYS:]) / len(recent_ibr[-AVERAGE_DAYS:]) if recent_ibr else None
    avg_range = (
        sum(recent_range[-AVERAGE_DAYS:]) / len(recent_range[-AVERAGE_DAYS:]) if recent_range else None
    )
    if engine is not None:
        return engine.next_session(avg_ibr, avg_range)
    if factory is not None:
        return factory(key)
    from strategies.engine import AuctionEngine, params_for

    return AuctionEngine(params_for(key))
