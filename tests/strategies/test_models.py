"""Invariants the strategies' models keep on their own, in the database as well as in full_clean."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from strategies import services
from strategies.models import Fill, Order, Signal, StrategyConfig, strategy_class_choices


def make_config(**overrides) -> StrategyConfig:
    values = {
        "slug": "ib",
        "strategy_class": "ib_breakout",
        "instruments": ["NSE_INDEX|Nifty 50"],
        "capital": Decimal("500000"),
        "max_daily_loss": Decimal("5000"),
        "actor": "test",
    } | overrides
    return services.create_strategy_config(**values)


def test_strategy_class_choices_come_from_the_library():
    assert ("ib_breakout", "Initial-balance breakout") in strategy_class_choices()


@pytest.mark.django_db
def test_full_clean_reports_bad_parameters_instruments_and_class():
    config = StrategyConfig(
        slug="x",
        strategy_class="ib_breakout",
        instruments=["Nifty"],
        parameters={"row_size": 0, "bogus": 1},
        capital=Decimal("1"),
        max_daily_loss=Decimal("1"),
    )
    with pytest.raises(ValidationError) as caught:
        config.full_clean()
    errors = caught.value.message_dict
    assert errors["instruments"] == ['Each instrument key looks like "NSE_INDEX|Nifty 50".']
    assert sorted(errors["parameters"]) == [
        "bogus: unknown parameter for ib_breakout",
        "row_size: must be ≥ 0.05",
    ]
    config.strategy_class = "not_a_strategy"
    with pytest.raises(ValidationError) as caught:
        config.full_clean()
    assert "strategy_class" in caught.value.message_dict


@pytest.mark.django_db
def test_limit_orders_need_a_price_and_market_orders_have_none():
    config = make_config()
    with pytest.raises(ValidationError, match="limit order needs a price"):
        services.create_order(
            strategy=config,
            client_order_id="l-1",
            instrument_key="NSE_FO|1",
            side="BUY",
            quantity=65,
            order_type="LIMIT",
        )
    with pytest.raises(ValidationError, match="market order has no price"):
        services.create_order(
            strategy=config,
            client_order_id="m-1",
            instrument_key="NSE_FO|1",
            side="BUY",
            quantity=65,
            price=Decimal("1"),
        )
    assert Order.objects.count() == 0


@pytest.mark.django_db
def test_the_database_refuses_duplicates_and_overfills_even_past_the_services():
    config = make_config()
    order = services.create_order(
        strategy=config, client_order_id="dup", instrument_key="NSE_FO|1", side="BUY", quantity=65
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.create(
            strategy=config, client_order_id="dup", instrument_key="NSE_FO|1", side="SELL", quantity=1
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.filter(pk=order.pk).update(filled_quantity=66)
    now = timezone.now()
    Fill.objects.create(order=order, fill_id="F", quantity=1, price=Decimal("1"), ts=now)
    with pytest.raises(IntegrityError), transaction.atomic():
        Fill.objects.create(order=order, fill_id="F", quantity=1, price=Decimal("1"), ts=now)
    signal = {"strategy": config, "instrument_key": "NSE_INDEX|Nifty 50", "stream_id": "1-0", "kind": "entry"}
    Signal.objects.create(**signal, ts=now, side="long", reason="r")
    with pytest.raises(IntegrityError), transaction.atomic():
        Signal.objects.create(**signal, ts=now + dt.timedelta(seconds=1), side="short", reason="again")
    with pytest.raises(IntegrityError), transaction.atomic():
        StrategyConfig.objects.filter(pk=config.pk).update(lots=0)


@pytest.mark.django_db
def test_the_client_order_id_fits_a_broker_tag():
    config = make_config()
    for bad in ("x" * 21, "has space", "semi;colon", ""):
        with pytest.raises(ValidationError) as caught:
            services.create_order(
                strategy=config, client_order_id=bad, instrument_key="NSE_FO|1", side="BUY", quantity=1
            )
        assert "client_order_id" in caught.value.message_dict
    services.create_order(
        strategy=config,
        client_order_id="ib_20261125-000123",
        instrument_key="NSE_FO|1",
        side="BUY",
        quantity=1,
    )
