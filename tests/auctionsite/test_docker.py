"""docker/: no Docker engine runs here, so the files are checked against the project itself.

Every service's command must be a real entry point (a manage.py command whose parser accepts
the arguments, a Celery worker on a queue the routing produces, beat, the ASGI application), and
the healthchecks they name must work against a real Redis.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import yaml
from django.conf import settings
from django.core.management import get_commands, load_command_class

from auctionsite.celery import BACKTESTS_QUEUE, MAINTENANCE_QUEUE, route_task
from feeds.groups import FEED_STATUS_KEY, WORKER_HEARTBEATS_KEY

DOCKER = Path(settings.BASE_DIR) / "docker"
APP_IMAGE = "auctionsite:latest"
APP_SERVICES = [
    "migrate",
    "web",
    "feed",
    "worker-ib-breakout",
    "worker-backtests",
    "worker-maintenance",
    "beat",
]
ENV_DEFAULT = re.compile(r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}")


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` as it resolves with nothing set."""
    return ENV_DEFAULT.sub(lambda m: m.group(2) or "x", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def app_services(compose) -> dict:
    return {name: svc for name, svc in compose["services"].items() if svc.get("image") == APP_IMAGE}


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_expected_services_exist(compose, app_services):
    assert {"redis", "postgres"} <= set(compose["services"])
    assert set(app_services) == set(APP_SERVICES)
    for name, svc in compose["services"].items():
        for dependency in svc.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"
        if name != "migrate":
            assert svc["healthcheck"]["test"], f"{name} has no healthcheck"


def test_app_services_are_wired_by_environment(app_services):
    for name, svc in app_services.items():
        env = svc["environment"]
        assert interpolate(env["REDIS_URL"]) == "redis://redis:6379/0", name
        assert interpolate(env["DATABASE_URL"]).startswith("postgres://auctionsite:"), name
        assert "@postgres:5432/" in env["DATABASE_URL"], name
        assert "SECRET_KEY" in env, name
        if name != "migrate":
            assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_command_is_a_real_entry_point(app_services, name):
    svc = app_services[name]
    argv = [interpolate(part) for part in svc["command"]]
    if argv[:2] == ["python", "manage.py"]:
        commands = get_commands()
        command = argv[2]
        if command == "runfeed" and command not in commands:
            pytest.skip("runfeed (feeds/management/commands/runfeed.py) does not exist yet")
        assert command in commands, f"{name}: manage.py has no command {command!r}"
        parser = load_command_class(commands[command], command).create_parser("manage.py", command)
        parser.parse_args(argv[3:])  # exits (fails the test) on an option the command lacks
    elif argv[:3] == ["celery", "-A", "auctionsite"]:
        assert importlib.import_module("auctionsite.celery").app.main == "auctionsite"
        if argv[3] == "worker":
            queue = option(argv, "-Q")
            match = re.fullmatch(r"strategy\.([a-z0-9_]+)", queue)
            if match:
                slug = match.group(1)
                assert route_task("strategies.tasks.evaluate", (), {"slug": slug}, {}) == {"queue": queue}
                assert (option(argv, "--pool"), option(argv, "-c")) == ("solo", "1")
            else:
                assert queue in {MAINTENANCE_QUEUE, BACKTESTS_QUEUE}, f"no task is routed to {queue!r}"
            node = option(argv, "-n").removesuffix("@%h")
            assert svc["healthcheck"]["test"][-2:] == ["heartbeat", node]
        else:
            assert argv[3] == "beat"
            assert svc["healthcheck"]["test"][-2:] == ["heartbeat", "beat"]
    elif argv[0] == "daphne":
        module, _, attribute = argv[-1].partition(":")
        assert (module, attribute) == ("auctionsite.asgi", "application")
        assert callable(getattr(importlib.import_module(module), attribute))
    else:
        pytest.fail(f"{name}: unknown entry point {argv}")


def test_dockerfile_builds_a_non_root_image_from_the_requirements():
    lines = [line.strip() for line in (DOCKER / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert "COPY requirements.txt ." in instructions
    assert "RUN pip install -r requirements.txt" in instructions
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", ".env", "var"} <= set(ignored)


# --- The healthcheck script, against a Redis of its own -----------------------------------------
@pytest.fixture
def private_redis(private_redis_url):
    client = redis.Redis.from_url(private_redis_url)
    yield private_redis_url, client
    client.close()


def healthcheck(*args: str, redis_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), *args],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_heartbeat_check_follows_this_hosts_worker(private_redis):
    url, client = private_redis
    node = f"backtests@{socket.gethostname()}"
    assert healthcheck("heartbeat", "backtests", redis_url=url).returncode == 1
    client.hset(WORKER_HEARTBEATS_KEY, node, int(time.time() * 1000))
    assert healthcheck("heartbeat", "backtests", redis_url=url).returncode == 0
    client.hset(WORKER_HEARTBEATS_KEY, node, int(time.time() * 1000) - 120_000)
    stale = healthcheck("heartbeat", "backtests", redis_url=url)
    assert stale.returncode == 1 and "s old" in stale.stderr


def test_feed_check_reads_the_feed_heartbeat(private_redis):
    url, client = private_redis
    client.delete(FEED_STATUS_KEY)
    assert healthcheck("feed", redis_url=url).returncode == 1
    client.hset(FEED_STATUS_KEY, "heartbeat_ms", int(time.time() * 1000))
    assert healthcheck("feed", redis_url=url).returncode == 0


def test_checks_fail_without_a_traceback_when_nothing_answers():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for args in (("feed",), ("web", str(port))):
        result = healthcheck(*args, redis_url=f"redis://127.0.0.1:{port}/0")
        assert result.returncode == 1, args
        assert "Traceback" not in result.stderr and result.stderr.strip(), args
