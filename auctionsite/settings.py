"""Django settings for the auction trading platform.

Every setting a deployment may change is read once, here, through django-environ from the
environment or a `.env` file at the project root; `.env.example` documents every key. With no
`.env` at all the project runs as a local demo: SQLite and the history store under `var/`, Redis on
127.0.0.1:6379, paper trading only, and a development secret generated once into `var/`.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _development_secret() -> str:
    """A per-checkout secret kept in var/ so sessions survive restarts; never used when SECRET_KEY is set."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


# --- Core -------------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="") or _development_secret()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "auctionsite",
    "persistence",
    "feeds",
    "strategies",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "auctionsite.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "auctionsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'auctionsite.sqlite3'}"),
}
DATABASES["default"].setdefault("ATOMIC_REQUESTS", False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (feed, workers, web) share the file: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- Time: exchange time ----------------------------------------------------------------------
LANGUAGE_CODE = "en-in"
TIME_ZONE = "Asia/Kolkata"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# Daphne serves no static files; `manage.py up` sets this so the ASGI app serves them itself.
SERVE_STATIC = env.bool("SERVE_STATIC", default=False)

# --- Redis, Channels, Celery ------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")

CHANNEL_LAYERS = {
    "default": {
        # The pub/sub layer delivers every group send; the core layer drops past its capacity.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=60 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=55 * 60)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_EXPIRES = 3600

# --- Market data and history ------------------------------------------------------------------
HISTORY_DIR = Path(env.str("HISTORY_DIR", default=str(VAR_DIR / "history")))
WATCHLIST = env.list("WATCHLIST", default=["NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank"])
FEED_SOURCE = env.str("FEED_SOURCE", default="sim")
FEED_SNAPSHOT_MS = env.int("FEED_SNAPSHOT_MS", default=100)
FEED_FLUSH_MS = env.int("FEED_FLUSH_MS", default=500)
FEED_STREAM_MS = env.int("FEED_STREAM_MS", default=100)  # Redis Stream batches (the live path)
# Upstox full mode: an instrument's five-level depth is read (and stored as a depth snapshot) at most
# once per this many ms; its other ticks carry the best bid/ask only. 0: every tick.
FEED_DEPTH_EVERY_MS = env.int("FEED_DEPTH_EVERY_MS", default=1000)
UPSTOX_OPTION_STRIKES = env.int("UPSTOX_OPTION_STRIKES", default=5)  # subscribed strikes each side of ATM
# Where the feed decodes frames: "process" (a child process; the default), "proto" (the SDK thread).
UPSTOX_FEED_DECODE = env.str("UPSTOX_FEED_DECODE", default="process")
TICK_STREAM_MAXLEN = env.int("TICK_STREAM_MAXLEN", default=500_000)
# Called after every feed flush (runfeed): strategy dispatch sends each enabled strategy its claim check.
# The dashboard's live auction states (one engine per watched index) read the same ranges.
FEED_FLUSH_HOOKS = ["strategies.dispatch.flush_hook", "auctionsite.auction_feed.flush_hook"]
SIM_SPEED = env.float("SIM_SPEED", default=1.0)

# --- Upstox -----------------------------------------------------------------------------------
# The access token is a secret: it is read here and never logged, rendered or put in an error.
UPSTOX_API_KEY = env.str("UPSTOX_API_KEY", default="")
UPSTOX_API_SECRET = env.str("UPSTOX_API_SECRET", default="")
UPSTOX_REDIRECT_URI = env.str("UPSTOX_REDIRECT_URI", default="http://127.0.0.1:8000/upstox/callback/")
UPSTOX_ACCESS_TOKEN = env.str("UPSTOX_ACCESS_TOKEN", default="")
UPSTOX_ANALYTICS_TOKEN = env.str("UPSTOX_ANALYTICS_TOKEN", default="")
UPSTOX_API_URL = env.str("UPSTOX_API_URL", default="https://api.upstox.com")
UPSTOX_WS_URL = env.str("UPSTOX_WS_URL", default="wss://api.upstox.com")
UPSTOX_SANDBOX = env.bool("UPSTOX_SANDBOX", default=False)
UPSTOX_INSTRUMENTS_URL = env.str(
    "UPSTOX_INSTRUMENTS_URL",
    default="https://assets.upstox.com/market-quote/instruments/exchange/NSE.json.gz",
)

# --- Trading ----------------------------------------------------------------------------------
# Paper trading unless this is set AND a staff user switches a strategy to live AND a token is valid.
LIVE_TRADING = env.bool("LIVE_TRADING", default=False)
# Paper option orders of the live strategy workers: strike offset in listed strikes (0 at the money,
# +n in, -n out of the money), nearest expiry at least this many days away, slippage on the last
# price when the option's book is unknown, the IV of modelled premiums (no option tick from the
# feed), and the time any position still open is squared off (IST; a net behind the strategies').
PAPER_STRIKE_OFFSET = env.int("PAPER_STRIKE_OFFSET", default=0)
PAPER_MIN_DAYS_TO_EXPIRY = env.int("PAPER_MIN_DAYS_TO_EXPIRY", default=0)
PAPER_SLIPPAGE = env.str("PAPER_SLIPPAGE", default="0.05")
PAPER_OPTION_IV = env.float("PAPER_OPTION_IV", default=0.14)
SQUARE_OFF_TIME = env.str("SQUARE_OFF_TIME", default="15:20")

# Account-wide risk limits over the defaults in strategies.execution.risk.RiskLimits, e.g.
# RISK_LIMITS=account_max_daily_loss=50000,max_open_positions=4,entry_cutoff=15:00
RISK_LIMITS = env.dict("RISK_LIMITS", default={})

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": "INFO"},
        "urllib3": {"level": "WARNING"},
        "upstox_client": {"level": "WARNING"},
        "websocket": {"level": "WARNING"},
    },
}
