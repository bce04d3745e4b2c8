"""The strategy interface: parameter declaration, validation, schema for forms, values."""

from __future__ import annotations

import dataclasses
from datetime import time
from decimal import Decimal

import pytest

from strategies.base import Candle, Param, Signal, Strategy, minute_of_day, to_ticks


class Demo(Strategy):
    slug = "demo"
    needs = frozenset()
    lots = Param("int", 1, min=1, max=10, help="lots per signal")
    k = Param("float", 1.0, min=0.1, max=3.0)
    risk = Param("decimal", Decimal("1000"), min=Decimal("0"))
    enabled = Param("bool", True)
    note = Param("str", "")
    start = Param("time", time(9, 30), min=time(9, 15), max=time(15, 29))
    mode = Param("choice", "atm", choices=("atm", "itm1", "otm1"))


class Child(Demo):
    slug = "child"
    extra = Param("int", 3)


def test_defaults_fill_missing_and_strings_are_coerced():
    clean, errors = Demo.validate_params(
        {"lots": "3", "k": "1.5", "risk": "250.50", "enabled": "false", "start": "10:00", "mode": "itm1"}
    )
    assert errors == {}
    assert clean == {
        "lots": 3,
        "k": 1.5,
        "risk": Decimal("250.50"),
        "enabled": False,
        "note": "",
        "start": time(10, 0),
        "mode": "itm1",
    }


@pytest.mark.parametrize(
    "raw,name,message",
    [
        ({"lots": 0}, "lots", "must be ≥ 1"),
        ({"lots": 11}, "lots", "must be ≤ 10"),
        ({"lots": "two"}, "lots", "must be a whole number"),
        ({"lots": 1.5}, "lots", "must be a whole number"),
        ({"k": "nan"}, "k", "must be a finite number"),
        ({"risk": "-1"}, "risk", "must be ≥ 0"),
        ({"risk": "abc"}, "risk", "must be a decimal number"),
        ({"enabled": "maybe"}, "enabled", "must be true or false"),
        ({"start": "25:00"}, "start", "must be a time HH:MM"),
        ({"start": "09:00"}, "start", "must be ≥ 09:15"),
        ({"mode": "deep"}, "mode", "must be one of atm, itm1, otm1"),
        ({"nope": 1}, "nope", "unknown parameter for demo"),
    ],
)
def test_errors_name_the_parameter(raw, name, message):
    _, errors = Demo.validate_params(raw)
    assert errors == {name: message}


def test_constructor_rejects_bad_params_and_exposes_clean_ones():
    with pytest.raises(ValueError, match="lots: must be ≤ 10"):
        Demo("k", {"lots": 99})
    s = Demo("NSE_INDEX|Nifty 50", {"lots": 2})
    assert s.lots == 2 and s.params["k"] == 1.0 and s.instrument_key == "NSE_INDEX|Nifty 50"


def test_param_schema_for_forms_keeps_declaration_order_and_inherits():
    schema = Demo.param_schema()
    assert [p["name"] for p in schema] == ["lots", "k", "risk", "enabled", "note", "start", "mode"]
    assert schema[0] == {
        "name": "lots",
        "type": "int",
        "default": 1,
        "min": 1,
        "max": 10,
        "choices": [],
        "help": "lots per signal",
    }
    assert schema[5]["default"] == "09:30" and schema[2]["default"] == "1000"
    assert [p["name"] for p in Child.param_schema()][-1] == "extra"
    assert "extra" not in Demo.params_spec


def test_param_declaration_is_checked():
    with pytest.raises(ValueError):
        Param("list", [])
    with pytest.raises(ValueError):
        Param("choice", "a")


def test_values_are_frozen_and_slotted():
    s = Signal("demo", "k", 0, "long", "entry", 100.0, reason="r", facts={"ibh": 1})
    c = Candle(0, 1, 2, 0.5, 1.5)
    assert not hasattr(s, "__dict__") and not hasattr(c, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.ts_ms = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        c.ts_ms = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Param("int", 1).default = 2  # type: ignore[misc]


def test_ticks_and_clock_helpers():
    assert to_ticks(25004.95) == 500099 and to_ticks(25005.0) == 500100
    assert minute_of_day(1710215100000) == 9 * 60 + 15  # 2024-03-12 09:15 IST


def test_strategy_execution_and_backtest_code_imports_nothing_from_django_celery_or_redis():
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2] / "strategies"
    paths = [root / "base.py"]
    # The execution package's Django side (trading records, the order service, reconciliation,
    # kill switch, admin, tasks) is the adapter edge around the pure core; everything else is pure.
    django_side = {"models.py", "admin.py", "orders.py", "reconcile.py", "killswitch.py", "tasks.py"}
    for package in ("library", "execution", "backtest"):
        paths += sorted(
            p for p in (root / package).glob("*.py") if package != "execution" or p.name not in django_side
        )
    assert len(paths) > 10
    for path in paths:
        tree = ast.parse(path.read_text())
        names = [
            (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in (n.names if isinstance(n, ast.Import) else [n])
        ]
        assert not [m for m in names if m.split(".")[0] in ("django", "celery", "redis")], path
