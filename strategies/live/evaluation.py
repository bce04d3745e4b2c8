"""Live evaluation of one configured strategy, in memory: ticks in, signals and paper orders out.

`LiveStrategy` is what a long-lived strategy worker keeps between tasks (one per configuration):
per instrument a 1-minute candle builder, the auction engine and the strategy instance, and one
`PaperBroker` for the configuration's option positions. It follows the backtest runner's code path
(`strategies.backtest.runner`): per session `on_session_start`, per COMPLETED 1-minute candle
`engine.on_candle` then `strategy.on_candle(candle, state)`, `on_session_end` when the session is
over, the engine rolled with `_next_engine` (prior session, naked POCs, average IBR and range), and
the runner's option settings (`OptionFillConfig`: lots, strike offset, expiry, slippage, IV). So a
live day gives the signals a backtest over the same candles gives (a test holds it to that).

A candle completes when the first tick of a later minute arrives; the signal's stream id is that
tick's (the tick that made the decision possible), which keys the stored signal and makes a
redelivered range harmless. Orders: an entry buys the CE (long) or PE (short) of the listed strike
at the money, or `strike_offset` strikes in/out of it, of the nearest eligible expiry, lots x lot
size from the instrument master; the matching exit (stop, target, square-off by the strategy) sells
it. Every order first passes the injected `gate` (the worker's risk gate, which also stores it);
one the gate refuses never reaches the paper book, so no position opens and the signal that would
have closed it makes no order. Fills come from the PaperBroker: the opposite side of the book when
the option's own tick (from the feed) carries a bid/ask, else last price ± slippage; without a
recent option tick the premium is MODELLED (Black-Scholes at the configured IV) and every order
says which (`premium_source`).
At `square_off` any option position still open is sold (a safety net behind the strategy's own
square-off). Client order ids are derived from (strategy, instrument, stream id, kind), so a
rebuilt worker makes the same ids and the database refuses duplicates.

Pure Python: no Django, Celery or Redis here. Market data for options arrives through an injected
`quotes(instrument_key, deciding_stream_id, deciding_ts_ms) -> Tick | None` (the option's last tick
at or before the deciding tick) and orders pass an injected `gate(order) -> refusal` (see
`OrderGate`); the worker (`strategies.live.worker`) supplies both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from feeds import contracts
from feeds.ticks import IST, Tick
from strategies.backtest.runner import AVERAGE_DAYS, OptionFillConfig, _next_engine
from strategies.base import ENTRY, EXIT, Candle, Signal, Strategy, session_date_of
from strategies.engine import params_for, session_bounds_ms
from strategies.execution.charges import BUY, SELL
from strategies.execution.options import OptionContract, PremiumModel, select_contract
from strategies.execution.paper import FILLED, Fill, OrderRequest, PaperBroker

MINUTE_MS = 60_000
TRADED = "traded"
MODELLED = "modelled"
# An option tick older than this (exchange time) is not a price any more: use the model instead.
STALE_QUOTE_MS = 60_000
DEFAULT_SQUARE_OFF = time(15, 20)

QuoteSource = Callable[[str, str, int], Tick | None]


def client_order_id(slug: str, instrument_key: str, stream_id: str, kind: str) -> str:
    """The bot's id for the order a decision makes: 20 characters of [0-9a-f] after a kind letter,
    the same in every process that makes the same decision (the idempotency key and broker tag)."""
    digest = hashlib.sha1(f"{slug}|{instrument_key}|{stream_id}|{kind}".encode()).hexdigest()
    return {"entry": "E", "exit": "X", "square_off": "Q"}[kind] + digest[:19]


@dataclass(frozen=True, slots=True)
class LiveSignal:
    """A strategy's signal and the stream position of the tick that produced it."""

    signal: Signal
    stream_id: str


@dataclass(frozen=True, slots=True)
class LiveOrder:
    """A paper order a signal (or the square-off) made, with its fill (None when rejected)."""

    client_order_id: str
    instrument_key: str
    side: str
    quantity: int
    ts_ms: int
    contract: OptionContract
    premium_source: str  # TRADED | MODELLED
    reason: str
    signal: LiveSignal | None = None  # None for the square-off
    fill: Fill | None = None
    rejected: str = ""


# Called with an order about to be placed (its fill still None), before the paper book sees it:
# returns "" to let it through, else why it was refused (then the paper book never holds it).
OrderGate = Callable[[LiveOrder], str]


@dataclass(slots=True)
class CandleBuilder:
    """1-minute candles (labelled by their start) from ticks in time order."""

    minute: int = -1
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    close: float = 0.0
    volume: int = 0

    def add(self, ts_ms: int, price: float, qty: int) -> Candle | None:
        """Add a tick; returns the candle it completed (the tick opened a later minute) or None."""
        minute = ts_ms // MINUTE_MS
        if minute == self.minute:
            if price > self.high:
                self.high = price
            elif price < self.low:
                self.low = price
            self.close = price
            self.volume += qty
            return None
        done = self.current()
        if minute < self.minute:
            return None  # a late tick for a finished minute: the candle is already decided
        self.minute, self.open, self.high, self.low, self.close, self.volume = (
            minute,
            price,
            price,
            price,
            price,
            qty,
        )
        return done

    def current(self) -> Candle | None:
        if self.minute < 0:
            return None
        return Candle(self.minute * MINUTE_MS, self.open, self.high, self.low, self.close, self.volume)

    def take(self) -> Candle | None:
        """The candle in progress, as completed now (the session ended); the builder empties."""
        done = self.current()
        self.minute = -1
        return done


@dataclass(slots=True)
class _OpenOption:
    contract: OptionContract
    quantity: int
    entry_id: str


@dataclass(slots=True)
class InstrumentRun:
    """One instrument of a live strategy: candles, engine, strategy, the open entry."""

    instrument_key: str
    strategy: Strategy
    candles: CandleBuilder = field(default_factory=CandleBuilder)
    engine: Any = None
    day: date | None = None
    open_ms: int = 0
    close_ms: int = 0
    session_over: bool = True
    recent_ibr: list[float] = field(default_factory=list)
    recent_range: list[float] = field(default_factory=list)
    completed: list[Candle] = field(default_factory=list)  # today's candles (to retune a strategy)
    last_price: float = 0.0
    last_ts_ms: int = 0
    last_stream_id: str = ""
    option: _OpenOption | None = None
    virtual_entry: bool = False  # entered while not trading (see LiveStrategy.trading)


class LiveStrategy:
    """One configured strategy running live (see the module docstring)."""

    def __init__(
        self,
        slug: str,
        strategy_cls: type[Strategy],
        instruments: Iterable[str],
        params: Mapping[str, Any] | None = None,
        *,
        options: OptionFillConfig | None = None,
        quotes: QuoteSource | None = None,
        square_off: time | None = DEFAULT_SQUARE_OFF,
        version: int = 0,
        gate: OrderGate | None = None,
    ) -> None:
        self.slug = slug
        self.strategy_cls = strategy_cls
        self.params = dict(params or {})
        self.options = options or OptionFillConfig()
        self.quotes = quotes
        self.square_off = square_off
        self.version = version
        self.gate = gate
        self.model = PremiumModel(self.options.iv, self.options.rate)
        # The strategy's own exits and the square-off above close positions; the broker's built-in
        # square-off (with ids too long for a broker tag) stays off.
        self.broker = PaperBroker(slippage=self.options.slippage, square_off_time=None)
        self.runs = {key: InstrumentRun(key, strategy_cls(key, self.params)) for key in instruments}
        self._masters: dict[tuple[date, str], list[dict]] = {}
        self._retune_due: set[str] = set()  # instruments waiting for their position to close
        # Instruments whose state the worker has rebuilt to the stored checkpoint (worker's use).
        self.positioned: set[str] = set()
        # False while the worker replays ticks from before the strategy started trading (enabled
        # mid-session): the strategy learns the day, but nothing it decides then is traded.
        self.trading = True

    def set_options(self, options: OptionFillConfig) -> None:
        """New lots/strike offset/slippage/IV from a configuration change: they apply to the next
        order (an open position keeps its contract and quantity)."""
        self.options = options
        self.model = PremiumModel(options.iv, options.rate)
        self.broker.slippage = Decimal(options.slippage)

    # --- feeding ---------------------------------------------------------------------------------
    def warm_up(self, instrument_key: str, sessions: Iterable[list[Candle]]) -> None:
        """Prior sessions' 1-minute candles (oldest first) through the engine only, so today's
        engine starts with the prior day's value area, naked POCs and average IBR/range."""
        run = self.runs[instrument_key]
        if not run.strategy.needs:
            return
        for candles in sessions:
            if not candles:
                continue
            run.engine = _next_engine(run.engine, instrument_key, None, run.recent_ibr, run.recent_range)
            for c in candles:
                run.engine.on_candle(c.ts_ms, c.open, c.high, c.low, c.close, c.volume)
            self._close_engine(run)

    def on_ticks(
        self, instrument_key: str, entries: Iterable[tuple[str, Tick]]
    ) -> list[LiveSignal | LiveOrder]:
        """Ticks of one instrument in stream order, as (stream id, tick); returns what happened."""
        run = self.runs[instrument_key]
        out: list[LiveSignal | LiveOrder] = []
        for stream_id, tick in entries:
            self._on_tick(run, stream_id, tick, out)
        return out

    def _on_tick(self, run: InstrumentRun, sid: str, tick: Tick, out: list) -> None:
        ts = tick.ts_ms
        run.last_stream_id = sid
        if run.day is None or session_date_of(ts) != run.day:
            if run.day is not None:
                self._end_session(run, sid, out)
            self._start_session(run, session_date_of(ts))
        if run.session_over:
            return
        if ts >= run.close_ms:
            self._end_session(run, sid, out)
            return
        if ts < run.open_ms:
            return  # pre-open: not part of the session's candles (nor the backtest's)
        run.last_price, run.last_ts_ms = tick.ltp, ts
        done = run.candles.add(ts, tick.ltp, tick.ltq)
        if done is not None:
            self._on_candle(run, done, sid, out)
        if self.square_off is not None and run.option is not None:
            if datetime.fromtimestamp(ts / 1000, tz=IST).time() >= self.square_off:
                self._close_option(run, sid, ts, "square_off", "square-off time", None, out)
        if self._retune_due and run.option is None and run.instrument_key in self._retune_due:
            self._swap_strategy(run)

    def _start_session(self, run: InstrumentRun, day: date) -> None:
        if self.day is not None and day > self.day and all(r.option is None for r in self.runs.values()):
            # A new trading day with nothing open: positions and PnL start again from zero (a
            # rebuilt worker, replaying only today, starts there too).
            self.broker = PaperBroker(slippage=self.options.slippage, square_off_time=None)
        run.day = day
        params = run.engine.params if run.engine is not None else params_for(run.instrument_key)
        run.open_ms, run.close_ms = session_bounds_ms(day, params)
        run.candles = CandleBuilder()
        run.completed = []
        run.session_over = False
        state = None
        if run.strategy.needs:
            run.engine = _next_engine(run.engine, run.instrument_key, None, run.recent_ibr, run.recent_range)
            state = run.engine.state()
        # Entries only come from candles; a session start emits nothing for the library's strategies.
        run.strategy.on_session_start(day, state)

    def _on_candle(self, run: InstrumentRun, candle: Candle, sid: str, out: list) -> None:
        run.completed.append(candle)
        state = None
        if run.engine is not None:
            run.engine.on_candle(
                candle.ts_ms, candle.open, candle.high, candle.low, candle.close, candle.volume
            )
            if run.strategy.session_done:
                return  # the engine still sees the whole day (tomorrow's prior), as in the runner
            state = run.engine.state()
        elif run.strategy.session_done:
            return
        self._handle(run, run.strategy.on_candle(candle, state), sid, out)

    def _end_session(self, run: InstrumentRun, sid: str, out: list) -> None:
        if run.session_over:
            return
        last = run.candles.take()
        if last is not None:
            self._on_candle(run, last, sid, out)
        state = None
        if run.engine is not None:
            self._close_engine(run)
            state = run.engine.state()
        last = run.completed[-1] if run.completed else None
        self._handle(run, run.strategy.on_session_end(last, state), sid, out)
        if run.option is not None:
            self._close_option(
                run, sid, run.last_ts_ms or run.close_ms, "square_off", "session end", None, out
            )
        run.session_over = True

    @staticmethod
    def _close_engine(run: InstrumentRun) -> None:
        run.engine.close_session()
        state = run.engine.state()
        if state.ibr is not None:
            run.recent_ibr.append(state.ibr)
        if state.high is not None and state.low is not None:
            run.recent_range.append(state.high - state.low)
        del run.recent_ibr[:-AVERAGE_DAYS], run.recent_range[:-AVERAGE_DAYS]

    # --- signals to orders -----------------------------------------------------------------------
    def _handle(self, run: InstrumentRun, signals: list[Signal], sid: str, out: list) -> None:
        for signal in signals:
            if not self.trading:
                # Learning the session before trading from it: an entry here is not traded, and
                # the exit that closes it later must not be either.
                run.virtual_entry = signal.kind == ENTRY
                continue
            if run.virtual_entry:
                run.virtual_entry = False
                if signal.kind == EXIT:
                    continue
            live = LiveSignal(signal, sid)
            out.append(live)
            if signal.kind == ENTRY and run.option is None:
                self._open_option(run, live, out)
            elif signal.kind == EXIT and run.option is not None:
                self._close_option(run, sid, signal.ts_ms, "exit", signal.reason, live, out)

    def _master(self, day: date, underlying: str, spot: float) -> list[dict]:
        key = (day, underlying)
        if key not in self._masters:
            if self.options.master is not None:
                self._masters[key] = self.options.master(day, underlying, spot)
            else:
                from feeds import universe

                self._masters[key] = universe.generate_master(day, spot={underlying: spot})
        return self._masters[key]

    def _open_option(self, run: InstrumentRun, live: LiveSignal, out: list) -> None:
        s = live.signal
        day = session_date_of(s.ts_ms)
        try:
            # Options are bought on an index's chain: a strategy on another instrument (a future)
            # names no underlying here, and its signals stay signals.
            underlying = contracts.symbol_of(run.instrument_key)
            contract = select_contract(
                self._master(day, underlying, s.price),
                underlying,
                s.side,
                s.price,
                day,
                self.options.strike_offset,
                self.options.min_days_to_expiry,
            )
        except (LookupError, ValueError) as exc:
            out.append(self._rejected(run, live, str(exc)))
            return
        qty = self.options.lots * contract.lot_size
        order = self._order(contract, BUY, qty, s.ts_ms, live.stream_id, "entry", s.reason, live, run)
        out.append(order)
        if order.fill is not None:
            run.option = _OpenOption(contract, qty, live.stream_id)

    def _close_option(
        self, run: InstrumentRun, sid: str, ts_ms: int, kind: str, reason: str, live, out: list
    ) -> None:
        held = run.option
        assert held is not None
        order = self._order(held.contract, SELL, held.quantity, ts_ms, sid, kind, reason, live, run)
        out.append(order)
        if order.fill is not None:
            run.option = None

    def _order(self, contract, side, qty, ts_ms, sid, kind, reason, live, run) -> LiveOrder:
        source = self._quote(contract, sid, run.last_ts_ms or ts_ms, run.last_price or live.signal.price)
        coid = client_order_id(self.slug, run.instrument_key, sid, kind)
        proposed = LiveOrder(coid, contract.instrument_key, side, qty, ts_ms, contract, source, reason, live)
        refused = self.gate(proposed) if self.gate is not None else ""
        if refused:
            return replace(proposed, rejected=refused)
        # Idempotent on the id: the order the gate's paper venue already placed here, if it did.
        placed = self.broker.place(
            OrderRequest(coid, self.slug, contract.instrument_key, side, qty, ts_ms, tag=kind)
        )
        fill = placed.fills[-1] if placed.state == FILLED and placed.fills else None
        return replace(
            proposed, fill=fill, rejected="" if fill is not None else placed.reason or placed.state
        )

    def _rejected(self, run: InstrumentRun, live: LiveSignal, why: str) -> LiveOrder:
        s = live.signal
        contract = OptionContract("", run.instrument_key, "", Decimal(0), s.time.date(), 0)
        return LiveOrder(
            client_order_id(self.slug, run.instrument_key, live.stream_id, "entry"),
            "",
            BUY,
            0,
            s.ts_ms,
            contract,
            MODELLED,
            s.reason,
            live,
            None,
            why,
        )

    def _quote(self, contract: OptionContract, sid: str, ts_ms: int, spot: float) -> str:
        """Give the broker the option's price as of the deciding tick (stream id `sid`, exchange
        time `ts_ms`): the feed's own tick for the contract when it has a recent one, else the
        modelled premium. Returns which it was."""
        tick = self.quotes(contract.instrument_key, sid, ts_ms) if self.quotes is not None else None
        if tick is not None and ts_ms - tick.ts_ms <= STALE_QUOTE_MS and tick.ltp > 0:
            bid = Decimal(str(tick.bid)) if tick.bid > 0 else None
            ask = Decimal(str(tick.ask)) if tick.ask > 0 else None
            self.broker.on_quote(contract.instrument_key, ts_ms, Decimal(str(tick.ltp)), bid, ask)
            return TRADED
        self.broker.on_quote(contract.instrument_key, ts_ms, self.model.premium(contract, spot, ts_ms))
        return MODELLED

    # --- retuning and reporting ------------------------------------------------------------------
    def retune(self, params: Mapping[str, Any], version: int) -> None:
        """New parameters without a restart (ValueError, and nothing changes, when they are bad).

        An instrument with no open position gets a new strategy instance at once. One with an open
        position keeps it: the instance that opened it manages it to its exit with the stop and
        target it was opened with, and the new instance takes over on the first tick after that.
        A new instance is replayed silently over today's completed candles (against the engine's
        state as it is now), so it knows the day so far — the IB, whether it would have traded —
        and decides from the next candle on as if it had run with the new parameters all day,
        without the trades it would have made."""
        for key in self.runs:
            self.strategy_cls(key, params)  # validate before changing anything
        self.params = dict(params)
        self.version = version
        self._retune_due = set(self.runs)
        for run in self.runs.values():
            if run.option is None:
                self._swap_strategy(run)

    def _swap_strategy(self, run: InstrumentRun) -> None:
        self._retune_due.discard(run.instrument_key)
        new = self.strategy_cls(run.instrument_key, self.params)
        if run.day is not None:
            state = run.engine.state() if run.engine is not None else None
            new.on_session_start(run.day, state)
            for candle in run.completed:
                if new.session_done:
                    break
                new.on_candle(candle, state)  # decisions replayed here are not made: discarded
        run.strategy = new

    def mark(self) -> None:
        """Refresh the prices of open option positions (unrealised PnL) from the feed or the model."""
        for run in self.runs.values():
            if run.option is not None and run.last_stream_id:
                self._quote(run.option.contract, run.last_stream_id, run.last_ts_ms, run.last_price)

    def positions(self) -> list[dict[str, Any]]:
        """Open and closed option positions of the day, money as strings (for the dashboard)."""
        out = []
        for pos in self.broker.positions():
            quote = self.broker.quote(pos.instrument_key)
            unrealised = Decimal(0)
            if pos.quantity and quote is not None:
                mark = self.broker.fill_price(pos.instrument_key, SELL if pos.quantity > 0 else BUY)
                unrealised = (mark - pos.average_price) * pos.quantity
            out.append(
                {
                    "instrument_key": pos.instrument_key,
                    "quantity": pos.quantity,
                    "average_price": str(pos.average_price.quantize(Decimal("0.01"))),
                    "last_price": str(quote.ltp) if quote is not None else None,
                    "realised": str(pos.realised.quantize(Decimal("0.01"))),
                    "unrealised": str(unrealised.quantize(Decimal("0.01"))),
                    "charges": str(pos.charges.quantize(Decimal("0.01"))),
                }
            )
        return out

    def pnl(self, day: date) -> dict[str, str]:
        figures = self.broker.daily_pnl(self.slug, day)
        unrealised = self.broker.unrealised(self.slug)
        net = figures["net"] + unrealised
        return {
            "day": day.isoformat(),
            "realised": str(figures["realised"].quantize(Decimal("0.01"))),
            "charges": str(figures["charges"].quantize(Decimal("0.01"))),
            "unrealised": str(unrealised.quantize(Decimal("0.01"))),
            "net": str(net.quantize(Decimal("0.01"))),
        }

    @property
    def day(self) -> date | None:
        days = [run.day for run in self.runs.values() if run.day is not None]
        return max(days) if days else None
