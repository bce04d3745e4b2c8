"""The strategy worker on real Redis streams and the real database: claim checks in, signals,
paper orders, fills, positions and checkpoints out; redelivery is a no-op; a restarted worker
rebuilds its state and ends where an uninterrupted one does; parameter changes reach a running
worker; option fills use the feed's option ticks; the dashboard gets one message per batch."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from functools import cache

import pytest

from feeds.groups import STRATEGY_GROUP, tick_stream_key
from feeds.sim import SimSession
from feeds.ticks import pack_tick
from strategies import services
from strategies.library import REGISTRY
from strategies.live.evaluation import LiveOrder, LiveSignal, LiveStrategy
from strategies.live.worker import StrategyWorker
from strategies.models import Fill, Order, OrderState, Position, Signal, StrategyCheckpoint

DAY = date(2025, 12, 2)  # the simulated Nifty breaks out of its IB upwards: ib_breakout buys a CE
NIFTY = "NSE_INDEX|Nifty 50"
TASK_TICKS = 700  # index ticks named by one claim check (the feed sends one about every 100 ms)


@cache
def session_ticks() -> tuple:
    """The day's Nifty ticks plus the ticks of the options ib_breakout trades on it."""
    index = list(SimSession(DAY, [NIFTY]).ticks())
    dry = LiveStrategy("dry", REGISTRY["ib_breakout"], [NIFTY])
    orders = [
        e
        for e in dry.on_ticks(NIFTY, [(f"{i}-0", t) for i, t in enumerate(index)])
        if isinstance(e, LiveOrder)
    ]
    options = sorted({o.instrument_key for o in orders})
    assert options, "the chosen day must trade"
    return tuple(SimSession(DAY, [NIFTY, *options]).ticks()), tuple(options)


def publish(client, prefix: str, ticks) -> dict[str, list[str]]:
    """XADD the ticks in order, as the feed does; the stream ids written, per instrument."""
    ids: dict[str, list[str]] = {}
    for start in range(0, len(ticks), 5000):
        chunk = ticks[start : start + 5000]
        pipe = client.pipeline(transaction=False)
        for t in chunk:
            pipe.xadd(prefix + tick_stream_key(t.instrument_key), {"t": pack_tick(t)})
        for t, sid in zip(chunk, pipe.execute(), strict=True):
            ids.setdefault(t.instrument_key, []).append(sid.decode())
    return ids


def claim_checks(prefix: str, index_ids: list[str]):
    """The `ranges` of successive evaluate tasks over the index stream."""
    key = prefix + tick_stream_key(NIFTY)
    for start in range(0, len(index_ids), TASK_TICKS):
        chunk = index_ids[start : start + TASK_TICKS]
        yield {key: [chunk[0], chunk[-1]]}


def make_config(slug: str, **parameters):
    return services.create_strategy_config(
        slug=slug,
        strategy_class="ib_breakout",
        instruments=[NIFTY],
        capital=Decimal("500000"),
        max_daily_loss=Decimal("5000"),
        parameters=parameters,
        enabled=True,
        actor="test",
    )


def stored(config) -> dict:
    """What the database holds for a strategy, in comparable form."""
    return {
        "signals": list(
            Signal.objects.filter(strategy=config)
            .order_by("ts", "kind")
            .values_list("instrument_key", "ts", "side", "kind", "price", "stop", "target", "stream_id")
        ),
        "orders": list(
            Order.objects.filter(strategy=config)
            .order_by("created_at", "id")
            .values_list("instrument_key", "side", "quantity", "state", "average_price", "filled_quantity")
        ),
        "fills": list(
            Fill.objects.filter(order__strategy=config)
            .order_by("ts")
            .values_list("quantity", "price", "charges")
        ),
        "positions": list(
            Position.objects.filter(strategy=config).values_list(
                "instrument_key", "trading_day", "net_quantity", "realised_pnl", "charges"
            )
        ),
    }


@pytest.mark.django_db
def test_worker_stores_what_the_strategy_decides_and_redelivery_is_a_no_op(redis_client, prefix):
    ticks, options = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    config = make_config("live-a")
    worker = StrategyWorker(redis_client)
    checks = list(claim_checks(prefix, ids[NIFTY]))
    for ranges in checks:
        worker.evaluate("live-a", ranges, prefix=prefix)

    # The same decisions as the strategy evaluated purely, in memory.
    pure = LiveStrategy("live-a", REGISTRY["ib_breakout"], [NIFTY])
    events = pure.on_ticks(
        NIFTY,
        [
            (sid, t)
            for sid, t in zip(ids[NIFTY], (t for t in ticks if t.instrument_key == NIFTY), strict=True)
        ],
    )
    pure_signals = [e for e in events if isinstance(e, LiveSignal)]
    got = stored(config)
    assert [(s[2], s[3], s[7]) for s in got["signals"]] == [
        (e.signal.side, e.signal.kind, e.stream_id) for e in pure_signals
    ]
    assert [s[3] for s in got["signals"]] == ["entry", "exit"]
    # A long signal bought the listed CE (lots x lot size), the exit sold it; both filled.
    (buy, sell) = Order.objects.filter(strategy=config).order_by("created_at", "id")
    assert (buy.side, sell.side) == ("BUY", "SELL")
    assert buy.instrument_key == sell.instrument_key == options[0]
    assert buy.quantity == sell.quantity == 75  # one Nifty lot in Dec 2025
    assert buy.state == sell.state == OrderState.FILLED
    assert buy.signal.kind == "entry" and sell.signal.kind == "exit"
    (position,) = Position.objects.filter(strategy=config)
    assert position.net_quantity == 0
    assert position.realised_pnl == (sell.average_price - buy.average_price) * 75
    assert position.charges > 0
    checkpoint = StrategyCheckpoint.objects.get(strategy=config)
    assert checkpoint.last_stream_id == ids[NIFTY][-1]

    # Every claim check delivered again (acks_late redelivery, or a repeated range): nothing new.
    before = stored(config)
    for ranges in checks:
        result = worker.evaluate("live-a", ranges, prefix=prefix)
        assert result.ticks == 0 and not result.signals and not result.orders
    assert stored(config) == before
    # A fresh process (no memory) given an old range also does nothing.
    fresh = StrategyWorker(redis_client)
    result = fresh.evaluate("live-a", checks[3], prefix=prefix)
    assert result.rebuilt and result.ticks == 0
    assert stored(config) == before


@pytest.mark.django_db
@pytest.mark.parametrize("stop_after", [5, 17])
def test_restarted_worker_rebuilds_and_matches_an_uninterrupted_run(redis_client, prefix, stop_after):
    """A worker killed after `stop_after` tasks (its memory gone, its uncommitted task redelivered)
    ends with exactly the records of a worker that ran the whole session."""
    ticks, _ = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    checks = list(claim_checks(prefix, ids[NIFTY]))
    reference, interrupted = make_config("ref"), make_config("killed")

    whole = StrategyWorker(redis_client)
    for ranges in checks:
        whole.evaluate("ref", ranges, prefix=prefix)

    first = StrategyWorker(redis_client)
    for ranges in checks[:stop_after]:
        first.evaluate("killed", ranges, prefix=prefix)
    second = StrategyWorker(redis_client)  # the restarted process
    results = [second.evaluate("killed", ranges, prefix=prefix) for ranges in checks[stop_after - 1 :]]
    assert results[0].rebuilt and results[0].ticks == 0  # the redelivered task: a no-op

    def comparable(config):
        got = stored(config)
        return {k: v for k, v in got.items()}

    assert comparable(interrupted) == comparable(reference)
    assert len(comparable(reference)["orders"]) == 2
    # In-memory state too: same positions and PnL as the uninterrupted worker.
    assert second.live["killed"].pnl(DAY) == whole.live["ref"].pnl(DAY)
    assert second.live["killed"].runs[NIFTY].completed == whole.live["ref"].runs[NIFTY].completed


@pytest.mark.django_db
def test_option_orders_fill_on_the_feeds_option_book(redis_client, prefix):
    ticks, options = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    config = make_config("book")
    worker = StrategyWorker(redis_client)
    events = []
    for ranges in claim_checks(prefix, ids[NIFTY]):
        result = worker.evaluate("book", ranges, prefix=prefix)
        events += [e for _, e in result.orders]
    buy, sell = events
    assert buy.premium_source == sell.premium_source == "traded"
    # A market buy pays the option's ask as the feed last showed it when the deciding index tick
    # (the first of the minute after the breakout candle) arrived.
    index_ticks = dict(zip(ids[NIFTY], (t for t in ticks if t.instrument_key == NIFTY), strict=True))
    deciding = index_ticks[buy.signal.stream_id]
    option_ticks = [t for t in ticks if t.instrument_key == options[0] and t.ts_ms <= deciding.ts_ms]
    assert buy.fill.price == Decimal(str(option_ticks[-1].ask))
    assert Order.objects.filter(strategy=config, state=OrderState.FILLED).count() == 2


@pytest.mark.django_db
def test_parameter_change_reaches_the_running_worker_and_keeps_the_open_position(redis_client, prefix):
    ticks, _ = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    config = make_config("tune")
    worker = StrategyWorker(redis_client)
    checks = list(claim_checks(prefix, ids[NIFTY]))
    entered_at = None
    for n, ranges in enumerate(checks):
        worker.evaluate("tune", ranges, prefix=prefix)
        if Order.objects.filter(strategy=config).exists():
            entered_at = n
            break
    assert entered_at is not None
    live = worker.live["tune"]
    opened_by = live.runs[NIFTY].strategy
    assert live.runs[NIFTY].option is not None

    services.update_parameters(config, {"target_ibr": 0.5}, actor="test")
    result = worker.evaluate("tune", checks[entered_at + 1], prefix=prefix)
    assert result.retuned and not result.rebuilt
    assert worker.live["tune"] is live and live.version == 2  # no restart, no rebuild
    # The open position stays with the instance that opened it, to its exit.
    assert live.runs[NIFTY].strategy is opened_by and opened_by.target_ibr == 1.0
    for ranges in checks[entered_at + 2 :]:
        worker.evaluate("tune", ranges, prefix=prefix)
    sides = list(
        Order.objects.filter(strategy=config).order_by("created_at", "id").values_list("side", flat=True)
    )
    assert sides == ["BUY", "SELL"]  # closed as opened (ib_breakout trades once a day)
    assert live.runs[NIFTY].strategy is not opened_by
    assert live.runs[NIFTY].strategy.target_ibr == 0.5


def test_retune_refuses_bad_parameters_and_changes_nothing():
    live = LiveStrategy("x", REGISTRY["ib_breakout"], [NIFTY])
    before = live.runs[NIFTY].strategy
    with pytest.raises(ValueError):
        live.retune({"target_ibr": 99}, 2)
    assert live.runs[NIFTY].strategy is before and live.version == 0


@pytest.mark.django_db
def test_disabled_strategy_is_forgotten_and_does_nothing(redis_client, prefix):
    ticks, _ = session_ticks()
    ids = publish(redis_client, prefix, ticks[:3000])
    config = make_config("off")
    worker = StrategyWorker(redis_client)
    ranges = next(claim_checks(prefix, ids[NIFTY]))
    assert worker.evaluate("off", ranges, prefix=prefix).ticks > 0
    services.set_strategy_enabled(config, False, actor="test")
    result = worker.evaluate("off", ranges, prefix=prefix)
    assert result.skipped == "disabled" and "off" not in worker.live
    assert worker.evaluate("nobody", ranges, prefix=prefix).skipped == "unknown strategy"


@pytest.mark.django_db
def test_one_dashboard_message_per_batch(redis_client, prefix, django_capture_on_commit_callbacks):
    ticks, _ = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    make_config("push")
    sent = []

    class Layer:
        async def group_send(self, group, message):
            sent.append((group, message))

    worker = StrategyWorker(redis_client, channel_layer=Layer())
    with django_capture_on_commit_callbacks(execute=True):
        for ranges in claim_checks(prefix, ids[NIFTY]):
            worker.evaluate("push", ranges, prefix=prefix)
    assert sent and {group for group, _ in sent} == {prefix + STRATEGY_GROUP}
    messages = [m for _, m in sent]
    assert all(m["type"] == "strategy.update" and m["slug"] == "push" for m in messages)
    signals = [s for m in messages for s in m["signals"]]
    orders = [o for m in messages for o in m["orders"]]
    assert [s["kind"] for s in signals] == ["entry", "exit"]
    assert [o["side"] for o in orders] == ["BUY", "SELL"] and orders[0]["premium_source"] == "traded"
    last = messages[-1]
    assert last["positions"][0]["quantity"] == 0
    assert Decimal(last["pnl"]["net"]) == Decimal(last["pnl"]["realised"]) - Decimal(last["pnl"]["charges"])
    # Messages are per batch, not per tick: far fewer than the day's ticks or tasks.
    assert len(messages) < len(list(claim_checks(prefix, ids[NIFTY])))


@pytest.mark.django_db
def test_a_backlog_larger_than_one_read_is_paged_through(redis_client, prefix):
    """A worker that fell behind gets one claim check naming a long range (5,000 entries a read)."""
    ticks, _ = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    config = make_config("backlog")
    key = prefix + tick_stream_key(NIFTY)
    result = StrategyWorker(redis_client).evaluate(
        "backlog", {key: [ids[NIFTY][0], ids[NIFTY][-1]]}, prefix=prefix
    )
    assert result.ticks == len(ids[NIFTY]) > 4 * 5000
    assert StrategyCheckpoint.objects.get(strategy=config).last_stream_id == ids[NIFTY][-1]
    assert [s[3] for s in stored(config)["signals"]] == ["entry", "exit"]


@pytest.mark.django_db
def test_configured_strike_offset_and_square_off(redis_client, prefix, settings):
    """PAPER_STRIKE_OFFSET=1 buys the CE one listed strike in the money (modelled: the feed does not
    stream it); SQUARE_OFF_TIME before the strategy's exit sells it then."""
    settings.PAPER_STRIKE_OFFSET = 1
    settings.SQUARE_OFF_TIME = "12:00"
    ticks, options = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    make_config("itm")
    worker = StrategyWorker(redis_client)
    events = []
    for ranges in claim_checks(prefix, ids[NIFTY]):
        events += [e for _, e in worker.evaluate("itm", ranges, prefix=prefix).orders]
    buy, sell = events
    atm = LiveStrategy("atm", REGISTRY["ib_breakout"], [NIFTY])
    (atm_buy, _) = [
        e
        for e in atm.on_ticks(
            NIFTY, [(f"{i}-0", t) for i, t in enumerate(t for t in ticks if t.instrument_key == NIFTY)]
        )
        if isinstance(e, LiveOrder)
    ]
    assert buy.contract.option_type == "CE" and buy.contract.expiry == atm_buy.contract.expiry
    assert buy.contract.strike == atm_buy.contract.strike - 50
    assert buy.premium_source == "modelled"
    assert sell.reason == "square-off time" and sell.client_order_id.startswith("Q")
    assert sell.signal is None and sell.fill.ts_ms >= buy.fill.ts_ms


BANK = "NSE_INDEX|Nifty Bank"


@pytest.mark.django_db
@pytest.mark.parametrize("restart", [False, True])
def test_an_instrument_joining_mid_session_learns_the_day_but_trades_only_from_then(
    redis_client, prefix, restart
):
    """Nifty Bank's first claim check arrives at 12:00; ib_breakout entered Bank at 11:30 (learned
    silently, never traded) and its 12:25 exit must not be traded either — also after a restart."""
    bank = tuple(SimSession(DAY, [BANK]).ticks())
    nifty = tuple(t for t in session_ticks()[0] if t.instrument_key == NIFTY)
    ids = publish(redis_client, prefix, sorted(nifty + bank, key=lambda t: t.ts_ms))
    config = services.create_strategy_config(
        slug="joins",
        strategy_class="ib_breakout",
        instruments=[NIFTY, BANK],
        capital=Decimal("500000"),
        max_daily_loss=Decimal("5000"),
        enabled=True,
        actor="test",
    )
    noon = next(i for i, t in enumerate(bank) if t.time.hour >= 12)
    worker = StrategyWorker(redis_client)
    for start in range(0, len(ids[NIFTY]), TASK_TICKS):
        ranges = {
            prefix + tick_stream_key(NIFTY): [
                ids[NIFTY][start],
                ids[NIFTY][min(start + TASK_TICKS, len(ids[NIFTY])) - 1],
            ]
        }
        if start >= noon:
            end = min(start + TASK_TICKS, len(ids[BANK])) - 1
            ranges[prefix + tick_stream_key(BANK)] = [ids[BANK][start], ids[BANK][end]]
        if restart and start == noon + 2 * TASK_TICKS:
            worker = StrategyWorker(redis_client)
        worker.evaluate("joins", ranges, prefix=prefix)
    signals = Signal.objects.filter(strategy=config)
    assert not signals.filter(instrument_key=BANK).exists()
    assert [s.kind for s in signals.filter(instrument_key=NIFTY).order_by("ts")] == ["entry", "exit"]
    assert Order.objects.filter(strategy=config).count() == 2
    assert not Position.objects.filter(strategy=config).exclude(net_quantity=0).exists()
    assert (
        StrategyCheckpoint.objects.get(
            strategy=config, stream_key=prefix + tick_stream_key(BANK)
        ).last_stream_id
        == ids[BANK][-1]
    )


@pytest.mark.django_db
def test_switched_off_and_on_again_it_does_not_trade_the_ticks_it_was_off_for(redis_client, prefix):
    ticks, _ = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    config = make_config("offon")
    nifty = [t for t in ticks if t.instrument_key == NIFTY]
    checks = list(claim_checks(prefix, ids[NIFTY]))
    at = [next(i for i, t in enumerate(nifty) if t.time.hour >= h) // TASK_TICKS for h in (10, 12)]
    worker = StrategyWorker(redis_client)
    for ranges in checks[: at[0]]:
        worker.evaluate("offon", ranges, prefix=prefix)
    services.set_strategy_enabled(config, False, actor="test")
    for ranges in checks[at[0] : at[1]]:  # 10:00-12:00: off (the 11:10 entry happens then)
        assert worker.evaluate("offon", ranges, prefix=prefix).skipped == "disabled"
    services.set_strategy_enabled(config, True, actor="test")
    for ranges in checks[at[1] :]:
        worker.evaluate("offon", ranges, prefix=prefix)
    assert not Signal.objects.filter(strategy=config).exists()  # nor the 12:23 exit of that entry
    assert not Order.objects.filter(strategy=config).exists()
    assert StrategyCheckpoint.objects.get(strategy=config).last_stream_id == ids[NIFTY][-1]


@pytest.mark.django_db
def test_the_dashboard_gets_the_stored_book_not_orders_the_risk_gate_refused(
    redis_client, prefix, django_capture_on_commit_callbacks
):
    from strategies import trading

    trading.set_state(
        trading.ACCOUNT, trading.HALTED, actor="test", reason="drill", source=trading.SOURCE_USER
    )
    ticks, _ = session_ticks()
    ids = publish(redis_client, prefix, ticks)
    make_config("refused")
    sent = []

    class Layer:
        async def group_send(self, group, message):
            sent.append(message)

    worker = StrategyWorker(redis_client, channel_layer=Layer())
    with django_capture_on_commit_callbacks(execute=True):
        for ranges in claim_checks(prefix, ids[NIFTY]):
            worker.evaluate("refused", ranges, prefix=prefix)
    orders = [o for m in sent for o in m["orders"]]
    assert [o["state"] for o in orders] == ["rejected"]  # the entry; its exit signal orders nothing
    assert worker.live["refused"].broker.positions() == []  # the paper book never held it
    assert sent[-1]["positions"] == []
    assert sent[-1]["pnl"]["net"] == "0.00"
