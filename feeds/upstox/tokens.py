"""The Upstox access tokens: store one, pick the one the feed and orders use, say whether one is
valid (without ever returning the secret to a page).

Upstox OAuth tokens die at 03:30 IST the day after issue; analytics tokens live about a year and
serve market data only. The feed prefers the day's OAuth token and falls back to an analytics
token; orders need OAuth. Tokens from the environment (UPSTOX_ACCESS_TOKEN /
UPSTOX_ANALYTICS_TOKEN) are used when the database holds none; their expiry is unknown.

Never log a token, put it in an exception message, or return it from `token_status()`.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, time, timedelta

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from feeds.models import UpstoxToken
from feeds.ticks import IST

EXPIRY_TIME = time(3, 30)  # IST
ANALYTICS_VALIDITY = timedelta(days=365)


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"upstox-token:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def next_expiry(issued_at: datetime) -> datetime:
    """The next 03:30 IST strictly after `issued_at`: when an OAuth token issued then dies."""
    local = issued_at.astimezone(IST)
    expiry = datetime.combine(local.date(), EXPIRY_TIME, IST)
    if expiry <= local:
        expiry += timedelta(days=1)
    return expiry


def store_token(
    *,
    access_token: str,
    kind: str = UpstoxToken.OAUTH,
    issued_at: datetime | None = None,
    expires_at: datetime | None = None,
    user_id: str = "",
    source: str = "oauth",
    created_by: str = "",
) -> UpstoxToken:
    """Store a token (encrypted) with its expiry; older tokens of the kind are deleted."""
    access_token = access_token.strip()
    if not access_token:
        raise ValueError("empty access token")
    if kind not in (UpstoxToken.OAUTH, UpstoxToken.ANALYTICS):
        raise ValueError("kind must be oauth or analytics")
    issued_at = issued_at or timezone.now()
    if expires_at is None:
        expires_at = next_expiry(issued_at) if kind == UpstoxToken.OAUTH else issued_at + ANALYTICS_VALIDITY
    token = UpstoxToken(
        kind=kind,
        encrypted_token=_fernet().encrypt(access_token.encode()).decode(),
        issued_at=issued_at,
        expires_at=expires_at,
        user_id=user_id,
        source=source,
        created_by=created_by,
    )
    token.full_clean()
    with transaction.atomic():
        UpstoxToken.objects.filter(kind=kind).delete()
        token.save()
    return token


def _valid(kind: str, now: datetime) -> UpstoxToken | None:
    return UpstoxToken.objects.filter(kind=kind, expires_at__gt=now).order_by("-issued_at").first()


def _secret(token: UpstoxToken) -> str | None:
    try:
        return _fernet().decrypt(token.encrypted_token.encode()).decode()
    except InvalidToken:  # SECRET_KEY changed since it was stored: as good as no token
        return None


def order_token(now: datetime | None = None) -> str | None:
    """The token for orders and account calls: the day's OAuth token (stored, else environment)."""
    stored = _valid(UpstoxToken.OAUTH, now or timezone.now())
    secret = _secret(stored) if stored else None
    return secret or settings.UPSTOX_ACCESS_TOKEN or None


def feed_token(now: datetime | None = None) -> str | None:
    """The token for market data: the day's OAuth token, else an analytics token."""
    now = now or timezone.now()
    token = order_token(now)
    if token:
        return token
    stored = _valid(UpstoxToken.ANALYTICS, now)
    secret = _secret(stored) if stored else None
    return secret or settings.UPSTOX_ANALYTICS_TOKEN or None


def token_status(now: datetime | None = None) -> dict:
    """Whether a valid token exists, for /healthz and the dashboard. Never includes the secret.

    Keys: valid (bool: the feed has a token), orders (bool: an OAuth token for orders), kind,
    source (database | environment | none), expires_at (ISO or None), message (readable).
    """
    now = now or timezone.now()
    for kind in (UpstoxToken.OAUTH, UpstoxToken.ANALYTICS):
        stored = _valid(kind, now)
        if stored is not None and _secret(stored):
            orders = kind == UpstoxToken.OAUTH or bool(settings.UPSTOX_ACCESS_TOKEN)
            expires = stored.expires_at.astimezone(IST)
            return {
                "valid": True,
                "orders": orders,
                "kind": kind,
                "source": "database",
                "expires_at": expires.isoformat(),
                "message": f"Upstox {kind} token valid until {expires:%d %b %H:%M} IST",
            }
    for kind, value in (
        (UpstoxToken.OAUTH, settings.UPSTOX_ACCESS_TOKEN),
        (UpstoxToken.ANALYTICS, settings.UPSTOX_ANALYTICS_TOKEN),
    ):
        if value:
            return {
                "valid": True,
                "orders": kind == UpstoxToken.OAUTH,
                "kind": kind,
                "source": "environment",
                "expires_at": None,
                "message": f"Upstox {kind} token from the environment (expiry unknown)",
            }
    return {
        "valid": False,
        "orders": False,
        "kind": None,
        "source": "none",
        "expires_at": None,
        "message": "No valid Upstox token: connect via Connect Upstox",
    }
