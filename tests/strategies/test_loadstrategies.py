"""`manage.py loadstrategies`: creates what is missing, never overwrites the admin's edits, and a bad
file is a one-line error that writes nothing."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from strategies import services
from strategies.library import REGISTRY
from strategies.models import AuditEvent, StrategyConfig

SHIPPED = Path(settings.BASE_DIR) / "configs" / "strategies.json"


def entry(slug: str, **overrides) -> dict:
    return {
        "slug": slug,
        "strategy": "ib_breakout",
        "enabled": False,
        "mode": "paper",
        "instruments": ["NSE_INDEX|Nifty 50"],
        "capital": "500000.00",
        "lots": 1,
        "max_daily_loss": "5000.00",
        "parameters": {"row_size": 5.0},
    } | overrides


def seed(tmp_path: Path, *entries: dict) -> Path:
    path = tmp_path / "strategies.json"
    path.write_text(json.dumps({"strategies": list(entries)}))
    return path


def load(path: Path) -> str:
    out = StringIO()
    call_command("loadstrategies", str(path), stdout=out)
    return out.getvalue().strip()


@pytest.mark.django_db
def test_loading_twice_creates_once_and_never_overwrites_admin_edits(tmp_path):
    path = seed(
        tmp_path, entry("ib-nifty", enabled=True), entry("ib-bank", instruments=["NSE_INDEX|Nifty Bank"])
    )
    assert load(path).endswith("created 2 (ib-nifty, ib-bank), kept 0 already configured")
    nifty = StrategyConfig.objects.get(slug="ib-nifty")
    assert nifty.enabled and nifty.mode == "paper" and nifty.version == 1
    assert nifty.parameters["row_size"] == 5.0 and nifty.parameters["exit_time"] == "15:15"
    assert AuditEvent.objects.filter(action="strategy.created", actor="loadstrategies").count() == 2

    services.update_parameters(nifty, {"row_size": 10}, actor="admin-edit")
    services.set_strategy_enabled(nifty, False, actor="admin-edit")
    assert load(path).endswith("created 0, kept 2 already configured (ib-nifty, ib-bank)")
    nifty.refresh_from_db()
    assert nifty.parameters["row_size"] == 10.0 and not nifty.enabled and nifty.version == 3
    assert StrategyConfig.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"strategies": [', "not valid JSON at line 1"),
        ('{"strategies": {}}', "expected"),
        (
            json.dumps([entry("a"), entry("b", strategy="no_such_thing")]),
            "entry 2 (b): unknown strategy 'no_such_thing'",
        ),
        (
            json.dumps([entry("a"), entry("b", parameters={"row_size": -1})]),
            "entry 2 (b): row_size: must be ≥ 0.05",
        ),
        (
            json.dumps([entry("a"), entry("b", parameters={"nope": 1})]),
            "entry 2 (b): nope: unknown parameter",
        ),
        (json.dumps([entry("a"), entry("a")]), "entry 2 (a): slug listed twice"),
        (json.dumps([entry("a", capital="lots")]), "decimal amounts"),
        (json.dumps([{"slug": "a"}]), "missing strategy, instruments, capital, max_daily_loss"),
        (json.dumps([entry("a", mode="yolo")]), "mode is one of"),
        (json.dumps([entry("a"), entry("b", lots=0)]), "b: lots:"),
        (json.dumps([entry("a"), entry("b", instruments=[])]), "b: instruments:"),
    ],
)
def test_a_bad_file_is_one_line_and_writes_nothing(tmp_path, content, message):
    path = tmp_path / "strategies.json"
    path.write_text(content)
    with pytest.raises(CommandError) as caught:
        load(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert StrategyConfig.objects.count() == 0
    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db
def test_a_live_seed_is_refused_without_live_trading(tmp_path, settings):
    settings.LIVE_TRADING = False
    with pytest.raises(CommandError, match="LIVE_TRADING"):
        load(seed(tmp_path, entry("a"), entry("b", mode="live")))
    assert StrategyConfig.objects.count() == 0


@pytest.mark.django_db
def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        load(tmp_path / "absent.json")


@pytest.mark.django_db
def test_the_shipped_seed_covers_the_library_and_loads():
    document = json.loads(SHIPPED.read_text())
    entries = document["strategies"]
    assert {e["strategy"] for e in entries} == {
        "ib_breakout",
        "eighty_percent",
        "va_acceptance",
        "open_drive",
        "look_above_fail",
    }
    assert all(e["mode"] == "paper" for e in entries)
    assert sorted(e["slug"] for e in entries if e["enabled"]) == ["eighty_percent", "ib_breakout"]
    assert {e["strategy"] for e in entries} == set(REGISTRY), "one seed entry per library strategy"
    load(SHIPPED)
    assert StrategyConfig.objects.count() == len(entries)
    load(SHIPPED)
    assert StrategyConfig.objects.count() == len(entries)
    assert list(StrategyConfig.objects.filter(enabled=True).values_list("slug", flat=True)) == [
        "eighty_percent",
        "ib_breakout",
    ]
