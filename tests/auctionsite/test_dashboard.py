"""The dashboard page, login and logout, and what an anonymous visitor gets."""

from __future__ import annotations

import pytest

from auctionsite.selectors import instrument_display_name, watchlist

pytestmark = pytest.mark.django_db


@pytest.fixture
def trader(django_user_model):
    return django_user_model.objects.create_user("trader", password="correct horse battery")


def test_anonymous_dashboard_redirects_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_anonymous_admin_asks_for_staff_login(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_non_staff_user_cannot_open_admin(client, trader):
    client.force_login(trader)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_login_page_and_wrong_password(client, trader):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'name="username"' in page.content and b'name="password"' in page.content
    response = client.post("/accounts/login/", {"username": "trader", "password": "wrong"})
    assert response.status_code == 200
    assert b"do not match" in response.content


def test_login_then_dashboard(client, trader, settings):
    settings.WATCHLIST = ["NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank"]
    response = client.post("/accounts/login/", {"username": "trader", "password": "correct horse battery"})
    assert response.status_code == 302 and response["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    html = page.content.decode()
    for key in settings.WATCHLIST:
        assert f'data-instrument="{key}"' in html
    assert ">Nifty Bank<" in html
    assert 'type="module"' in html and "js/dashboard.js" in html and 'data-ws-path="/ws/market/"' in html
    assert 'action="/accounts/logout/"' in html and 'method="post"' in html
    assert ">Admin<" not in html  # not staff


def test_staff_sees_admin_link(client, trader):
    trader.is_staff = True
    trader.save()
    client.force_login(trader)
    assert ">Admin<" in client.get("/").content.decode()


def test_logout_is_a_post(client, trader):
    client.force_login(trader)
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


def test_display_names(settings):
    assert instrument_display_name("NSE_INDEX|Nifty 50") == "Nifty 50"
    assert instrument_display_name("NIFTY") == "NIFTY"
    settings.WATCHLIST = ["NSE_INDEX|Nifty Bank"]
    assert [(i.key, i.name) for i in watchlist()] == [("NSE_INDEX|Nifty Bank", "Nifty Bank")]


def test_error_pages_are_the_site_s_own(client, trader, rf, settings):
    from django.views.defaults import server_error

    settings.DEBUG = False
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert b"Page not found" in response.content and b"Traceback" not in response.content
    error = server_error(rf.get("/"))
    assert error.status_code == 500 and b"Something went wrong" in error.content


def test_csrf_failure_page(trader):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/accounts/login/", {"username": "trader", "password": "correct horse battery"})
    assert response.status_code == 403
    assert b"Not allowed" in response.content and b"Traceback" not in response.content
