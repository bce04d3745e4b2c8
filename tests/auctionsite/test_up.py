"""`manage.py up`: its parts directly, then the whole thing end to end as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import get_commands
from django.core.management.base import CommandError

from auctionsite.management.commands.up import (
    UpPlan,
    desired_processes,
    ensure_demo_login,
    local_redis_spec,
    redis_answers,
    redis_server_executable,
    running_up_pid,
    strategy_worker_spec,
)

BASE_DIR = Path(settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plan(tmp_path, **overrides) -> UpPlan:
    values = dict(
        host="127.0.0.1",
        port=8123,
        feed_source="sim",
        speed=5.0,
        backtest_concurrency=2,
        with_feed=True,
        var_dir=tmp_path,
    )
    values.update(overrides)
    return UpPlan(**values)


@pytest.mark.django_db  # one worker per enabled strategy comes from the database (none here)
def test_the_processes_up_runs(tmp_path):
    specs = {spec.name: spec for spec in desired_processes(plan(tmp_path))}
    assert set(specs) == {"feed", "web", "maintenance", "backtests", "beat"}
    assert specs["feed"].argv[-6].endswith("manage.py")
    assert specs["feed"].argv[-5:] == ("runfeed", "--source", "sim", "--speed", "5")
    assert specs["web"].argv[-5:] == ("-b", "127.0.0.1", "-p", "8123", "auctionsite.asgi:application")
    assert ("SERVE_STATIC", "1") in specs["web"].env
    assert "-Q" in specs["maintenance"].argv and "maintenance" in specs["maintenance"].argv
    backtests = specs["backtests"].argv
    assert backtests[backtests.index("-Q") + 1] == "backtests"
    assert backtests[backtests.index("-c") + 1] == "2"
    beat = specs["beat"].argv
    assert beat[beat.index("-s") + 1] == str(tmp_path / "celerybeat-schedule")
    assert "feed" not in {spec.name for spec in desired_processes(plan(tmp_path, with_feed=False))}


def test_a_strategy_worker_is_solo_with_one_slot_on_its_queue():
    argv = strategy_worker_spec("ib_breakout").argv
    assert argv[argv.index("-Q") + 1] == "strategy.ib_breakout"
    assert argv[argv.index("--pool") + 1] == "solo"
    assert argv[argv.index("-c") + 1] == "1"


def test_redis_answers_only_where_one_runs():
    assert redis_answers(settings.REDIS_URL)
    assert not redis_answers(f"redis://127.0.0.1:{free_port()}/0")


def test_a_local_redis_without_persistence_is_planned_only_for_this_machine(tmp_path):
    assert redis_server_executable()
    spec = local_redis_spec("redis://127.0.0.1:6390/2", var_dir=tmp_path)
    argv = list(spec.argv)
    assert argv[argv.index("--port") + 1] == "6390"
    assert argv[argv.index("--save") + 1] == ""
    assert argv[argv.index("--appendonly") + 1] == "no"
    secured = list(local_redis_spec("redis://:s3cret@localhost:6391/0", var_dir=tmp_path).argv)
    assert "s3cret" not in " ".join(secured)
    assert secured[1] == str(tmp_path / "redis-up.conf")
    assert stat.S_IMODE((tmp_path / "redis-up.conf").stat().st_mode) == 0o600
    assert secured[secured.index("--bind") + 1] == "127.0.0.1"


def test_a_local_redis_for_a_password_url_takes_that_password(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://:pa%20s%22s%C3%A9@127.0.0.1:{port}/0"  # a space, a quote, non-ASCII
    server = subprocess.Popen(list(local_redis_spec(url, var_dir=tmp_path).argv), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not redis_answers(url):
            assert time.monotonic() < deadline, "the password Redis never answered"
            time.sleep(0.05)
        assert not redis_answers(f"redis://127.0.0.1:{port}/0")  # no password: refused
    finally:
        server.terminate()
        server.wait(timeout=10)
    with pytest.raises(CommandError, match="not this machine"):
        local_redis_spec("redis://redis.example.com:6379/0", var_dir=tmp_path)


@pytest.mark.django_db
def test_the_demo_login_is_created_once_and_never_reset(tmp_path):
    first = ensure_demo_login(var_dir=tmp_path)
    assert first.created and first.password
    path = tmp_path / "demo_login"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"password: {first.password}" in path.read_text()
    user = get_user_model().objects.get(username="demo")
    assert user.is_staff and user.is_superuser and user.check_password(first.password)

    user.set_password("changed-by-the-owner")
    user.save()
    again = ensure_demo_login(var_dir=tmp_path)
    assert not again.created
    user.refresh_from_db()
    assert user.check_password("changed-by-the-owner")
    assert f"password: {first.password}" in path.read_text()


@pytest.mark.django_db
def test_a_fresh_database_gets_the_stored_demo_password(tmp_path):
    (tmp_path / "demo_login").write_text("username: demo\npassword: kept-secret-1\n")
    login = ensure_demo_login(var_dir=tmp_path)
    assert login.created and login.password == "kept-secret-1"
    assert get_user_model().objects.get(username="demo").check_password("kept-secret-1")


def test_a_second_up_on_the_same_var_dir_is_refused(tmp_path):
    state = tmp_path / "up.json"
    assert running_up_pid(state) is None
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "up"])
    try:
        state.write_text(json.dumps({"pid": other.pid, "children": {}}))
        assert running_up_pid(state) == other.pid
    finally:
        other.kill()
        other.wait()
    assert running_up_pid(state) is None
    state.write_text(json.dumps({"pid": os.getpid(), "children": {}}))
    assert running_up_pid(state) is None


# --- End to end -------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgids: set[int]) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) in pgids:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def wait_for(predicate, *, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; up's log:\n{log.read_text()[-6000:]}")


def http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # 503 while checks are red is still an answer
    except OSError:
        return False


def read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["children"]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def running_pid(state_path: Path, name: str, *, other_than: int | None = None):
    def check():
        pid = read_state(state_path).get(name, {}).get("pid")
        return pid if pid and pid != other_than and alive(pid) else None

    return check


@pytest.mark.slow
def test_up_runs_restarts_and_stops_everything(tmp_path):
    """The whole system in a subprocess: a private Redis (up starts it), SQLite, var/ in tmp."""
    port, redis_port = free_port(), free_port()
    env = {
        **os.environ,
        "VAR_DIR": str(tmp_path / "var"),
        "HISTORY_DIR": str(tmp_path / "var" / "history"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'up.sqlite3'}",
        # A port where nothing answers: `up` starts its own Redis, which isolates this test's
        # queues and heartbeats from everyone else's on the shared Redis.
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "FEED_SOURCE": "sim",
        "SIM_SPEED": "10",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "up.log"
    state = tmp_path / "var" / "up.json"
    feed_exists = "runfeed" in get_commands()
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--port", str(port), "--grace", "3"],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    seen: set[int] = set()
    try:
        wait_for(
            lambda: http_answers(f"http://127.0.0.1:{port}/healthz"), timeout=120, what="/healthz", log=log
        )
        text = log.read_text()
        assert f"dashboard: http://127.0.0.1:{port}/" in text
        assert "demo login (created now): demo / " in text
        assert "starting" in text and "no persistence" in text
        assert http_answers(f"http://127.0.0.1:{port}/static/admin/css/base.css")

        worker = wait_for(running_pid(state, "maintenance"), timeout=60, what="maintenance worker", log=log)
        os.kill(worker, signal.SIGKILL)
        wait_for(
            running_pid(state, "maintenance", other_than=worker),
            timeout=60,
            what="maintenance worker restart",
            log=log,
        )
        assert "exited with signal SIGKILL" in log.read_text()

        if feed_exists:
            feed = wait_for(running_pid(state, "feed"), timeout=60, what="feed", log=log)
            os.kill(feed, signal.SIGKILL)
            wait_for(running_pid(state, "feed", other_than=feed), timeout=60, what="feed restart", log=log)

        # Everything up started, pool processes and Redis included, before it is asked to stop.
        seen = {p.pid for p in psutil.Process(up.pid).children(recursive=True)}
        for child in read_state(state).values():
            seen.update(child["pids"])
        pgids = set()
        for pid in seen:
            try:
                pgids.add(os.getpgid(pid))
            except ProcessLookupError:
                pass
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=20)
        assert up.returncode == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            [pid for pid in seen if alive(pid)] or group_members(pgids - {os.getpgid(0)})
        ):
            time.sleep(0.1)
        assert [pid for pid in seen if alive(pid)] == []
        assert group_members(pgids - {os.getpgid(0)}) == []
        assert not redis_answers(env["REDIS_URL"]), "the Redis up started is stopped too"
        assert "stopped (SIGTERM)" in log.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        for pid in seen:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    if not feed_exists:
        pytest.skip("runfeed does not exist yet: the feed part (kill, restart) was not exercised")
