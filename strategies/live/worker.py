"""The strategy worker's process state and the one thing it does: evaluate a claim check.

A strategy worker (`celery worker -Q strategy.<slug> --pool solo -c 1`) keeps one `StrategyWorker`
per process, holding `{slug: LiveStrategy}` in memory. For each `strategies.tasks.evaluate` task:

1. It loads the configuration (one query). Disabled or gone: it forgets the strategy and does
   nothing. A new `version` with the same class and instruments retunes the running strategy
   (`LiveStrategy.retune`: an open position is kept, with its stop and target); another class or
   instrument list rebuilds it.
2. On the first task after a start (or a rebuild) it reconstructs the in-memory state: the prior
   sessions' 1-minute candles from the history store warm the engine; then today's ticks are
   replayed silently up to the stored checkpoint (`StrategyCheckpoint`) — from the Redis stream,
   and from the history store for the part of the session the stream no longer holds. What the
   replay decides is already stored and is discarded; open option positions come back as they were.
   A strategy that starts trading mid-session (just enabled, switched off and on again, or a new
   instrument) learns the session so far up to the start of its first range without trading it —
   an entry it would have made then is not traded, nor is that entry's exit — and the audit log
   records where it started (`strategy.trading_from`), so a later rebuild draws the same line.
3. It reads each named stream from its last processed id (exclusive) up to the end of the task's
   range (`XRANGE`), so a lost or expired task only delays ticks, never skips them, and a
   redelivered task (ids at or below the checkpoint) reads nothing: a no-op.
4. Reading, evaluating and storing the signals, orders and new checkpoints are ONE transaction;
   if it fails the in-memory strategy is dropped (it is ahead of the database) and rebuilt by the
   next task. An order takes the one order path the moment the strategy makes it, before the paper
   book sees it (`LiveStrategy.gate`): `strategies.execution.orders.submit_strategy_order` — risk
   gate under the account's order lock, rows written, then the strategy's own paper broker (which
   fills it in this process's book) or Upstox when the strategy is live (sent after the commit;
   the paper book then shadows it), then the state machine (`services.order_transition` /
   `record_fill`, which keep positions per strategy and day). An order the gate refuses is stored
   REJECTED with the rule and never reaches the paper book: no position opens, the exit signal
   that would have closed it makes no order, and a rebuild (whose replay asks the stored decisions,
   `orders.risk_refusal`) draws the same book. The positions and PnL pushed to the dashboard are
   read from the database (`book_figures`), the paper book only marking open quantities.
5. After the commit (`transaction.on_commit`) one message goes to the Channels group
   `feeds.groups.STRATEGY_GROUP` (`strategy_update_message` documents its shape), when something
   happened or at most once a second otherwise: one `async_to_sync(group_send)` per task, never
   per tick.

Option prices: the feed's own ticks for the contract (`ticks:<option key>`, read as of the
deciding tick's stream id, so a rebuild sees the same price) when it streams them, else modelled.
The option chain comes from the generated master (the sim's contracts) or, when the feed is Upstox,
from the loaded instrument master (`feeds.models.Instrument`).

Never place a live (Upstox) order here: this is the paper path. Never block on Channels inside the
transaction.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings
from django.db import transaction

from feeds.groups import STRATEGY_GROUP, tick_stream_key
from feeds.ticks import IST, Tick, unpack_tick
from strategies.backtest.runner import OptionFillConfig
from strategies.base import Candle, session_date_of
from strategies.execution.charges import BUY, SELL
from strategies.live.evaluation import LiveOrder, LiveSignal, LiveStrategy

if TYPE_CHECKING:
    from strategies.models import Signal

log = logging.getLogger(__name__)

XRANGE_CHUNK = 5_000
PRIOR_DAYS = 45  # calendar days of stored candles read to warm the engine (~30 sessions)
PUSH_IDLE_EVERY_S = 1.0
MONEY = Decimal("0.01")
# Audit action marking where a strategy started trading on a stream (enabled mid-session).
TRADING_FROM = "strategy.trading_from"
MAX_SEQ = 18446744073709551615  # the largest sequence part of a stream id
# Option entries looked through (newest first) for the last one before the deciding tick: a
# flat-out replay writes minutes of ticks in one millisecond.
QUOTE_PAGE = 500
QUOTE_PAGES = 20
CHARGE_PLACES = Decimal("0.0001")


def stream_position(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class Evaluation:
    """What one task did (also the task's log line)."""

    slug: str
    ticks: int = 0
    signals: list = field(default_factory=list)  # stored now (models.Signal)
    orders: list = field(default_factory=list)  # stored now (models.Order)
    rebuilt: bool = False
    retuned: bool = False
    skipped: str = ""
    checkpoints: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "ticks": self.ticks,
            "signals": len(self.signals),
            "orders": len(self.orders),
            "rebuilt": self.rebuilt,
            "retuned": self.retuned,
            "skipped": self.skipped,
            "checkpoints": self.checkpoints,
        }


@dataclass(slots=True)
class _Batch:
    """What one task has stored so far, while its transaction is open."""

    config: Any
    live: LiveStrategy
    result: Evaluation
    signals: dict[tuple[str, str, str], Signal] = field(default_factory=dict)  # by (key, stream id, kind)
    orders: dict[str, Any] = field(default_factory=dict)  # client order id -> Order decided now


def _stored_decision(order: LiveOrder) -> str:
    """The gate while replaying ticks whose orders are already stored: the risk gate's refusal
    then ("" when it let the order through, or for an order never stored)."""
    from strategies.execution.orders import risk_refusal

    return risk_refusal(order.client_order_id)


def _raw_entries(response, **options):
    return response or []


def _tick_of(fields) -> Tick:
    """The tick in a raw stream entry's field list [b"t", packed]."""
    return unpack_tick(fields[1])


def option_master(day: date, underlying: str, spot: float) -> list[dict]:
    """The option chain to choose from: the loaded Upstox master when the feed is Upstox (its
    contract keys are the ones it streams), else the generated master the simulator uses."""
    if settings.FEED_SOURCE == "upstox":
        from feeds.models import Instrument

        rows = Instrument.objects.filter(
            name__iexact=underlying, instrument_type__in=("CE", "PE"), expiry__gte=day
        ).values("instrument_key", "instrument_type", "strike", "expiry", "lot_size", "trading_symbol")
        master = [
            {
                "instrument_key": r["instrument_key"],
                "instrument_type": r["instrument_type"],
                "strike_price": float(r["strike"] or 0),
                "expiry": r["expiry"].isoformat(),
                "lot_size": r["lot_size"],
                "trading_symbol": r["trading_symbol"],
                "underlying_symbol": underlying,
                "name": underlying,
            }
            for r in rows
        ]
        if master:
            return master
    from feeds import universe

    return universe.generate_master(day, spot={underlying: spot})


class StrategyWorker:
    """The live strategies of one worker process (see the module docstring)."""

    def __init__(self, redis_client, *, channel_layer=None, history_root=None) -> None:
        # A client of our own over the caller's pool: stream replies stay raw nested lists (redis-py
        # would build a dict per entry, ~13 us each, more than decoding the tick itself).
        self.redis = redis.Redis(connection_pool=redis_client.connection_pool)
        for command in ("XRANGE", "XREVRANGE"):
            self.redis.set_response_callback(command, _raw_entries)
        self.layer = channel_layer
        self.history_root = history_root
        self.live: dict[str, LiveStrategy] = {}
        self._last_push: dict[str, float] = {}

    # --- the task ------------------------------------------------------------------------------
    def evaluate(self, slug: str, ranges: dict[str, Any], *, prefix: str = "") -> Evaluation:
        from strategies.models import StrategyConfig

        result = Evaluation(slug)
        config = StrategyConfig.objects.filter(slug=slug).first()
        if config is None or not config.enabled:
            self.live.pop(slug, None)
            result.skipped = "disabled" if config is not None else "unknown strategy"
            return result
        live = self.live.get(slug)
        if live is not None and live.version != config.version:
            if self._same_shape(live, config):
                try:
                    live.retune(config.parameters, config.version)
                    live.set_options(self._options(config))
                    result.retuned = True
                except ValueError as exc:
                    log.error("strategy %s: new parameters refused (%s); keeping the old ones", slug, exc)
                    live.version = config.version
            else:
                live = None
        if live is None:
            self.live.pop(slug, None)
            live = self._rebuild(config, ranges, prefix)
            self.live[slug] = live
            result.rebuilt = True
        batch = _Batch(config, live, result)
        try:
            with transaction.atomic():
                live.gate = functools.partial(self._submit, batch)
                try:
                    events, upto = self._read_and_evaluate(live, config, ranges, prefix)
                finally:
                    live.gate = _stored_decision
                result.ticks = sum(n for n, _ in upto.values())
                if not events and not upto:
                    return result
                self._store(batch, events, upto, prefix)
        except BaseException:
            # The in-memory state may be ahead of the database now: rebuild it next time.
            self.live.pop(slug, None)
            raise
        return result

    @staticmethod
    def _same_shape(live: LiveStrategy, config) -> bool:
        return live.strategy_cls is config.strategy() and list(live.runs) == list(config.instruments)

    @staticmethod
    def _options(config) -> OptionFillConfig:
        return OptionFillConfig(
            lots=config.lots,
            iv=float(getattr(settings, "PAPER_OPTION_IV", 0.14)),
            strike_offset=int(getattr(settings, "PAPER_STRIKE_OFFSET", 0)),
            min_days_to_expiry=int(getattr(settings, "PAPER_MIN_DAYS_TO_EXPIRY", 0)),
            slippage=Decimal(str(getattr(settings, "PAPER_SLIPPAGE", "0.05"))),
            master=option_master,
        )

    def _new_live(self, config, prefix: str) -> LiveStrategy:
        return LiveStrategy(
            config.slug,
            config.strategy(),
            config.instruments,
            config.parameters,
            options=self._options(config),
            quotes=self._quote_source(prefix),
            square_off=dt_time.fromisoformat(getattr(settings, "SQUARE_OFF_TIME", "15:20")),
            version=config.version,
            gate=_stored_decision,
        )

    def _quote_source(self, prefix: str):
        def last_tick(instrument_key: str, deciding_id: str, deciding_ts_ms: int) -> Tick | None:
            """The option's last tick at or before the deciding tick, by exchange time. Stream ids
            cannot be compared across streams (a flush's XADDs share one millisecond, each stream
            numbering its own), so look at everything up to the end of the deciding tick's
            millisecond, which the feed had finished writing before it sent the task: the same
            answer in every process, at any later time."""
            ms = stream_position(deciding_id)[0]
            key = prefix + tick_stream_key(instrument_key)
            upper = f"{ms}-{MAX_SEQ}"
            for _ in range(QUOTE_PAGES):
                rows = self.redis.xrevrange(key, max=upper, min="-", count=QUOTE_PAGE)
                for _, fields in rows:
                    tick = _tick_of(fields)
                    if tick.ts_ms <= deciding_ts_ms:
                        return tick
                if len(rows) < QUOTE_PAGE:
                    return None
                upper = f"({_text(rows[-1][0])}"
            return None

        return last_tick

    # --- reading -------------------------------------------------------------------------------
    def _xrange(self, key: str, after: str | None, upto: str):
        """Entries of `key` after `after` (exclusive; None = from the start) up to `upto`."""
        start = f"({after}" if after else "-"
        while True:
            rows = self.redis.xrange(key, min=start, max=upto, count=XRANGE_CHUNK)
            if not rows:
                return
            yield [(_text(sid), _tick_of(fields)) for sid, fields in rows]
            if len(rows) < XRANGE_CHUNK:
                return
            start = f"({_text(rows[-1][0])}"

    def _read_and_evaluate(self, live: LiveStrategy, config, ranges: dict[str, Any], prefix: str):
        events: list[LiveSignal | LiveOrder] = []
        upto: dict[str, tuple[int, str]] = {}
        reads = []  # (instrument, stream key, last wanted id)
        for key in config.instruments:
            stream_key = prefix + tick_stream_key(key)
            wanted = ranges.get(stream_key)
            if not wanted:
                continue
            last_wanted = str(wanted[1])
            if key not in live.positioned:
                self._position(live, config, key, ranges, prefix)
            run = live.runs[key]
            if run.last_stream_id and stream_position(last_wanted) <= stream_position(run.last_stream_id):
                continue  # a redelivered or repeated range: already evaluated and stored
            reads.append((key, stream_key, last_wanted))
        if not reads:
            return events, upto
        # The first page of every stream in one round trip; long backlogs page on per stream.
        pipe = self.redis.pipeline(transaction=False)
        for key, stream_key, last_wanted in reads:
            after = live.runs[key].last_stream_id
            pipe.xrange(stream_key, min=f"({after}" if after else "-", max=last_wanted, count=XRANGE_CHUNK)
        for (key, stream_key, last_wanted), rows in zip(reads, pipe.execute(), strict=True):
            run = live.runs[key]
            chunk = [(_text(sid), _tick_of(fields)) for sid, fields in rows or []]
            events.extend(live.on_ticks(key, chunk))
            n = len(chunk)
            if n == XRANGE_CHUNK:
                for more in self._xrange(stream_key, run.last_stream_id, last_wanted):
                    events.extend(live.on_ticks(key, more))
                    n += len(more)
            if n:
                upto[stream_key] = (n, run.last_stream_id)
        if upto:
            live.mark()
        return events, upto

    # --- rebuilding ----------------------------------------------------------------------------
    def _rebuild(self, config, ranges: dict[str, Any], prefix: str) -> LiveStrategy:
        live = self._new_live(config, prefix)
        for key in config.instruments:
            self._position(live, config, key, ranges, prefix)
        return live

    def _position(self, live: LiveStrategy, config, key: str, ranges: dict[str, Any], prefix: str) -> None:
        """Bring one instrument's state to where the database says it is (see the module doc),
        its replayed orders passing or failing the gate as they did when they were stored."""
        gate, live.gate = live.gate, _stored_decision
        try:
            self._replay(live, config, key, ranges, prefix)
        finally:
            live.gate = gate

    def _replay(self, live: LiveStrategy, config, key: str, ranges: dict[str, Any], prefix: str) -> None:
        """Replay one instrument up to its checkpoint. Left unpositioned (till a task names its
        stream) when it has neither checkpoint nor range."""
        from strategies.models import AuditEvent, StrategyCheckpoint
        from strategies.services import record_audit

        stream_key = prefix + tick_stream_key(key)
        row = StrategyCheckpoint.objects.filter(strategy=config, stream_key=stream_key).first()
        audit = AuditEvent.objects.filter(object_type="strategyconfig", object_id=str(config.pk))
        # Switched off and on again since its last evaluation: the ticks in between were never its.
        restarted = (
            row is not None and audit.filter(action="strategy.enabled", ts__gt=row.updated_at).exists()
        )
        if row is None or restarted:
            wanted = ranges.get(stream_key)
            if not wanted:
                return
            # Starts trading now: learn the session so far, trade from this range on.
            trading_from = str(wanted[0])
            record_audit(
                actor=config,
                action=TRADING_FROM,
                obj=config,
                detail={"stream_key": stream_key, "stream_id": trading_from},
            )
            first = stream_position(trading_from)
            replay_to = f"{first[0]}-{first[1] - 1}" if first[1] else f"{first[0] - 1}-{MAX_SEQ}"
            checkpoint = None
        else:
            checkpoint = replay_to = row.last_stream_id
            started = (
                audit.filter(action=TRADING_FROM).order_by("-ts", "-id").values_list("detail", flat=True)
            )
            trading_from = next((d["stream_id"] for d in started if d.get("stream_key") == stream_key), None)
        live.positioned.add(key)
        latest = self.redis.xrevrange(stream_key, max=replay_to, min="-", count=1)
        if not latest:
            if checkpoint is not None:
                live.runs[key].last_stream_id = checkpoint
            # Nothing to replay (the worker was up before the session's first tick): the engine
            # still starts from the stored prior sessions, as it does after a replay and in the
            # backtest (without them no prior value area: engine strategies never trade).
            upcoming = self.redis.xrange(stream_key, min=f"({replay_to}", max="+", count=1)
            if upcoming:
                day = session_date_of(_tick_of(upcoming[0][1]).ts_ms)
                live.warm_up(key, self._prior_sessions(key, day))
            return
        day = session_date_of(_tick_of(latest[0][1]).ts_ms)
        live.warm_up(key, self._prior_sessions(key, day))
        replayed = 0
        first_ms = None
        for chunk in self._xrange(stream_key, None, replay_to):
            today = [(sid, t) for sid, t in chunk if session_date_of(t.ts_ms) == day]
            if not today:
                continue
            if first_ms is None:
                first_ms = today[0][1].ts_ms
                stored = self._stored_ticks_before(key, day, first_ms)
                if stored:
                    live.trading = trading_from is None
                    live.on_ticks(key, stored)
                    live.trading = True
            if trading_from is None:
                live.on_ticks(key, today)  # what it decided is already stored: discard
            else:
                start_at = stream_position(trading_from)
                before = [e for e in today if stream_position(e[0]) < start_at]
                live.trading = False
                live.on_ticks(key, before)
                live.trading = True
                live.on_ticks(key, today[len(before) :])
            replayed += len(today)
        live.runs[key].last_stream_id = _text(latest[0][0])
        log.info(
            "strategy %s rebuilt on %s: %d ticks of %s replayed up to %s",
            config.slug,
            key,
            replayed,
            day.isoformat(),
            replay_to,
        )

    def _prior_sessions(self, instrument_key: str, day: date) -> list[list[Candle]]:
        """Stored 1-minute candles of the sessions before `day`, grouped by session, oldest first."""
        from persistence.readers import read_candles_1m

        try:
            table = read_candles_1m(
                instrument_key, day - timedelta(days=PRIOR_DAYS), day - timedelta(days=1), self.history_root
            )
        except Exception as exc:  # no store yet (a fresh install): start without a prior day
            log.info("no stored candles for %s before %s (%s)", instrument_key, day, exc.__class__.__name__)
            return []
        sessions: dict[date, list[Candle]] = defaultdict(list)
        columns = [table[name].to_pylist() for name in ("open", "high", "low", "close", "volume")]
        for ts, o, h, lo, c, v in zip(table["ts"].cast("int64").to_pylist(), *columns, strict=True):
            sessions[session_date_of(ts)].append(Candle(ts, o, h, lo, c, v or 0))
        return [sessions[d] for d in sorted(sessions)]

    def _stored_ticks_before(self, instrument_key: str, day: date, before_ms: int) -> list[tuple[str, Tick]]:
        """The session's ticks the stream no longer holds (trimmed), from the history store."""
        from persistence.readers import read_ticks

        try:
            table = read_ticks(instrument_key, day, day, self.history_root)
        except Exception:
            return []
        out = []
        cols = {name: table[name].to_pylist() for name in ("ts_ms", "ltp", "ltq", "volume")}
        for i, ts in enumerate(cols["ts_ms"]):
            if ts >= before_ms:
                break
            out.append(
                ("0-0", Tick(instrument_key, ts, cols["ltp"][i], cols["ltq"][i] or 0, cols["volume"][i] or 0))
            )
        return out

    # --- storing -------------------------------------------------------------------------------
    def _submit(self, batch: _Batch, order: LiveOrder) -> str:
        """The gate of a task's orders (`LiveStrategy.gate`), inside its transaction: the signal
        behind the order is stored first, then the order takes the one order path (H10): risk gate
        -> broker (the strategy's own paper broker, filling it in this process's book, or Upstox
        when live: sent after the commit) -> state machine, audited. Returns the gate's refusal."""
        from strategies.execution.orders import risk_refusal, submit_strategy_order

        signal = self._store_signal(batch, order.signal) if order.signal is not None else None
        submitted = submit_strategy_order(
            strategy=batch.config,
            paper=batch.live.broker,
            client_order_id=order.client_order_id,
            instrument_key=order.instrument_key,
            side=order.side.upper(),
            quantity=order.quantity,
            signal=signal,
            reason=order.reason,
            reduce_only=order.signal is None or order.signal.signal.kind != "entry",
            now=datetime.fromtimestamp(order.ts_ms / 1000, tz=IST),
            lot_size=order.contract.lot_size,
            detail={
                "reason": order.reason,
                "premium_source": order.premium_source,
                "trading_symbol": order.contract.trading_symbol,
            },
        )
        if submitted.decision is None:  # stored before (a redelivery): as it was decided then
            return risk_refusal(order.client_order_id)
        batch.orders[order.client_order_id] = submitted.orders[0]
        return "" if submitted.decision.allowed else submitted.decision.reason

    @staticmethod
    def _store_signal(batch: _Batch, event: LiveSignal) -> Signal:
        from strategies import services

        key = (event.signal.instrument_key, event.stream_id, event.signal.kind)
        if key not in batch.signals:
            row, created = services.record_signal(
                batch.config, **services.signal_record(event.signal, stream_id=event.stream_id)
            )
            batch.signals[key] = row
            if created:
                batch.result.signals.append(row)
        return batch.signals[key]

    def _store(self, batch: _Batch, events, upto, prefix: str) -> None:
        """The rest of the task, in its transaction: signals that made no order, the orders decided
        (for the dashboard), the checkpoints, and the dashboard message after the commit."""
        from strategies import services

        config, result = batch.config, batch.result
        for event in events:
            if isinstance(event, LiveSignal):
                self._store_signal(batch, event)
            elif event.client_order_id in batch.orders:
                result.orders.append((batch.orders[event.client_order_id], event))
            elif event.quantity <= 0:
                log.warning("strategy %s: no option order for a signal: %s", config.slug, event.rejected)
        for stream_key, (_, last_id) in upto.items():
            services.advance_checkpoint(config, stream_key=stream_key, last_stream_id=last_id)
            result.checkpoints[stream_key] = last_id
        message = self._message_if_due(config, batch.live, result, prefix)
        if message is not None:
            transaction.on_commit(lambda: self.push(message, prefix))

    # --- pushing -------------------------------------------------------------------------------
    def _message_if_due(self, config, live: LiveStrategy, result: Evaluation, prefix: str) -> dict | None:
        now = time.monotonic()
        if (
            not result.signals
            and not result.orders
            and now - self._last_push.get(config.slug, 0) < PUSH_IDLE_EVERY_S
        ):
            return None
        self._last_push[config.slug] = now
        return strategy_update_message(config, live, result)

    def push(self, message: dict, prefix: str = "") -> None:
        if self.layer is None:
            return
        from asgiref.sync import async_to_sync

        try:
            async_to_sync(self.layer.group_send)(prefix + STRATEGY_GROUP, message)
        except Exception as exc:  # the dashboard is a view: never fail the evaluation over it
            log.warning(
                "strategy %s: dashboard push failed (%s)", message.get("slug"), exc.__class__.__name__
            )


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(Decimal(value).quantize(MONEY))


def strategy_update_message(config, live: LiveStrategy, result: Evaluation) -> dict[str, Any]:
    """The `strategy.update` message the dashboard renders as one panel per strategy:

    {"type": "strategy.update", "slug", "strategy_class", "mode": "paper"|"live", "version",
     "ts_ms": wall clock ms, "last_tick_ms": exchange ms of the last tick evaluated,
     "signals": [new signals: {"id", "ts" (ISO, IST), "instrument_key", "side": long|short,
                 "kind": entry|exit, "price", "stop", "target" (strings or null), "reason", "stream_id"}],
     "orders": [new orders: {"client_order_id", "instrument_key", "trading_symbol", "side": BUY|SELL,
                "quantity", "state", "average_price", "charges" (strings), "premium_source":
                traded|modelled, "reason", "ts" (ISO)}],
     "positions": [the day's positions as stored: {"instrument_key", "quantity" (signed), "average_price",
                   "last_price", "realised", "unrealised", "charges"}],
     "pnl": {"day", "realised", "charges", "unrealised", "net"}}   money as strings of rupees, 2 places.

    `signals`/`orders` carry only what this task stored (append them to the panel); `positions` and
    `pnl` are the full current figures (replace them)."""
    last_tick_ms = max((run.last_ts_ms for run in live.runs.values()), default=0)
    day = live.day or datetime.now(IST).date()
    return {
        "type": "strategy.update",
        "slug": config.slug,
        "strategy_class": config.strategy_class,
        "mode": config.mode,
        "version": config.version,
        "ts_ms": int(time.time() * 1000),
        "last_tick_ms": last_tick_ms,
        "signals": [
            {
                "id": s.pk,
                "ts": s.ts.astimezone(IST).isoformat(),
                "instrument_key": s.instrument_key,
                "side": s.side,
                "kind": s.kind,
                "price": _money(s.price),
                "stop": _money(s.stop),
                "target": _money(s.target),
                "reason": s.reason,
                "stream_id": s.stream_id,
            }
            for s in result.signals
        ],
        "orders": [
            {
                "client_order_id": order.client_order_id,
                "instrument_key": order.instrument_key,
                "trading_symbol": event.contract.trading_symbol,
                "side": order.side,
                "quantity": order.quantity,
                "state": order.state,
                "average_price": _money(order.average_price),
                "charges": _money(event.fill.charges.total) if event.fill is not None else "0.00",
                "premium_source": event.premium_source,
                "reason": event.reason,
                "ts": datetime.fromtimestamp(event.ts_ms / 1000, tz=IST).isoformat(),
            }
            for order, event in result.orders
        ],
        **book_figures(config, live, day),
    }


def book_figures(config, live: LiveStrategy, day: date) -> dict[str, Any]:
    """The day's positions and PnL as the database holds them (what the orders that passed the risk
    gate filled), open quantities marked at the paper book's latest price for the contract."""
    from strategies.selectors import positions_for_day

    positions, realised, charges, unrealised = [], Decimal(0), Decimal(0), Decimal(0)
    for p in positions_for_day(day, config).order_by("instrument_key"):
        quote = live.broker.quote(p.instrument_key)
        marked = Decimal(0)
        if p.net_quantity and quote is not None and p.average_price is not None:
            mark = live.broker.fill_price(p.instrument_key, SELL if p.net_quantity > 0 else BUY)
            marked = (mark - p.average_price) * p.net_quantity
        positions.append(
            {
                "instrument_key": p.instrument_key,
                "quantity": p.net_quantity,
                "average_price": _money(p.average_price),
                "last_price": str(quote.ltp) if quote is not None else None,
                "realised": _money(p.realised_pnl),
                "unrealised": _money(marked),
                "charges": _money(p.charges),
            }
        )
        realised += p.realised_pnl
        charges += p.charges
        unrealised += marked
    return {
        "positions": positions,
        "pnl": {
            "day": day.isoformat(),
            "realised": _money(realised),
            "charges": _money(charges),
            "unrealised": _money(unrealised),
            "net": _money(realised - charges + unrealised),
        },
    }


_worker: StrategyWorker | None = None


def _sqlite_commits_without_fsync(sender, connection, **kwargs) -> None:
    # WAL + synchronous=NORMAL: a crashed process loses nothing and the file never corrupts; only a
    # power cut can drop the last commits. A full fsync per claim check (~10 ms here) would be most
    # of a worker's time. PostgreSQL keeps its own settings.
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=NORMAL")


def prepare_worker_process() -> None:
    """Database settings for a long-lived strategy worker (one thread, ten tasks a second): keep
    the connection between tasks (Celery closes it after each task when CONN_MAX_AGE is 0) and, on
    SQLite, commit without a full fsync."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    for alias in connections:
        connections[alias].settings_dict["CONN_MAX_AGE"] = 600
        connections[alias].settings_dict["CONN_HEALTH_CHECKS"] = True
        connections[alias].close()
    connection_created.connect(_sqlite_commits_without_fsync, dispatch_uid="strategy-worker-sqlite")


def process_worker() -> StrategyWorker:
    """This process's StrategyWorker (created on first use, with the project's Redis and layer)."""
    global _worker
    if _worker is None:
        from channels.layers import get_channel_layer

        _worker = StrategyWorker(
            redis.Redis.from_url(settings.REDIS_URL),
            channel_layer=get_channel_layer(),
            history_root=settings.HISTORY_DIR,
        )
    return _worker
