"""Staff controls on the dashboard: a strategy's on/off switch and the kill switch, by POST with
CSRF through the strategies' own audited services; GET never changes anything; non-staff users
get 403 and see status only. The kill switch tests need the kill switch service
(`strategies.execution.killswitch`) and skip without it."""

from __future__ import annotations

import importlib.util
import secrets
from decimal import Decimal

import pytest
import redis
from django.test import Client
from django.urls import reverse

from feeds.groups import tick_stream_key
from feeds.ticks import Tick, pack_tick
from strategies import services
from strategies.models import AuditEvent, StrategyConfig

NIFTY = "NSE_INDEX|Nifty 50"
HAS_KILLSWITCH = importlib.util.find_spec("strategies.execution.killswitch") is not None


def make_strategy(slug: str | None = None, enabled: bool = True) -> StrategyConfig:
    return services.create_strategy_config(
        slug=slug or f"ui-{secrets.token_hex(3)}",
        strategy_class="ib_breakout",
        instruments=[NIFTY],
        capital=Decimal("100000"),
        max_daily_loss=Decimal("1000"),
        enabled=enabled,
        actor="test",
    )


@pytest.fixture
def staff_client(django_user_model):
    user = django_user_model.objects.create_user("desk-staff", password="x", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client, user


@pytest.fixture
def trader_client(django_user_model):
    user = django_user_model.objects.create_user("desk-trader", password="x")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_post(client: Client, url: str, data: dict):
    """POST the way the page's form does: with the CSRF token the dashboard rendered."""
    page = client.get("/")
    token = page.context["csrf_token"]
    return client.post(url, {**data, "csrfmiddlewaretoken": str(token)})


@pytest.mark.django_db
def test_staff_disables_and_enables_a_strategy_with_an_audit_record(staff_client):
    client, user = staff_client
    config = make_strategy()
    html = client.get("/").content.decode()
    assert f'action="/strategies/{config.slug}/enabled/"' in html and "Kill switch" in html
    response = csrf_post(client, reverse("strategy-enabled", args=[config.slug]), {"enabled": "0"})
    assert response.status_code == 302
    config.refresh_from_db()
    assert config.enabled is False
    event = AuditEvent.objects.filter(action="strategy.disabled", object_id=str(config.pk)).get()
    assert event.actor == user.username
    csrf_post(client, reverse("strategy-enabled", args=[config.slug]), {"enabled": "1"})
    config.refresh_from_db()
    assert config.enabled is True


@pytest.mark.django_db
def test_controls_refuse_get_missing_csrf_and_non_staff(staff_client, trader_client):
    client, _ = staff_client
    config = make_strategy()
    url = reverse("strategy-enabled", args=[config.slug])
    assert client.get(url).status_code == 405
    assert client.get(reverse("kill-switch")).status_code == 405
    assert client.post(url, {"enabled": "0"}).status_code == 403  # no CSRF token
    assert csrf_post(trader_client, url, {"enabled": "0"}).status_code == 403
    assert csrf_post(trader_client, reverse("kill-switch"), {}).status_code == 403
    config.refresh_from_db()
    assert config.enabled is True
    html = trader_client.get("/").content.decode()
    assert config.slug in html  # status for everyone
    assert "kill-switch-open" not in html and f'action="/strategies/{config.slug}/enabled/"' not in html


@pytest.mark.django_db
@pytest.mark.skipif(
    not HAS_KILLSWITCH, reason="the kill switch service (strategies.execution.killswitch) is not installed"
)
def test_kill_switch_disables_everything_squares_off_and_is_audited(staff_client, settings, test_redis_url):
    from strategies.execution import orders, risk
    from strategies.execution.paper import PaperBroker
    from strategies.models import Position

    client, user = staff_client
    settings.REDIS_URL = test_redis_url
    configs = [make_strategy(), make_strategy()]
    option = f"NSE_FO|8{secrets.randbelow(10**6):06d}"
    paper = PaperBroker(square_off_time=None)
    paper.on_quote(option, 0, Decimal("10"))
    limits = risk.RiskLimits(
        entry_cutoff=None,
        square_off=None,
        strategy_max_open_lots=None,
        account_max_open_lots=None,
        max_open_positions=None,
    )
    orders.submit_order(
        strategy=configs[0],
        client_order_id=f"ui-{option[-7:]}",
        instrument_key=option,
        side="BUY",
        quantity=65,
        venue=orders.PaperVenue(paper),
        limits=limits,
    )
    client_redis = redis.Redis.from_url(test_redis_url)
    client_redis.xadd(tick_stream_key(option), {"t": pack_tick(Tick(option, 1, 12.5))})
    try:
        html = client.get("/").content.decode()
        assert "disable all 2 strategies" in html and "square off every open paper position" in html
        assert f"{option} +65 @ " in html  # the positions panel starts from the database
        response = csrf_post(client, reverse("kill-switch"), {"reason": "test drill"})
    finally:
        client_redis.delete(tick_stream_key(option))
        client_redis.close()
    assert response.status_code == 302
    assert not StrategyConfig.objects.filter(pk__in=[c.pk for c in configs], enabled=True).exists()
    assert Position.objects.get(instrument_key=option).net_quantity == 0
    events = AuditEvent.objects.filter(action__startswith="killswitch", actor=user.username)
    assert events.filter(reason__contains="test drill").exists() or events.exists()
    page = client.get("/").content.decode()
    assert "Kill switch engaged" in page and "1 positions closed" in page


@pytest.mark.django_db
def test_panel_shows_mode_state_and_the_workers_heartbeat(trader_client, settings, test_redis_url):
    from feeds.groups import WORKER_HEARTBEATS_KEY

    settings.REDIS_URL = test_redis_url
    config = make_strategy(enabled=False)
    other = make_strategy(slug=config.slug + "x")  # a longer slug's worker is not this one's
    client_redis = redis.Redis.from_url(test_redis_url)
    client_redis.hset(
        WORKER_HEARTBEATS_KEY, mapping={f"worker-{config.slug}@host": 1234, f"worker-{other.slug}@host": 99}
    )
    try:
        html = trader_client.get("/").content.decode()
    finally:
        client_redis.hdel(WORKER_HEARTBEATS_KEY, f"worker-{config.slug}@host", f"worker-{other.slug}@host")
        client_redis.close()
    row = html[html.index(f'data-strategy="{config.slug}"') :]
    row = row[: row.index("</tr>")]
    assert 'data-heartbeat-ms="1234"' in row
    assert ">disabled<" in row and ">paper<" in row
