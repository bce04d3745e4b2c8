"""A real Celery worker (subprocess, private queue, real Redis) executes web backtests: the stored
metrics and trades equal `manage.py backtest` on the same history store, progress messages reach the
run's Channels group, and a cancel stops a long run within a few sessions and marks it cancelled."""

from __future__ import annotations

import json
import textwrap

import pytest

pytestmark = pytest.mark.slow

# Runs inside `manage.py shell` with the site's settings: creates a queued run, joins its progress
# group, sends the task through the service, collects the worker's messages until the run finishes
# (cancelling it first when asked), and prints the messages and the stored run as JSON.
SCRIPT = textwrap.dedent(
    """
    import asyncio, json, time
    from datetime import date
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer
    from django.contrib.auth import get_user_model
    from strategies.backtests import services
    from strategies.backtests.models import BacktestRun, progress_group

    STRATEGY, START, END, PARAMS, CANCEL_AFTER = {args}

    def make_run():
        return BacktestRun.objects.create(
            user=get_user_model().objects.get(username="bt"), strategy=STRATEGY, parameters=PARAMS,
            instruments=["NSE_INDEX|Nifty 50"], start=date.fromisoformat(START), end=date.fromisoformat(END),
            capital=500000,
        )

    async def main():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        run = await sync_to_async(make_run)()
        await layer.group_add(progress_group(run.pk), channel)
        await sync_to_async(services.enqueue)(run.pk)
        messages, cancelled_at, deadline = [], None, time.monotonic() + 150
        while time.monotonic() < deadline:
            try:
                message = await asyncio.wait_for(layer.receive(channel), 5)
            except asyncio.TimeoutError:
                continue
            messages.append(message)
            if CANCEL_AFTER is not None and cancelled_at is None and message["done"] >= CANCEL_AFTER:
                cancelled_at = time.monotonic()
                await sync_to_async(services.request_cancel)(run)
            if message["state"] in ("done", "failed", "cancelled"):
                break
        stopped_after = None if cancelled_at is None else time.monotonic() - cancelled_at
        run = await sync_to_async(BacktestRun.objects.get)(pk=run.pk)
        print(json.dumps({
            "messages": messages, "stopped_after_s": stopped_after, "state": run.state, "error": run.error,
            "done": run.sessions_done, "total": run.sessions_total, "metrics": run.metrics,
            "trades": run.trades, "summaries": len(run.session_summaries),
        }))

    asyncio.run(main())
    """
)


def run_through_worker(site, strategy, start, end, params=None, cancel_after=None) -> dict:
    code = SCRIPT.replace("{args}", repr((strategy, start, end, params or {}, cancel_after)))
    out = site.shell(code, timeout=240)
    return json.loads(out.strip().splitlines()[-1])


def test_a_worker_run_stores_what_the_shell_command_prints(backtest_site):
    got = run_through_worker(backtest_site, "ib_breakout", "2024-03-01", "2024-03-31", {"row_size": "2.5"})
    assert got["state"] == "done", (got["error"], backtest_site.worker_log())
    shell = backtest_site.server.manage(
        "backtest",
        "ib_breakout",
        "--from",
        "2024-03-01",
        "--to",
        "2024-03-31",
        "--param",
        "row_size=2.5",
        "--json",
    )
    expected = json.loads(shell.stdout)
    assert expected["metrics"]["trades"] > 0
    assert got["metrics"] == expected["metrics"]
    assert [{k: v for k, v in t.items() if k != "profile_at_entry"} for t in got["trades"]] == expected[
        "trades"
    ]
    assert (got["done"], got["total"], got["summaries"]) == (6, 6, 6)

    messages = got["messages"]
    assert all(m["type"] == "backtest.progress" for m in messages)
    assert [m["done"] for m in messages] == sorted(m["done"] for m in messages)
    assert messages[-1] == {
        "type": "backtest.progress",
        "done": 6,
        "total": 6,
        "eta_s": None,
        "state": "done",
    }


def test_cancel_stops_a_long_run_between_sessions(backtest_site):
    got = run_through_worker(backtest_site, "eighty_percent", "2023-01-01", "2023-12-31", cancel_after=3)
    assert got["state"] == "cancelled", (got, backtest_site.worker_log())
    assert got["total"] == 120 and 3 <= got["done"] < 60, got["done"]
    assert got["metrics"] == {} and got["trades"] == []
    assert got["messages"][-1]["state"] == "cancelled"
    # prompt: the worker checks before every session (~50 ms each); generous for a loaded machine
    assert got["stopped_after_s"] < 20


SWEEP_SCRIPT = textwrap.dedent(
    """
    import json, time
    from datetime import date
    from django.contrib.auth import get_user_model
    from strategies.backtests import services
    from strategies.backtests.models import FINISHED_STATES

    sweep = services.start_sweep(
        user=get_user_model().objects.get(username="bt"), strategy="ib_breakout", parameters={},
        grid={"row_size": [2.5, 5.0, 10.0]}, instruments=["NSE_INDEX|Nifty 50"],
        start=date(2024, 3, 1), end=date(2024, 3, 31),
    )
    deadline = time.monotonic() + 120
    while sweep.runs.exclude(state__in=FINISHED_STATES).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    def shell_metrics(row_size):
        from io import StringIO
        from django.core.management import call_command
        out = StringIO()
        call_command("backtest", "ib_breakout", "--from", "2024-03-01", "--to", "2024-03-31",
                     "--param", f"row_size={row_size}", "--json", stdout=out)
        return json.loads(out.getvalue())["metrics"]

    print(json.dumps([
        [r.parameters, r.state, r.task_id, r.metrics, shell_metrics(r.parameters["row_size"])]
        for r in sweep.runs.order_by("id")
    ]))
    """
)


def test_a_sweep_fans_out_one_task_per_combination(backtest_site):
    runs = json.loads(backtest_site.shell(SWEEP_SCRIPT).strip().splitlines()[-1])
    assert [params["row_size"] for params, *_ in runs] == [2.5, 5.0, 10.0]
    assert all(state == "done" for _, state, *_ in runs), backtest_site.worker_log()
    assert len({task_id for _, _, task_id, *_ in runs}) == 3
    for _, _, _, stored, from_shell in runs:  # manage.py backtest with the run's parameters
        assert stored == from_shell and stored["trades"] > 0
