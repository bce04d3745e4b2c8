"""Shared test fixtures. Tests talk to the real Redis on REDIS_URL (started by .ci/run).

For everyone's reuse:
- `test_redis_url`: REDIS_URL on a separate database number (TEST_REDIS_DB, default 9), for tests
  that must use the fixed keys of `feeds.groups` without touching a running system's.
- `private_channel_layer`: the real Redis pub/sub channel layer under a unique prefix, so groups
  such as MARKET_GROUP are private to the test.
- `daphne_server`: a real Daphne serving `auctionsite.asgi:application` in a subprocess, with its own
  migrated SQLite database, var/ and history directories, Redis database and channel prefix.
  `daphne_server.manage(...)` runs `manage.py` against the same environment, `spawn_manage(...)`
  starts one in the background (e.g. runfeed; stopped with the server), and `sibling()` gives a
  second server over the same database that a test may stop and restart.
- `daphne_user`: a (non-staff) user in that server's database; `(username, password)`.
- `browser` / `page`: headless Chromium (/usr/bin/chromium) through Playwright. Skipped when Chromium
  is absent, except in CI (CI=true), where that is a failure. Mark such tests `@pytest.mark.browser`.
  An uncaught JavaScript exception on a `page` fails its test.
- `ARTIFACTS_DIR` (var/test-artifacts/): screenshots; CI keeps the directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

BASE_DIR = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = BASE_DIR / "var" / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT_S = 60


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def redis_url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def test_redis_url() -> str:
    from django.conf import settings

    return redis_url_with_db(settings.REDIS_URL, int(os.environ.get("TEST_REDIS_DB", "9")))


@pytest.fixture
def private_channel_layer(settings):
    """The real pub/sub channel layer under a unique prefix; returns the prefix."""
    prefix = f"test-{secrets.token_hex(6)}"
    layers = {
        key: {**value, "CONFIG": {**value["CONFIG"]} if "CONFIG" in value else {}}
        for key, value in settings.CHANNEL_LAYERS.items()
    }
    layers["default"]["CONFIG"]["prefix"] = prefix
    settings.CHANNEL_LAYERS = layers  # channels drops its cached layers on setting_changed
    return prefix


# --- A real Daphne ------------------------------------------------------------------------------

# The subprocess's settings: the project's, plus a private channel prefix (so its groups do not mix
# with another process's on the shared Redis).
_SERVER_SETTINGS = textwrap.dedent(
    """
    import os
    from auctionsite.settings import *  # noqa: F403
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = os.environ["TEST_CHANNEL_PREFIX"]  # noqa: F405
    """
)


@dataclass
class DaphneServer:
    port: int
    env: dict[str, str]
    redis_url: str
    channel_prefix: str
    var_dir: Path
    process: subprocess.Popen | None = None
    children: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.var_dir / f"daphne-{self.port}.log"

    def start(self) -> None:
        """Start Daphne and wait until it serves pages."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "daphne"),
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "auctionsite.asgi:application",
                ],
                cwd=BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_until_serving(self)

    def stop(self) -> None:
        """Stop the background commands and Daphne (SIGTERM, then SIGKILL)."""
        for child in self.children:
            stop_process(child)
        self.children.clear()
        if self.process is not None:
            stop_process(self.process)

    def sibling(self) -> DaphneServer:
        """Another server on a new port over the same database, Redis and channel prefix (not started)."""
        return DaphneServer(
            port=free_port(),
            env=self.env,
            redis_url=self.redis_url,
            channel_prefix=self.channel_prefix,
            var_dir=self.var_dir,
        )

    def manage(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """`manage.py <args>` against the server's database, Redis and settings."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def spawn_manage(self, *args: str, log_name: str) -> subprocess.Popen:
        """Start `manage.py <args>` in the background (stopped with the server)."""
        with open(self.var_dir / log_name, "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.children.append(proc)
        return proc

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def _wait_until_serving(server: DaphneServer) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"daphne exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + "/accounts/login/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"daphne did not serve within {SERVER_START_TIMEOUT_S} s:\n{server.log_tail()}")


def child_env(**overrides: str) -> dict[str, str]:
    """The environment of a process a test starts: the parent's, minus its Django, database, Redis,
    Celery and pytest settings, with no Upstox token and unbuffered output, plus `overrides`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_", "REDIS_", "CELERY_", "PYTEST_"))
    }
    env.update({"UPSTOX_ACCESS_TOKEN": "", "PYTHONUNBUFFERED": "1", **overrides})
    return env


def site_env(
    root: Path, settings_module: str, redis_url: str, channel_prefix: str, **extra: str
) -> dict[str, str]:
    """A served site's environment under `root`: its settings module in `root/settings_pkg`, its
    own SQLite, var/ and history store, the test Redis with a private channel prefix, static files
    served by the ASGI app."""
    return child_env(
        DJANGO_SETTINGS_MODULE=settings_module,
        PYTHONPATH=os.pathsep.join([str(root / "settings_pkg"), str(BASE_DIR)]),
        TEST_CHANNEL_PREFIX=channel_prefix,
        DATABASE_URL=f"sqlite:///{root / 'db.sqlite3'}",
        VAR_DIR=str(root / "var"),
        HISTORY_DIR=str(root / "history"),
        REDIS_URL=redis_url,
        SERVE_STATIC="true",
        DEBUG="false",
        **extra,
    )


@pytest.fixture(scope="session")
def daphne_server(tmp_path_factory, test_redis_url) -> DaphneServer:
    """A real Daphne on a free port with a freshly migrated SQLite database of its own."""
    root = tmp_path_factory.mktemp("daphne")
    (root / "settings_pkg").mkdir()
    (root / "settings_pkg" / "daphne_test_settings.py").write_text(_SERVER_SETTINGS)
    prefix = f"test-{secrets.token_hex(6)}"
    port = free_port()
    env = site_env(root, "daphne_test_settings", test_redis_url, prefix)
    server = DaphneServer(port=port, env=env, redis_url=test_redis_url, channel_prefix=prefix, var_dir=root)
    server.manage("migrate", "--noinput", timeout=300)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        _forget_feed_state(test_redis_url)


def _forget_feed_state(redis_url: str) -> None:
    """Remove what a feed run against the test Redis database leaves there (never FLUSHDB: shared)."""
    import redis

    from feeds.groups import FEED_STATUS_KEY, LAST_SNAPSHOT_KEY, tick_stream_key

    client = redis.Redis.from_url(redis_url)
    try:
        keys = [FEED_STATUS_KEY, LAST_SNAPSHOT_KEY, *client.scan_iter(match=tick_stream_key("*"), count=1000)]
        client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def daphne_user(daphne_server) -> tuple[str, str]:
    """A plain (non-staff) user in the Daphne server's database."""
    username, password = "trader", secrets.token_urlsafe(12)
    script = (
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user({username!r}, password={password!r})"
    )
    daphne_server.manage("shell", "-c", script)
    return username, password


# --- Headless Chromium --------------------------------------------------------------------------


# Module scope, not session: Playwright's sync API keeps an event loop running in the main thread
# while it is started, which breaks every later test that calls asyncio.run().
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is not installed (apt-get install chromium, or `make browser`)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser context and page; a screenshot of the final state goes to ARTIFACTS_DIR.
    An uncaught JavaScript exception on the page fails the test (at teardown)."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-IN", timezone_id="Asia/Kolkata"
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    js_errors: list[str] = []
    context.on("weberror", lambda error: js_errors.append(str(error.error)))
    try:
        yield page
    finally:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS_DIR / f"{request.node.name}-final.png"), full_page=True)
        context.close()
    if js_errors:
        pytest.fail("JavaScript errors on the page:\n" + "\n".join(js_errors))


# --- A Redis of a test module's own -------------------------------------------------------------


@pytest.fixture(scope="module")
def private_redis_url(tmp_path_factory):
    """A throwaway redis-server on a free port, for tests whose keys every process on this host
    shares (beat's `beat@<host>` heartbeat, the docker healthcheck's host-named entries)."""
    from auctionsite.management.commands.up import redis_server_executable

    executable = redis_server_executable()
    if executable is None:
        pytest.skip("no redis-server to start")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()
    yield url
    server.terminate()
    server.wait(timeout=10)
