"""Health checks behind /healthz: database, Redis, the feed's heartbeat, the workers' heartbeats,
and whether an Upstox token is configured.

Each check is a plain function returning a `Check`; none raises. A failing check reports the
error's class and a short message, never a traceback and never a secret (the Upstox token, a
password inside a URL). Nothing here writes: the feed and the workers write their heartbeats.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit, urlunsplit

import redis
from django.conf import settings
from django.db import connections

from feeds.groups import FEED_STATUS_KEY, WORKER_HEARTBEATS_KEY
from feeds.upstox.tokens import token_status

UP = "up"
DOWN = "down"
DEGRADED = "degraded"  # alive but something needs a look (a feed alert); does not fail /healthz
NOT_CONFIGURED = "not configured"
UNKNOWN = "unknown"

# The feed refreshes its status hash every second: ten missed beats means it is stuck or gone.
FEED_STALE_MS = 10_000
# Workers beat less often (between tasks); a worker silent this long is considered dead.
WORKER_STALE_MS = 30_000
REDIS_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    detail: str = ""
    data: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == DOWN

    def as_json(self) -> dict:
        out = asdict(self)
        del out["name"]
        if not out["data"]:
            del out["data"]
        return out


def now_ms() -> int:
    return int(time.time() * 1000)


def describe_error(exc: BaseException) -> str:
    """`ClassName: message` with any URL credentials masked, cut short."""
    message = str(exc)
    secrets = (
        settings.UPSTOX_ACCESS_TOKEN,
        settings.UPSTOX_API_SECRET,
        _url_password(settings.REDIS_URL),
        *(str(db.get("PASSWORD") or "") for db in settings.DATABASES.values()),
    )
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return f"{type(exc).__name__}: {message}"[:300]


def redacted_url(url: str) -> str:
    """The URL without its password, for display."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{host}")
    return urlunsplit(parts)


def _url_password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def redis_client(url: str | None = None) -> redis.Redis:
    """A short-timeout client, so a dead Redis makes /healthz answer quickly instead of hanging."""
    return redis.Redis.from_url(
        url or settings.REDIS_URL,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        decode_responses=True,
    )


def check_database(alias: str = "default") -> Check:
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error is a down database, reported not raised
        return Check("database", DOWN, describe_error(exc))
    return Check("database", UP, connections[alias].vendor)


def check_redis(client: redis.Redis) -> Check:
    try:
        client.ping()
    except Exception as exc:
        return Check("redis", DOWN, describe_error(exc))
    return Check("redis", UP, redacted_url(settings.REDIS_URL))


def check_feed(client: redis.Redis, *, key: str = FEED_STATUS_KEY, at_ms: int | None = None) -> Check:
    """The feed's heartbeat age from its status hash; its `alert` (if any) degrades the check."""
    at_ms = now_ms() if at_ms is None else at_ms
    try:
        status = client.hgetall(key)
    except Exception as exc:
        return Check("feed", DOWN, describe_error(exc))
    if not status:
        return Check("feed", DOWN, "no feed status: the feed is not running")
    try:
        heartbeat_ms = int(float(status.get("heartbeat_ms", "")))
    except ValueError:
        return Check("feed", DOWN, "feed status has no heartbeat_ms")
    age_ms = at_ms - heartbeat_ms
    data = {
        "heartbeat_age_s": round(age_ms / 1000, 1),
        "source": status.get("source", ""),
        "connected": status.get("connected", "").strip().lower() in {"1", "true", "yes"},
        "session_state": status.get("session_state") or status.get("state", ""),
    }
    alert = status.get("alert", "")
    if alert:
        data["alert"] = alert
    if age_ms > FEED_STALE_MS:
        return Check("feed", DOWN, f"heartbeat is {age_ms / 1000:.0f} s old", data)
    if alert:
        return Check("feed", DEGRADED, alert, data)
    return Check("feed", UP, "heartbeat fresh", data)


def check_workers(
    client: redis.Redis, *, key: str = WORKER_HEARTBEATS_KEY, at_ms: int | None = None
) -> Check:
    """Every worker in the heartbeat hash must have beaten recently. None at all is not a failure:
    with no strategy enabled no worker runs."""
    at_ms = now_ms() if at_ms is None else at_ms
    try:
        beats = client.hgetall(key)
    except Exception as exc:
        return Check("workers", DOWN, describe_error(exc))
    if not beats:
        return Check("workers", UP, "no workers have reported")
    ages: dict[str, float] = {}
    stale: list[str] = []
    for name, value in sorted(beats.items()):
        try:
            age_ms = at_ms - int(float(value))
        except ValueError:
            stale.append(name)
            continue
        ages[name] = round(age_ms / 1000, 1)
        if age_ms > WORKER_STALE_MS:
            stale.append(name)
    data = {"heartbeat_age_s": ages}
    if stale:
        return Check("workers", DOWN, "silent: " + ", ".join(stale), data)
    return Check("workers", UP, f"{len(ages)} reporting", data)


def check_upstox() -> Check:
    """Whether a usable token is stored or configured (validating it would cost a broker round
    trip). No token is not a failure: the simulated feed and paper trading need none."""
    try:
        status = token_status()
    except Exception as exc:  # the database check reports the database; this one only says unknown
        return Check("upstox", UNKNOWN, describe_error(exc))
    if not status["valid"]:
        return Check("upstox", NOT_CONFIGURED, status["message"])
    data = {k: status[k] for k in ("kind", "source", "expires_at", "orders")}
    return Check("upstox", UP, status["message"], data)


def check_trading() -> Check:
    """Trading states (ACTIVE / REDUCING / HALTED, account and per strategy). A HALTED or
    REDUCING account degrades /healthz (trading needs a look) without failing it."""
    try:
        from strategies.trading import health as trading_health

        data = trading_health()
    except Exception as exc:  # the database check reports the database
        return Check("trading", UNKNOWN, describe_error(exc))
    account = data["account"]
    detail = f"account {account['state']}" + (f": {account['reason']}" if account["reason"] else "")
    status = UP if account["state"] == "active" else DEGRADED
    return Check("trading", status, detail[:300], data)


def run_checks() -> tuple[str, dict[str, Check]]:
    """Every check, and the overall status: DOWN if any check is down, DEGRADED if any is
    degraded, else UP."""
    client = redis_client()
    try:
        redis_check = check_redis(client)
        if redis_check.failed:
            # Do not wait out the timeout twice more for the same dead server.
            unreachable = "Redis unreachable"
            feed, workers = Check("feed", DOWN, unreachable), Check("workers", DOWN, unreachable)
        else:
            feed, workers = check_feed(client), check_workers(client)
    finally:
        client.close()
    database = check_database()
    upstox = check_upstox() if not database.failed else Check("upstox", UNKNOWN, "database unreachable")
    trading = check_trading() if not database.failed else Check("trading", UNKNOWN, "database unreachable")
    checks = [database, redis_check, feed, workers, upstox, trading]
    if any(c.failed for c in checks):
        overall = DOWN
    elif any(c.status == DEGRADED for c in checks):
        overall = DEGRADED
    else:
        overall = UP
    return overall, {c.name: c for c in checks}
