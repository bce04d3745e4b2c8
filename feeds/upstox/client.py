"""How the project configures the official Upstox SDK: REST hosts, the access token, and the
WebSocket URL the SDK's feeders connect to.

`UPSTOX_API_URL` and `UPSTOX_WS_URL` are the only switch between the real broker and the local fake:
the code path is the production one either way. The SDK hard-codes `wss://api.upstox.com` in its
feeders, so `install_ws_url_rewrite()` swaps the module-level `websocket` name in those modules for
a thin wrapper whose `WebSocketApp` rewrites that prefix (nothing changes when UPSTOX_WS_URL is the
real one).

Never build an `ApiClient` at import time: each one starts a thread pool (fatal before a Celery
prefork). Never log or put the access token in an error.
"""

from __future__ import annotations

import logging
import threading
import types

import upstox_client
import websocket as _websocket
from django.conf import settings
from upstox_client.feeder import market_data_feeder_v3, portfolio_data_feeder

REAL_WS_PREFIX = "wss://api.upstox.com"
API_VERSION = "2.0"

_patch_lock = threading.Lock()


class _NoTokenBodies(logging.Filter):
    """The SDK logs every response body at DEBUG; the login response carries the access token."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(
            b"access_token" in a for a in record.args or () if isinstance(a, bytes | bytearray)
        ) and ("access_token" not in record.getMessage())


_rest_logger = logging.getLogger("upstox_client.rest")
if not any(isinstance(f, _NoTokenBodies) for f in _rest_logger.filters):
    _rest_logger.addFilter(_NoTokenBodies())


def rewrite_ws_url(url: str, ws_base: str) -> str:
    """Point a hard-coded Upstox WebSocket URL at `ws_base` (e.g. ws://127.0.0.1:9001)."""
    ws_base = ws_base.rstrip("/")
    if ws_base and ws_base != REAL_WS_PREFIX and url.startswith(REAL_WS_PREFIX):
        return ws_base + url[len(REAL_WS_PREFIX) :]
    return url


def _websocket_module_for(ws_base: str) -> types.ModuleType:
    """A stand-in for the `websocket` module whose WebSocketApp rewrites the Upstox prefix."""

    class WebSocketApp(_websocket.WebSocketApp):
        def __init__(self, url, *args, **kwargs):
            super().__init__(rewrite_ws_url(url, ws_base), *args, **kwargs)

    module = types.ModuleType("websocket_upstox_rewrite")
    module.__dict__.update({k: v for k, v in vars(_websocket).items() if not k.startswith("__")})
    module.WebSocketApp = WebSocketApp
    module.UPSTOX_WS_BASE = ws_base
    return module


def install_ws_url_rewrite(ws_base: str | None = None) -> None:
    """Make the SDK's market and portfolio feeders connect to `ws_base` (default: UPSTOX_WS_URL).

    Idempotent; re-reads the setting each call, so tests that point at a new fake port just call
    it again. With the real URL the SDK's own `websocket` module is put back untouched.
    """
    ws_base = (ws_base if ws_base is not None else settings.UPSTOX_WS_URL).rstrip("/")
    with _patch_lock:
        if getattr(market_data_feeder_v3.websocket, "UPSTOX_WS_BASE", REAL_WS_PREFIX) == ws_base:
            return
        module = _websocket if ws_base == REAL_WS_PREFIX else _websocket_module_for(ws_base)
        for feeder_module in (market_data_feeder_v3, portfolio_data_feeder):
            feeder_module.websocket = module


def configuration(access_token: str = "") -> upstox_client.Configuration:
    """A fresh SDK Configuration pointed at UPSTOX_API_URL (REST and order host alike).

    `Configuration` is a pseudo-singleton whose first instance wins; resetting the default first
    makes every call honour the current settings (tests move the fake between ports).
    """
    upstox_client.Configuration.set_default(None)
    config = upstox_client.Configuration(sandbox=settings.UPSTOX_SANDBOX)
    base = settings.UPSTOX_API_URL.rstrip("/")
    if base != "https://api.upstox.com":
        # Any other base (the fake) serves REST and orders alike; the real hosts keep the SDK's
        # own defaults, including its separate low-latency order host and the sandbox switch.
        config.host = base
        config.order_host = base
    # Any SDK object that builds its own Configuration() gets these hosts too (but no token).
    upstox_client.Configuration.set_default(config)
    config.access_token = access_token
    # Configuration() adds a StreamHandler to its loggers each time; Django's LOGGING owns them.
    handler = config.logger_stream_handler
    if handler is not None:
        for logger in config.logger.values():
            logger.removeHandler(handler)
    return config


def api_client(access_token: str = "") -> upstox_client.ApiClient:
    """An SDK ApiClient for REST calls and the feeders. Build one per use site, never at import."""
    install_ws_url_rewrite()
    return upstox_client.ApiClient(configuration(access_token))


def close_api_client(client: upstox_client.ApiClient) -> None:
    """Stop the client's thread pool now rather than at garbage collection."""
    try:
        client.pool.close()
        client.pool.join()
    except Exception:  # a pool that never started has nothing to stop
        pass
