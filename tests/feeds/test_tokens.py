"""The Upstox token store, its status selector, the upstox_token command and Connect Upstox."""

from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.test import Client

from feeds.models import UpstoxToken
from feeds.ticks import IST
from feeds.upstox import tokens
from feeds.upstox.fake import FakeUpstox
from feeds.upstox.fake.testing import point_settings_at

SECRET = "sk-live-do-not-show-0123456789"


@pytest.fixture(autouse=True)
def nowhere(settings):
    point_settings_at(settings, None)


def test_oauth_tokens_expire_at_the_next_0330_ist():
    assert tokens.next_expiry(datetime(2026, 11, 20, 9, 0, tzinfo=IST)) == datetime(
        2026, 11, 21, 3, 30, tzinfo=IST
    )
    assert tokens.next_expiry(datetime(2026, 11, 20, 2, 0, tzinfo=IST)) == datetime(
        2026, 11, 20, 3, 30, tzinfo=IST
    )
    assert tokens.next_expiry(datetime(2026, 11, 20, 3, 30, tzinfo=IST)) == datetime(
        2026, 11, 21, 3, 30, tzinfo=IST
    )


@pytest.mark.django_db
def test_stored_token_is_encrypted_and_never_rendered():
    token = tokens.store_token(access_token=SECRET)
    row = UpstoxToken.objects.get()
    assert SECRET not in row.encrypted_token
    assert SECRET not in str(row) and SECRET not in repr(row)
    assert tokens.feed_token() == tokens.order_token() == SECRET
    status = tokens.token_status()
    assert status["valid"] and status["orders"] and status["kind"] == "oauth"
    assert SECRET not in repr(status)
    assert token.expires_at == tokens.next_expiry(token.issued_at)


@pytest.mark.django_db
def test_expired_tokens_are_not_used_and_status_says_so(settings):
    issued = datetime(2026, 11, 19, 9, 0, tzinfo=IST)
    tokens.store_token(access_token=SECRET, issued_at=issued)
    after = datetime(2026, 11, 20, 3, 31, tzinfo=IST)
    assert tokens.feed_token(after) is None
    status = tokens.token_status(after)
    assert status == {**status, "valid": False, "orders": False, "source": "none"}
    assert "Connect Upstox" in status["message"]


@pytest.mark.django_db
def test_feed_falls_back_to_an_analytics_token_but_orders_do_not(settings):
    tokens.store_token(access_token="analytics-secret", kind=UpstoxToken.ANALYTICS)
    assert tokens.feed_token() == "analytics-secret"
    assert tokens.order_token() is None
    status = tokens.token_status()
    assert status["valid"] and not status["orders"] and status["kind"] == "analytics"
    tokens.store_token(access_token=SECRET)
    assert tokens.feed_token() == SECRET  # the day's login wins


@pytest.mark.django_db
def test_environment_token_is_used_when_the_database_has_none(settings):
    settings.UPSTOX_ACCESS_TOKEN = "env-secret"
    assert tokens.feed_token() == "env-secret"
    status = tokens.token_status()
    assert status["source"] == "environment" and "env-secret" not in repr(status)


@pytest.mark.django_db
def test_upstox_token_command_reads_stdin_and_never_echoes_it(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    out = io.StringIO()
    call_command("upstox_token", stdout=out)
    assert SECRET not in out.getvalue() and "valid until" in out.getvalue()
    assert tokens.feed_token() == SECRET
    out = io.StringIO()
    call_command("upstox_token", "--clear", stdout=out)
    assert tokens.feed_token() is None


@pytest.fixture
def staff(django_user_model):
    user = django_user_model.objects.create_user("desk", password="pw-desk-123", is_staff=True)
    web = Client()
    web.force_login(user)
    return web


@pytest.mark.django_db
def test_connect_upstox_runs_the_oauth_code_flow_against_the_fake(settings, staff, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="upstox_client")  # even the SDK's response-body log
    caplog.set_level(logging.DEBUG, logger="urllib3")
    with FakeUpstox(accepted_tokens=set()) as fake:
        point_settings_at(settings, fake)
        settings.UPSTOX_API_KEY = "fake-client-id"
        settings.UPSTOX_API_SECRET = "fake-client-secret"
        page = staff.get("/upstox/")
        assert page.status_code == 200 and b"No valid Upstox token" in page.content

        start = staff.post("/upstox/start/")
        assert start.status_code == 302 and start["Location"].startswith(
            fake.api_url + "/v2/login/authorization/dialog?"
        )
        # The browser visits Upstox's login dialog, which redirects back to UPSTOX_REDIRECT_URI.
        with pytest.raises(urllib.error.HTTPError) as redirect:
            _no_redirects().open(start["Location"])
        back = urlsplit(redirect.value.headers["Location"])
        assert f"{back.scheme}://{back.netloc}{back.path}" == settings.UPSTOX_REDIRECT_URI

        done = staff.get(back.path + "?" + back.query, follow=True)
        assert done.status_code == 200 and b"Upstox connected" in done.content
        assert (
            fake.accepted_tokens and tokens.feed_token() in fake.accepted_tokens
        )  # the fake's token, stored
        secret = tokens.feed_token()
        assert secret.encode() not in done.content
        assert secret not in caplog.text
        assert b"valid until" in done.content

        # A replayed callback (stale state) is refused.
        assert staff.get(back.path + "?" + back.query).status_code == 400


@pytest.mark.django_db
def test_connect_upstox_is_staff_only(django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw-viewer-123")
    web = Client()
    web.force_login(user)
    assert web.get("/upstox/").status_code == 302
    assert not UpstoxToken.objects.exists()


def _no_redirects() -> urllib.request.OpenerDirector:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    return urllib.request.build_opener(NoRedirect)


def test_next_expiry_is_always_within_a_day():
    start = datetime(2026, 1, 1, tzinfo=IST)
    for hours in range(0, 48, 1):
        moment = start + timedelta(hours=hours, minutes=17)
        expiry = tokens.next_expiry(moment)
        assert timedelta(0) < expiry - moment <= timedelta(days=1)


def test_the_sdk_response_body_log_never_carries_a_token(caplog):
    import feeds.upstox.client  # noqa: F401 - installs the filter

    caplog.set_level(logging.DEBUG, logger="upstox_client.rest")
    rest_log = logging.getLogger("upstox_client.rest")
    rest_log.debug("response body: %s", b'{"access_token": "' + SECRET.encode() + b'"}')
    rest_log.debug("response body: %s", b'{"status": "success"}')
    assert SECRET not in caplog.text and "success" in caplog.text


@pytest.mark.django_db
def test_admin_shows_token_metadata_but_never_the_token(django_user_model):
    admin_user = django_user_model.objects.create_superuser("root", password="pw-root-123")
    web = Client()
    web.force_login(admin_user)
    token = tokens.store_token(access_token=SECRET, user_id="AB1234")
    for url in ("/admin/feeds/upstoxtoken/", f"/admin/feeds/upstoxtoken/{token.pk}/change/"):
        page = web.get(url)
        assert page.status_code == 200 and b"AB1234" in page.content
        assert SECRET.encode() not in page.content and token.encrypted_token.encode() not in page.content
