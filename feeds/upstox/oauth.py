"""The daily Upstox login (OAuth authorisation-code flow) through the SDK: the authorisation URL a
staff user is sent to, and the exchange of the returned code for an access token (stored at once).

The token never leaves this module except into `feeds.upstox.tokens.store_token`: it is not
returned, logged, or put into an error message.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

import upstox_client
from django.conf import settings
from upstox_client.rest import ApiException

from feeds.models import UpstoxToken
from feeds.upstox import client as upstox
from feeds.upstox.tokens import store_token

# The SDK's path for the login dialog (LoginApi.authorize); the browser, not the server, opens it.
DIALOG_PATH = "/v2/login/authorization/dialog"
REQUEST_TIMEOUT = (5, 30)


class LoginError(Exception):
    """The login could not complete; the message is safe to show (never holds a secret)."""


def new_state() -> str:
    return secrets.token_urlsafe(24)


def authorisation_url(state: str) -> str:
    """Where to send the staff user's browser to log in to Upstox (then back to the callback)."""
    if not settings.UPSTOX_API_KEY:
        raise LoginError("UPSTOX_API_KEY is not configured")
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.UPSTOX_API_KEY,
            "redirect_uri": settings.UPSTOX_REDIRECT_URI,
            "state": state,
        }
    )
    return f"{settings.UPSTOX_API_URL.rstrip('/')}{DIALOG_PATH}?{query}"


def exchange_code(*, code: str, created_by: str = "") -> UpstoxToken:
    """Exchange an authorisation code for the day's access token (SDK `LoginApi.token`) and store it."""
    if not code:
        raise LoginError("Upstox returned no authorisation code")
    api = upstox.api_client()
    try:
        response = upstox_client.LoginApi(api).token(
            upstox.API_VERSION,
            code=code,
            client_id=settings.UPSTOX_API_KEY,
            client_secret=settings.UPSTOX_API_SECRET,
            redirect_uri=settings.UPSTOX_REDIRECT_URI,
            grant_type="authorization_code",
            _request_timeout=REQUEST_TIMEOUT,
        )
    except ApiException as e:
        raise LoginError(f"Upstox refused the login (HTTP {e.status})") from None
    except Exception as e:  # network errors: say what kind, never the request (it holds the secret)
        raise LoginError(f"Upstox could not be reached ({type(e).__name__})") from None
    finally:
        upstox.close_api_client(api)
    if not response.access_token:
        raise LoginError("Upstox returned no access token")
    return store_token(
        access_token=response.access_token,
        kind=UpstoxToken.OAUTH,
        user_id=response.user_id or "",
        source="oauth",
        created_by=created_by,
    )
