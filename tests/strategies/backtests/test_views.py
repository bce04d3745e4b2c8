"""The backtest pages in-process: bad requests give field errors and start nothing (no BacktestRun
row, no message on the backtests queue); a good one stores a queued run and sends exactly one task;
runs are private to their user (staff see all); the report, compare and sweep pages render."""

from __future__ import annotations

import json
import secrets
from datetime import date

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from strategies.backtests import services
from strategies.backtests.models import BacktestRun, BacktestSweep

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(client, django_capture_on_commit_callbacks):
    """The test client, with the callbacks a request leaves for its commit (sending the task) run
    as they would be after a real commit."""
    post = client.post

    def post_and_commit(*args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return post(*args, **kwargs)

    client.post = post_and_commit
    return client


GOOD = {
    "strategy": "ib_breakout",
    "instruments": "NSE_INDEX|Nifty 50",
    "start": "2024-03-01",
    "end": "2024-03-31",
    "fill": "underlying",
    "source": "candles",
    "costs": "on",
    "capital": "500000",
    "lots": "1",
    "iv": "0.14",
    "strike_offset": "0",
    "slippage": "0.05",
    "param__row_size": "5",
    "param__target_ibr": "1.0",
    "param__exit_time": "15:15",
}


@pytest.fixture
def queue(settings, private_channel_layer):
    """A private backtests queue on the real Redis broker; its messages are counted, then dropped."""
    name = f"test.backtests.{secrets.token_hex(4)}"
    settings.BACKTESTS_QUEUE = name
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    yield lambda: client.llen(name)
    client.delete(name)
    client.close()


@pytest.fixture
def trader(client):
    user = get_user_model().objects.create_user("trader", password="pw-trader-1")
    client.force_login(user)
    return user


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"param__row_size": "0"}, "param__row_size"),  # below the declared minimum
        ({"param__exit_time": "09:00"}, "param__exit_time"),  # bound checked by the class
        ({"param__target_ibr": "many"}, "param__target_ibr"),
        ({"end": "2024-02-01"}, "end"),
        ({"start": "not a date"}, "start"),
        ({"fill": "recorded"}, "fill"),
        ({"capital": "0"}, "capital"),
        ({"iv": "-1"}, "iv"),
        ({"instruments": ""}, "instruments"),
        ({"instruments": "NSE_INDEX|Nowhere"}, "instruments"),  # nothing in the history store
        ({"start": "2020-01-01", "end": "2020-01-31"}, "instruments"),
        ({"source": "ticks"}, "source"),  # the store holds candles only
    ],
)
def test_bad_requests_give_field_errors_and_start_nothing(client, trader, history_dir, queue, change, field):
    response = client.post("/backtests/new/", {**GOOD, **change})
    assert response.status_code == 400
    assert field in response.context["form"].errors, response.context["form"].errors
    assert f'id="{field}-error"' in response.content.decode()
    assert BacktestRun.objects.count() == 0
    assert queue() == 0


def test_a_good_request_stores_a_queued_run_and_sends_one_task(client, trader, history_dir, queue):
    response = client.post("/backtests/new/", {**GOOD, "param__row_size": "7.5"})
    run = BacktestRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/backtests/{run.pk}/"
    assert (run.user, run.strategy, run.state, run.instruments) == (
        trader,
        "ib_breakout",
        "queued",
        ["NSE_INDEX|Nifty 50"],
    )
    assert run.parameters == {"row_size": 7.5, "target_ibr": 1.0, "exit_time": "15:15"}
    assert queue() == 1 and run.task_id == json.loads(_peek(queue))["headers"]["id"]


def _peek(queue) -> bytes:
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    try:
        return client.lindex(django_settings.BACKTESTS_QUEUE, 0)
    finally:
        client.close()


def test_the_form_is_built_from_the_strategy_declaration(client, trader):
    page = client.get("/backtests/new/?strategy=eighty_percent").content.decode()
    from strategies.library import REGISTRY

    for spec in REGISTRY["eighty_percent"].param_schema():
        assert f'name="param__{spec["name"]}"' in page
    assert 'name="param__row_size"' in client.get("/backtests/new/?strategy=ib_breakout").content.decode()


def test_pages_need_a_login(client):
    for url in ("/backtests/", "/backtests/new/", "/backtests/1/", "/backtests/sweeps/new/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_runs_are_private_but_staff_see_all(client, trader, history_dir, queue):
    other = get_user_model().objects.create_user("other", password="pw-other-1")
    run = services.start_backtest(  # never committed here: its task is not sent
        user=other,
        strategy="ib_breakout",
        parameters={},
        instruments=["NSE_INDEX|Nifty 50"],
        start=date(2024, 3, 1),
        end=date(2024, 3, 31),
    )
    assert client.get(f"/backtests/{run.pk}/").status_code == 404
    assert client.post(f"/backtests/{run.pk}/cancel/").status_code == 404
    assert f"/backtests/{run.pk}/" not in client.get("/backtests/").content.decode()
    staff = get_user_model().objects.create_user("boss", password="pw-boss-1", is_staff=True)
    client.force_login(staff)
    assert client.get(f"/backtests/{run.pk}/").status_code == 200


def test_report_compare_and_sweep_pages_render_results(client, trader, history_dir, queue):
    runs = []
    for row_size, fill in (("5", "underlying"), ("10", "modelled")):
        client.post("/backtests/new/", {**GOOD, "param__row_size": row_size, "fill": fill})
        runs.append(BacktestRun.objects.latest("id"))
    for run in runs:
        assert services.execute_run(run.pk) == "done"
    page = client.get(f"/backtests/{runs[1].pk}/").content.decode()
    assert 'id="equity-chart"' in page and 'id="report-data"' in page
    assert "modelled" in page and "Profit factor" in page and 'data-trade="0"' in page
    compare = client.get(f"/backtests/compare/?run={runs[0].pk}&run={runs[1].pk}").content.decode()
    assert f"Run {runs[0].pk}" in compare and f"Run {runs[1].pk}" in compare and "Calmar" in compare
    assert client.get(f"/backtests/compare/?run={runs[0].pk}").status_code == 400

    response = client.post(
        "/backtests/sweeps/new/",
        {**GOOD, "param__row_size": "", "sweep__row_size": "5, 10, 20", "sweep__target_ibr": "0.5,1"},
    )
    sweep = BacktestSweep.objects.get()
    assert response["Location"] == f"/backtests/sweeps/{sweep.pk}/"
    assert sweep.runs.count() == 6 and queue() == 2 + 6
    for run in sweep.runs.all():
        services.execute_run(run.pk)
    table = client.get(f"/backtests/sweeps/{sweep.pk}/?sort=sharpe&dir=asc").content.decode()
    assert "6 of 6 runs finished" in table
    sharpes = [r.metrics["sharpe"] for r in sweep.runs.all() if r.metrics["sharpe"] is not None]
    order = [int(pk) for pk in _run_links(table)]
    shown = [BacktestRun.objects.get(pk=pk).metrics["sharpe"] for pk in order[: len(sharpes)]]
    assert shown == sorted(sharpes)


def _run_links(html: str) -> list[str]:
    import re

    return re.findall(r'<td><a href="/backtests/(\d+)/">', html)


def test_a_sweep_without_values_or_with_a_bad_value_starts_nothing(client, trader, history_dir, queue):
    response = client.post("/backtests/sweeps/new/", GOOD)
    assert response.status_code == 400 and "at least one parameter" in response.content.decode()
    response = client.post("/backtests/sweeps/new/", {**GOOD, "sweep__row_size": "5, -1"})
    assert response.status_code == 400 and "sweep__row_size" in response.context["form"].errors
    assert BacktestRun.objects.count() == 0 and BacktestSweep.objects.count() == 0 and queue() == 0


def test_the_form_starts_on_the_stored_history(client, trader, history_dir):
    form = client.get("/backtests/new/").context["form"]
    assert (form.initial["start"], form.initial["end"]) == (date(2024, 3, 4), date(2024, 3, 11))
