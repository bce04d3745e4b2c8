"""Two strategies in two processes race for the last slot of an account-wide limit: exactly one
order passes, the other is REJECTED with the limit's rule and reason (`orders.lock_account`).

Real processes on a real database: a migrated SQLite file of the test's own, or, with
DATABASE_URL=postgres://..., the test database itself (the CI runs this file on PostgreSQL too).
Each process sets Django up, says it is ready, waits for the same go signal and submits its entry
through `orders.submit_order` to a paper venue (which fills under the lock), then prints what it got.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import child_env

# Committed rows the child processes can see (PostgreSQL: the test database, flushed afterwards).
pytestmark = pytest.mark.django_db(transaction=True)
START_TIMEOUT_S = 60
RACE_TIMEOUT_S = 120

CHILD = r"""
import json, sys, time
from decimal import Decimal
from pathlib import Path

import django

django.setup()
from django.utils import timezone

from strategies import services
from strategies.execution import orders, risk
from strategies.execution.paper import PaperBroker
from strategies.models import Order, StrategyConfig

OFF = dict(
    max_open_positions=None, strategy_max_open_lots=None, account_max_open_lots=None,
    strategy_max_orders_per_minute=None, account_max_orders_per_minute=None,
    entry_cutoff=None, square_off=None,
)
LIMITS = {
    "open_positions": risk.RiskLimits(**(OFF | {"max_open_positions": 2})),
    "orders_per_minute": risk.RiskLimits(**(OFF | {"account_max_orders_per_minute": 2})),
}


def entry(slug, coid, instrument, limit):
    config = StrategyConfig.objects.get(slug=slug)
    paper = PaperBroker(square_off_time=None)
    now = timezone.now()
    paper.on_quote(instrument, int(now.timestamp() * 1000), Decimal("100"))
    return orders.submit_order(
        strategy=config, client_order_id=coid, instrument_key=instrument, side="BUY", quantity=65,
        venue=orders.PaperVenue(paper), limits=LIMITS[limit], lot_size=65, now=now,
    )


role, *args = sys.argv[1:]
if role == "setup":
    (limit,) = args
    for slug in ("race-a", "race-b", "race-c"):
        services.create_strategy_config(
            slug=slug, strategy_class="ib_breakout", instruments=["NSE_INDEX|Nifty 50"],
            capital=Decimal("500000"), max_daily_loss=Decimal("5000"), actor="test",
        )
    # The first slot taken: one position open, one order in the last minute.
    held = entry("race-c", "E-held", "NSE_FO|100", limit)
    print(json.dumps({"held": held.orders[0].state}))
elif role == "race":
    slug, coid, instrument, limit, ready, go = args
    Path(ready).touch()
    deadline = time.monotonic() + 60
    while not Path(go).exists():
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.0005)
    result = entry(slug, coid, instrument, limit)
    print(json.dumps({"allowed": result.decision.allowed, "rule": result.decision.rule}))
else:
    rows = []
    for order in Order.objects.order_by("client_order_id"):
        last = order.events.order_by("id").last()
        rows.append({"coid": order.client_order_id, "state": order.state, "detail": last.detail})
    print(json.dumps(rows))
"""


@pytest.fixture
def database_url(tmp_path) -> str:
    """A database the child processes share: the PostgreSQL test database, or a migrated SQLite file."""
    if connection.vendor == "postgresql":
        db = connection.settings_dict
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        return (
            f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    url = f"sqlite:///{tmp_path / 'race.sqlite3'}"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=settings.BASE_DIR,
        env=env_for(url, tmp_path),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return url


def env_for(url: str, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "var").mkdir(exist_ok=True)
    return child_env(
        DJANGO_SETTINGS_MODULE="auctionsite.settings",
        PYTHONPATH=str(settings.BASE_DIR),
        DATABASE_URL=url,
        VAR_DIR=str(tmp_path / "var"),
    )


def run_child(env, *args: str) -> object:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=RACE_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("limit", ["open_positions", "orders_per_minute"])
def test_two_processes_race_for_the_last_slot_of_an_account_limit(database_url, tmp_path, limit):
    env = env_for(database_url, tmp_path)
    assert run_child(env, "setup", limit) == {"held": "filled"}
    go = tmp_path / "go"
    racers = {
        "E-race-a": ("race-a", "NSE_FO|101"),
        "E-race-b": ("race-b", "NSE_FO|102"),
    }
    procs = {}
    for coid, (slug, instrument) in racers.items():
        ready = tmp_path / f"ready-{coid}"
        procs[coid] = (
            ready,
            subprocess.Popen(
                [sys.executable, "-c", CHILD, "race", slug, coid, instrument, limit, str(ready), str(go)],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(ready.exists() for ready, _ in procs.values()):
            for _, proc in procs.values():
                assert proc.poll() is None, proc.communicate()[1][-4000:]
            assert time.monotonic() < deadline, "the racing processes did not start"
            time.sleep(0.05)
        go.touch()  # both submit at once
        answers = {}
        for coid, (_, proc) in procs.items():
            out, err = proc.communicate(timeout=RACE_TIMEOUT_S)
            assert proc.returncode == 0, err[-4000:]
            answers[coid] = json.loads(out.strip().splitlines()[-1])
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert sorted(a["allowed"] for a in answers.values()) == [False, True], answers
    assert {a["rule"] for a in answers.values() if not a["allowed"]} == {limit}
    stored = {row["coid"]: row for row in run_child(env, "inspect")}
    refused = next(coid for coid, a in answers.items() if not a["allowed"])
    passed = next(coid for coid, a in answers.items() if a["allowed"])
    assert stored[passed]["state"] == "filled"
    assert stored[refused]["state"] == "rejected"
    assert stored[refused]["detail"]["risk"] == limit
    assert stored[refused]["detail"]["message"] == (
        "2 positions open (limit 2)"
        if limit == "open_positions"
        else "the account sent 2 orders in the last minute (limit 2)"
    )
    assert len(stored) == 3  # the held slot, the winner, the refused one
