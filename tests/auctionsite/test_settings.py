"""Settings as a fresh checkout sees them: each case runs `python -c` in a clean environment, so
nothing from this test process (or a developer's shell) leaks in."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_DIR, in_ci

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

SHOW_SETTINGS = """
import json
import django
django.setup()
from django.conf import settings as s
from django.db import connection
print(json.dumps({
    "engine": s.DATABASES["default"]["ENGINE"],
    "name": str(s.DATABASES["default"]["NAME"]),
    "vendor": connection.vendor,
    "redis_url": s.REDIS_URL,
    "channel_backend": s.CHANNEL_LAYERS["default"]["BACKEND"],
    "broker": s.CELERY_BROKER_URL,
    "live_trading": s.LIVE_TRADING,
    "debug": s.DEBUG,
    "secret_key": s.SECRET_KEY,
    "var_dir": str(s.VAR_DIR),
    "history_dir": str(s.HISTORY_DIR),
    "watchlist": s.WATCHLIST,
    "upstox_token_set": bool(s.UPSTOX_ACCESS_TOKEN),
    "time_zone": s.TIME_ZONE,
}))
"""


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "auctionsite.settings",
        **extra,
    }


def run_python(script: str, env: dict[str, str], timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def show_settings(env: dict[str, str]) -> dict:
    return json.loads(run_python(SHOW_SETTINGS, env).strip().splitlines()[-1])


def test_defaults_without_env_file(tmp_path):
    if (BASE_DIR / ".env").exists():
        pytest.skip("this checkout has a .env; the defaults are what a checkout without one gets")
    got = show_settings(clean_env(tmp_path))
    var = BASE_DIR / "var"
    assert got["engine"] == "django.db.backends.sqlite3"
    assert got["name"] == str(var / "auctionsite.sqlite3")
    assert got["var_dir"] == str(var) and got["history_dir"] == str(var / "history")
    assert got["redis_url"] == "redis://127.0.0.1:6379/0"
    assert got["broker"] == got["redis_url"]
    assert got["channel_backend"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert got["live_trading"] is False and got["debug"] is False
    assert got["upstox_token_set"] is False
    assert got["watchlist"] == ["NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank"]
    assert got["time_zone"] == "Asia/Kolkata"
    assert got["secret_key"] == (var / "secret_key").read_text().strip()


def test_development_secret_is_generated_once_and_private(tmp_path):
    var = tmp_path / "var"
    env = clean_env(tmp_path, VAR_DIR=str(var))
    first = show_settings(env)["secret_key"]
    secret_file = var / "secret_key"
    assert len(first) >= 50
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert show_settings(env)["secret_key"] == first  # sessions survive a restart


def test_secret_key_from_environment_wins_and_writes_nothing(tmp_path):
    var = tmp_path / "var"
    got = show_settings(clean_env(tmp_path, VAR_DIR=str(var), SECRET_KEY="s" * 50, LIVE_TRADING="true"))
    assert got["secret_key"] == "s" * 50
    assert got["live_trading"] is True
    assert not (var / "secret_key").exists()


@pytest.fixture
def postgres_database():
    """A fresh PostgreSQL database, dropped afterwards. Skips without a server, except in CI."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if in_ci():
            raise
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({type(exc).__name__})")
    name = f"test_settings_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.slow
def test_database_url_switches_to_postgresql(tmp_path, postgres_database):
    env = clean_env(
        tmp_path,
        VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{postgres_database}",
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = show_settings(env)
    assert (got["engine"], got["name"], got["vendor"]) == (
        "django.db.backends.postgresql",
        postgres_database,
        "postgresql",
    )
    out = run_python(
        "import django; django.setup()\n"
        "from django.contrib.auth import get_user_model\n"
        "from django.db import connection\n"
        "get_user_model().objects.create_user('pg-trader', password='x' * 12)\n"
        "with connection.cursor() as c:\n"
        "    c.execute('SELECT current_database(), count(*) FROM auth_user')\n"
        "    print(*c.fetchone())\n",
        env,
    )
    assert out.split() == [postgres_database, "1"]
