"""Dashboard views for the auction and the strategies panel: the history store's final profile and
composites (a real store written by the real HistoryWriter), the panels on the page, and the
staff-only controls (POST with CSRF, never GET; non-staff users see status only)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from auctionsite import selectors
from strategies.engine import NIFTY50, composite_of
from tests.auctionsite.test_auction_feed import DAY, NIFTY, session_ticks

DAYS = [DAY - timedelta(days=d) for d in (4, 3, 2, 1)]


@pytest.fixture
def store(tmp_path, settings):
    from persistence.writer import HistoryWriter

    writer = HistoryWriter(tmp_path, flush_interval=None)
    try:
        writer.write_ticks([t for i, d in enumerate(DAYS) for t in session_ticks(d, seed=i, every_s=20)])
        writer.flush()
    finally:
        writer.close()
    settings.HISTORY_DIR = tmp_path
    settings.WATCHLIST = [NIFTY]
    return tmp_path


@pytest.fixture
def trader(django_user_model, client):
    user = django_user_model.objects.create_user("auction-trader", password="x")
    client.force_login(user)
    return user


@pytest.fixture
def staff(django_user_model, client):
    user = django_user_model.objects.create_user("auction-staff", password="x", is_staff=True)
    client.force_login(user)
    return user


def stored_states(root):
    from auctionsite.auction_feed import stored_sessions

    return stored_sessions(NIFTY, DAYS[0], DAYS[-1], root)


@pytest.mark.django_db
def test_history_returns_the_stored_sessions_final_profile(client, trader, store):
    states = stored_states(store)
    response = client.get(reverse("auction-history"), {"instrument": NIFTY, "day": DAYS[2].isoformat()})
    assert response.status_code == 200
    body = response.json()
    want = states[2]
    assert body["type"] == "auction.state" and body["state"]["date"] == DAYS[2].isoformat()
    assert body["state"]["poc"] == want.poc and (body["state"]["vah"], body["state"]["val"]) == (
        want.vah,
        want.val,
    )
    assert len(body["state"]["tpo_counts"]) == len(want.tpo_counts)
    assert body["state"]["prior"]["date"] == DAYS[1].isoformat()
    assert body["state"]["day_type_final"] is True
    # That day's own 1-minute candles for the candle chart (one per stored minute with a tick).
    assert len(body["candles"]) == 375 and body["candles_partial"] is False
    assert all(c[0] // 86_400_000 == body["candles"][0][0] // 86_400_000 for c in body["candles"])


@pytest.mark.django_db
def test_history_errors(client, trader, store):
    url = reverse("auction-history")
    assert client.get(url, {"instrument": NIFTY, "day": "2020-01-01"}).status_code == 404
    assert client.get(url, {"instrument": "NSE_INDEX|Unknown", "day": DAYS[0].isoformat()}).status_code == 404
    assert client.get(url, {"instrument": NIFTY, "day": "yesterday"}).status_code == 404
    assert client.post(url, {"instrument": NIFTY, "day": DAYS[0].isoformat()}).status_code == 405


@pytest.mark.django_db
def test_composite_of_last_n_sessions(client, trader, store):
    states = stored_states(store)
    response = client.get(
        reverse("auction-composite"), {"instrument": NIFTY, "day": DAYS[-1].isoformat(), "n": 3}
    )
    assert response.status_code == 200
    body = response.json()
    want = composite_of(states[-3:], "tpo")
    assert body["sessions"] == [d.isoformat() for d in DAYS[-3:]]
    assert (body["poc"], body["vah"], body["val"]) == (want.poc, want.vah, want.val)
    assert sum(body["tpo_counts"].values()) == sum(want.counts.values())
    assert body["row_size"] == NIFTY50.row_size
    bad = client.get(reverse("auction-composite"), {"instrument": NIFTY, "day": DAYS[-1].isoformat(), "n": 0})
    assert bad.status_code == 400


def test_anonymous_history_needs_login(client):
    response = client.get(reverse("auction-history"), {"instrument": NIFTY, "day": DAYS[0].isoformat()})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.django_db
def test_dashboard_has_auction_panels_and_history_days(client, trader, store):
    html = client.get("/").content.decode()
    assert f'data-auction="{NIFTY}"' in html
    for day in DAYS:
        assert f'<option value="{day.isoformat()}">' in html
    assert "lightweight-charts.standalone.production.js" in html
    assert 'data-label="open_type"' in html and "data-tip=" in html
    assert "kill-switch-open" not in html  # no strategies, no staff


def test_history_days_newest_first(store):
    assert selectors.history_days(NIFTY) == list(reversed(DAYS))
