"""The strategies' services on the real database: configuration changes and their audit trail,
live-mode refusal, the order state machine, idempotent fills, positions, signals and checkpoints."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from strategies import services
from strategies.base import Param, Strategy
from strategies.library import REGISTRY
from strategies.models import (
    AuditEvent,
    Fill,
    Order,
    OrderEvent,
    OrderState,
    Position,
    Signal,
    StrategyCheckpoint,
    StrategyConfig,
)

IST = ZoneInfo("Asia/Kolkata")
ALL_STATES = list(OrderState.values)


class TinyStrategy(Strategy):
    """A strategy with one parameter of each common type, registered only for these tests."""

    slug = "tiny_test"
    title = "Tiny test strategy"
    needs = frozenset()

    lookback = Param("int", 30, min=5, max=120, help="Minutes.")
    threshold = Param("float", 0.8, min=0.0, max=1.0)
    direction = Param("choice", "both", choices=("long", "short", "both"))
    square_off = Param("time", dt.time(15, 15), min=dt.time(10, 0), max=dt.time(15, 29))
    trail = Param("bool", False)


@pytest.fixture(autouse=True)
def tiny_strategy(monkeypatch):
    monkeypatch.setitem(REGISTRY, TinyStrategy.slug, TinyStrategy)
    return TinyStrategy


def make_config(slug: str = "tiny", **overrides) -> StrategyConfig:
    values = {
        "slug": slug,
        "strategy_class": TinyStrategy.slug,
        "instruments": ["NSE_INDEX|Nifty 50"],
        "capital": Decimal("500000"),
        "max_daily_loss": Decimal("5000"),
        "actor": "test",
    } | overrides
    return services.create_strategy_config(**values)


def make_order(
    config: StrategyConfig, client_order_id: str = "t-1", quantity: int = 130, **overrides
) -> Order:
    values = {
        "strategy": config,
        "client_order_id": client_order_id,
        "instrument_key": "NSE_FO|43919",
        "side": "BUY",
        "quantity": quantity,
    } | overrides
    return services.create_order(**values)


def at(hour: int, minute: int, day: dt.date = dt.date(2026, 11, 24)) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=IST)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_new_config_has_declared_defaults_version_1_and_an_audit_entry():
    config = make_config()
    assert config.version == 1
    assert config.parameters == {
        "lookback": 30,
        "threshold": 0.8,
        "direction": "both",
        "square_off": "15:15",
        "trail": False,
    }
    event = AuditEvent.objects.get(action="strategy.created")
    assert (event.actor_type, event.actor, event.object_id) == ("system", "test", str(config.pk))


@pytest.mark.django_db
def test_bad_parameters_give_one_error_per_parameter_and_change_nothing():
    config = make_config()
    before = AuditEvent.objects.count()
    with pytest.raises(ValidationError) as caught:
        services.update_parameters(
            config,
            {"lookback": 500, "threshold": "lots", "direction": "sideways", "bogus": 1, "trail": True},
            actor="test",
        )
    errors = caught.value.message_dict
    assert set(errors) == {"lookback", "threshold", "direction", "bogus"}
    assert all(len(messages) == 1 for messages in errors.values())
    config.refresh_from_db()
    assert config.version == 1
    assert config.parameters["lookback"] == 30 and config.parameters["trail"] is False
    assert AuditEvent.objects.count() == before


@pytest.mark.django_db
def test_parameter_change_bumps_version_and_audits_what_changed():
    config = make_config()
    services.update_parameters(config, {"lookback": "45", "square_off": "14:50"}, actor="test")
    assert config.version == 2
    assert config.parameters["lookback"] == 45
    assert config.parameters["square_off"] == "14:50"
    event = AuditEvent.objects.get(action="strategy.changed")
    assert event.detail["parameters.lookback"] == {"from": 30, "to": 45}
    assert event.detail["version"] == 2
    # The same values again are no change: no new version, no audit entry.
    services.update_parameters(config, {"lookback": 45, "square_off": "14:50"}, actor="test")
    assert config.version == 2
    assert AuditEvent.objects.filter(action="strategy.changed").count() == 1


@pytest.mark.django_db
def test_invalid_settings_change_nothing():
    config = make_config()
    with pytest.raises(ValidationError) as caught:
        services.update_strategy_config(config, actor="test", lots=0, instruments=["Nifty"])
    assert {"lots", "instruments"} <= set(caught.value.message_dict)
    config.refresh_from_db()
    assert (config.lots, config.instruments, config.version) == (1, ["NSE_INDEX|Nifty 50"], 1)


@pytest.mark.django_db
def test_enable_and_disable_bump_the_version_and_are_audited():
    config = make_config()
    services.set_strategy_enabled(config, True, actor="test")
    services.set_strategy_enabled(config, True, actor="test")  # already on: nothing to do
    services.set_strategy_enabled(config, False, actor="test")
    assert config.version == 3 and not config.enabled
    actions = list(
        AuditEvent.objects.filter(object_id=str(config.pk)).order_by("id").values_list("action", flat=True)
    )
    assert actions == ["strategy.created", "strategy.enabled", "strategy.disabled"]


@pytest.mark.django_db
def test_live_mode_is_refused_without_live_trading_and_the_refusal_is_audited(settings):
    settings.LIVE_TRADING = False
    config = make_config()
    with pytest.raises(services.LiveTradingRefused) as caught:
        services.set_strategy_mode(config, "live", actor="test")
    assert "LIVE_TRADING" in " ".join(caught.value.messages)
    config.refresh_from_db()
    assert (config.mode, config.version) == ("paper", 1)
    refusal = AuditEvent.objects.get(action="strategy.mode_refused")
    assert refusal.detail == {"from": "paper", "requested": "live"}
    assert "LIVE_TRADING" in refusal.reason
    with pytest.raises(services.LiveTradingRefused):
        make_config("born-live", mode="live")
    assert not StrategyConfig.objects.filter(slug="born-live").exists()


@pytest.mark.django_db
def test_live_mode_is_allowed_when_live_trading_is_set(settings):
    settings.LIVE_TRADING = True
    config = make_config()
    services.set_strategy_mode(config, "live", actor="test")
    assert (config.mode, config.version) == ("live", 2)
    assert AuditEvent.objects.filter(action="strategy.mode_changed").exists()


# --- the order state machine -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_legal_path_records_every_transition_as_order_and_audit_events():
    config = make_config()
    order = make_order(config)
    services.order_transition(order, "submitted", detail={"note": "sent"}, broker_order_id="B-1")
    services.order_transition(order, "open", detail={})
    services.order_transition(order, "cancelled", detail={"why": "square-off"})
    assert order.state == "cancelled" and order.broker_order_id == "B-1"
    steps = list(order.events.values_list("from_state", "to_state"))
    assert steps == [("", "new"), ("new", "submitted"), ("submitted", "open"), ("open", "cancelled")]
    audited = AuditEvent.objects.filter(action="order.transition", object_id=str(order.pk))
    assert [(e.detail["from"], e.detail["to"]) for e in audited.order_by("id")] == steps[1:]
    assert audited.first().actor == config.slug  # the strategy acted


@pytest.mark.django_db
def test_every_pair_of_states_is_legal_exactly_when_the_machine_says_so():
    config = make_config()
    order = make_order(config, quantity=2)
    for number, (from_state, to_state) in enumerate(itertools.product(ALL_STATES, ALL_STATES)):
        # Put the order in `from_state` with fills consistent with where it is going.
        filled = {"filled": 2, "partially_filled": 1}.get(to_state, 0)
        Order.objects.filter(pk=order.pk).update(state=from_state, filled_quantity=filled)
        events_before = OrderEvent.objects.count()
        legal = to_state in services.ORDER_TRANSITIONS[from_state]
        if legal:
            services.order_transition(order, to_state, detail={"case": number})
            assert order.state == to_state
            assert order.events.order_by("-id").values_list("from_state", "to_state").first() == (
                from_state,
                to_state,
            )
            assert OrderEvent.objects.count() == events_before + 1
        else:
            with pytest.raises(services.IllegalOrderTransition):
                services.order_transition(order, to_state, detail={"case": number})
            assert Order.objects.get(pk=order.pk).state == from_state
            assert OrderEvent.objects.count() == events_before
    # Final states are final.
    for final in services.TERMINAL_STATES:
        assert services.ORDER_TRANSITIONS[final] == frozenset()


@pytest.mark.django_db
def test_fill_driven_states_must_agree_with_the_fills():
    order = make_order(make_config())
    services.order_transition(order, "submitted")
    with pytest.raises(services.IllegalOrderTransition, match="filled needs"):
        services.order_transition(order, "filled")
    with pytest.raises(services.IllegalOrderTransition, match="partially_filled needs"):
        services.order_transition(order, "partially_filled")
    assert order.state == "submitted"


# --- fills and positions ---------------------------------------------------------------------


@pytest.mark.django_db
def test_fills_update_quantity_average_price_state_and_are_idempotent():
    config = make_config()
    order = make_order(config, quantity=130)
    services.order_transition(order, "submitted")
    services.order_transition(order, "open")
    fill, created = services.record_fill(
        order, fill_id="T1", qty=65, price=Decimal("100.05"), ts=at(9, 30), charges=Decimal("20.10")
    )
    assert created and order.state == "partially_filled" and order.filled_quantity == 65
    again, created_again = services.record_fill(
        order, fill_id="T1", qty=65, price=Decimal("100.05"), ts=at(9, 30), charges=Decimal("20.10")
    )
    assert not created_again and again.pk == fill.pk
    assert order.filled_quantity == 65 and Fill.objects.filter(order=order).count() == 1
    services.record_fill(order, fill_id="T2", qty=65, price=100.1, ts=at(9, 31))  # a float from a broker
    assert not services.record_fill(order, fill_id="T2", qty=65, price="100.100000", ts=at(9, 31))[1]
    assert order.state == "filled" and order.filled_quantity == 130
    assert order.average_price == Decimal("100.0750")
    steps = list(order.events.values_list("to_state", flat=True))
    assert steps == ["new", "submitted", "open", "partially_filled", "filled"]
    position = Position.objects.get(
        strategy=config, instrument_key="NSE_FO|43919", trading_day=dt.date(2026, 11, 24)
    )
    assert (position.net_quantity, position.average_price) == (130, Decimal("100.0750"))
    assert position.charges == Decimal("20.10")


@pytest.mark.django_db
def test_bad_fills_are_refused_and_write_nothing():
    config = make_config()
    order = make_order(config, quantity=65)
    with pytest.raises(services.FillRejected, match="is new"):
        services.record_fill(order, fill_id="T0", qty=65, price=Decimal("100"), ts=at(9, 30))
    services.order_transition(order, "submitted")
    with pytest.raises(services.FillRejected, match="overfill"):
        services.record_fill(order, fill_id="T1", qty=66, price=Decimal("100"), ts=at(9, 30))
    services.record_fill(order, fill_id="T2", qty=10, price=Decimal("100"), ts=at(9, 30))
    with pytest.raises(services.FillRejected, match="now reported as"):
        services.record_fill(order, fill_id="T2", qty=11, price=Decimal("100"), ts=at(9, 30))
    assert list(Fill.objects.values_list("fill_id", "quantity")) == [("T2", 10)]
    assert order.filled_quantity == 10


@pytest.mark.django_db
def test_a_fill_after_cancel_is_kept_and_the_order_stays_cancelled():
    config = make_config()
    order = make_order(config, quantity=65)
    services.order_transition(order, "submitted")
    services.order_transition(order, "cancelled")
    services.record_fill(order, fill_id="LATE", qty=65, price=Decimal("99.95"), ts=at(10, 0))
    assert order.state == "cancelled" and order.filled_quantity == 65
    assert AuditEvent.objects.filter(action="order.fill_after_cancel").count() == 1
    assert Position.objects.get(strategy=config).net_quantity == 65


@pytest.mark.django_db
def test_positions_follow_fills_per_trading_day_in_exchange_time():
    config = make_config()
    buy = make_order(config, "b-1", quantity=130)
    sell = make_order(config, "s-1", quantity=65, side="SELL")
    late = make_order(config, "b-2", quantity=65)
    for order in (buy, sell, late):
        services.order_transition(order, "submitted")
    services.record_fill(buy, fill_id="1", qty=130, price=Decimal("100"), ts=at(9, 20), charges=Decimal("21"))
    services.record_fill(
        sell, fill_id="2", qty=65, price=Decimal("110.5"), ts=at(11, 0), charges=Decimal("25")
    )
    # 00:10 IST on the next day is still the 24th in UTC: the position belongs to the 25th.
    services.record_fill(late, fill_id="3", qty=65, price=Decimal("90"), ts=at(0, 10, dt.date(2026, 11, 25)))
    first = Position.objects.get(trading_day=dt.date(2026, 11, 24))
    assert (first.net_quantity, first.average_price) == (65, Decimal("100"))
    assert first.realised_pnl == Decimal("682.5") and first.charges == Decimal("46")
    second = Position.objects.get(trading_day=dt.date(2026, 11, 25))
    assert (second.net_quantity, second.realised_pnl) == (65, Decimal("0"))


def test_position_arithmetic_closes_against_the_average_and_flips():
    ex = services.Execution
    figures = services.position_from_fills(
        [
            ex("BUY", 2, Decimal("100")),
            ex("BUY", 1, Decimal("103")),  # average 101
            ex("SELL", 2, Decimal("110"), Decimal("1.5")),  # realise 2 x 9
            ex("SELL", 3, Decimal("105")),  # close 1 (+4), open short 2 @ 105
        ]
    )
    assert figures == services.PositionFigures(-2, Decimal("105.0000"), Decimal("22.0000"), Decimal("1.5000"))
    flat = services.position_from_fills([ex("SELL", 3, Decimal("100.05")), ex("BUY", 3, Decimal("100.10"))])
    assert (flat.net_quantity, flat.average_price, flat.realised_pnl) == (0, None, Decimal("-0.1500"))


def test_position_realised_pnl_equals_cash_flow_when_flat():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    trades = st.lists(
        st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(1, 500), st.integers(1, 100_000)), max_size=30
    )

    @settings(max_examples=200, deadline=None)
    @given(trades)
    def check(raw):
        executions = [services.Execution(side, qty, Decimal(ticks) / 20) for side, qty, ticks in raw]
        net = sum(e.quantity if e.side == "BUY" else -e.quantity for e in executions)
        if net:  # close it at the last price so the position ends flat
            last = executions[-1].price
            executions.append(services.Execution("SELL" if net > 0 else "BUY", abs(net), last))
        cash = sum(
            (e.price * (e.quantity if e.side == "SELL" else -e.quantity) for e in executions), Decimal(0)
        )
        figures = services.position_from_fills(executions)
        assert figures.net_quantity == 0
        assert abs(figures.realised_pnl - cash) <= Decimal("0.0001")

    check()


# --- signals and checkpoints -----------------------------------------------------------------


def signal_args(stream_id: str, instrument: str = "NSE_INDEX|Nifty 50", **overrides) -> dict:
    return {
        "instrument_key": instrument,
        "ts": at(10, 20),
        "side": "long",
        "kind": "entry",
        "reason": "5-minute close above IBH",
        "stream_id": stream_id,
        "entry": 24510.05,
        "stop": Decimal("24480"),
        "target": None,
        "facts": {"ibh": Decimal("24500.00"), "ibr": 60},
    } | overrides


@pytest.mark.django_db
def test_a_redelivered_evaluation_stores_nothing_twice_and_the_checkpoint_never_goes_back():
    config = make_config()
    stream = "ticks:NSE_INDEX|Nifty 50"
    first = services.record_evaluation(
        config, stream_key=stream, last_stream_id="1764000000000-5", signals=[signal_args("1764000000000-3")]
    )
    again = services.record_evaluation(
        config, stream_key=stream, last_stream_id="1764000000000-5", signals=[signal_args("1764000000000-3")]
    )
    assert len(first) == 1 and again == []
    assert Signal.objects.count() == 1
    stored = Signal.objects.get()
    assert stored.entry == Decimal("24510.0500") and stored.facts == {"ibh": "24500.00", "ibr": 60}
    # An older range delivered late leaves the checkpoint where it is; a newer one moves it.
    services.advance_checkpoint(config, stream_key=stream, last_stream_id="999-0")
    assert StrategyCheckpoint.objects.get().last_stream_id == "1764000000000-5"
    services.advance_checkpoint(config, stream_key=stream, last_stream_id="1764000000001-0")
    assert StrategyCheckpoint.objects.get().last_stream_id == "1764000000001-0"
    # Stream ids repeat across instruments' streams: the same id on another instrument is another signal.
    services.record_signal(config, **signal_args("1764000000000-3", instrument="NSE_INDEX|Nifty Bank"))
    assert Signal.objects.count() == 2


@pytest.mark.django_db
def test_signals_and_checkpoint_are_stored_together_or_not_at_all():
    config = make_config()
    with pytest.raises(ValidationError):
        services.record_evaluation(
            config,
            stream_key="ticks:x",
            last_stream_id="5-0",
            signals=[signal_args("1-0"), signal_args("2-0", side="sideways")],
        )
    assert Signal.objects.count() == 0 and StrategyCheckpoint.objects.count() == 0


@pytest.mark.django_db
def test_a_library_signal_is_stored_with_its_levels_in_exchange_time():
    from strategies.base import Signal as StrategySignal

    config = make_config()
    emitted = StrategySignal(
        "tiny_test",
        "NSE_INDEX|Nifty 50",
        1_764_043_200_000,  # 2025-11-25 09:30 IST
        "short",
        "exit",
        24500.05,
        reason="target reached",
        facts={"poc": 24480.0},
    )
    stored, created = services.record_signal(
        config, **services.signal_record(emitted, stream_id="1764043200000-0")
    )
    stored.refresh_from_db()
    assert created
    assert stored.ts == dt.datetime(2025, 11, 25, 9, 30, tzinfo=IST)
    assert (stored.side, stored.kind, stored.price, stored.entry) == (
        "short",
        "exit",
        Decimal("24500.0500"),
        None,
    )
    assert stored.facts == {"poc": 24480.0}


@pytest.mark.django_db
def test_selectors_read_what_the_services_wrote():
    from strategies import selectors

    config = make_config()
    other = make_config("other")
    services.set_strategy_enabled(config, True, actor="test")
    assert list(selectors.enabled_strategies()) == [config]
    assert selectors.strategy_version("tiny") == 2 and selectors.strategy_version("gone") is None
    assert selectors.checkpoint_for(config, "ticks:x") is None
    services.advance_checkpoint(config, stream_key="ticks:x", last_stream_id="7-1")
    assert selectors.checkpoint_for(config, "ticks:x") == "7-1"
    live = make_order(config, "o-1")
    done = make_order(other, "o-2")
    services.order_transition(done, "rejected", detail={"why": "margin"})
    assert list(selectors.open_orders()) == [live]
    assert list(selectors.open_orders(other)) == []
    assert selectors.order_by_client_id("o-2") == done
    trail = selectors.audit_trail(object_type="order", object_id=done.pk)
    assert [e.action for e in trail] == ["order.created", "order.transition"]


@pytest.mark.django_db
def test_creating_an_order_again_returns_it_and_a_clash_is_refused():
    config = make_config()
    order = make_order(config, "same-1", quantity=65)
    services.order_transition(order, "submitted")
    again = make_order(config, "same-1", quantity=65)
    assert again.pk == order.pk and again.state == "submitted"
    assert order.events.count() == 2
    with pytest.raises(ValidationError, match="already exists with different quantity"):
        make_order(config, "same-1", quantity=130)
    assert Order.objects.count() == 1


@pytest.mark.django_db
def test_a_strategy_that_left_the_library_can_be_switched_off_but_not_tuned(monkeypatch):
    config = make_config()
    services.set_strategy_enabled(config, True, actor="test")
    monkeypatch.delitem(REGISTRY, TinyStrategy.slug)
    services.set_strategy_enabled(config, False, actor="test")
    assert not config.enabled
    with pytest.raises(ValidationError, match="Unknown strategy"):
        services.update_parameters(config, {}, actor="test")
    with pytest.raises(ValidationError, match="strategy_class"):
        services.update_strategy_config(config, actor="test", lots=3)
    config.refresh_from_db()
    assert config.lots == 1


@pytest.mark.django_db
def test_a_system_event_needs_no_object_and_keeps_its_reason():
    event = services.record_audit(
        actor=None,
        action="trading.kill_switch",
        reason="daily loss limit",
        detail={"loss": Decimal("5000.5")},
    )
    event.refresh_from_db()
    assert (event.actor_type, event.actor, event.object_type, event.object_id) == ("system", "system", "", "")
    assert event.detail == {"loss": "5000.5"} and event.reason == "daily loss limit"


@pytest.mark.django_db
def test_a_worker_sees_new_parameters_through_the_version():
    from strategies import selectors

    config = make_config()
    loaded = selectors.strategy_settings("tiny")
    strategy = loaded.build("NSE_INDEX|Nifty 50")
    assert isinstance(strategy, TinyStrategy) and strategy.lookback == 30
    assert strategy.square_off == dt.time(15, 15)
    services.update_parameters(config, {"lookback": 60}, actor="test")
    assert selectors.strategy_version("tiny") > loaded.version
    reloaded = selectors.strategy_settings("tiny")
    assert reloaded.build("NSE_INDEX|Nifty 50").lookback == 60
    assert reloaded.instruments == ("NSE_INDEX|Nifty 50",) and reloaded.capital == Decimal("500000")
