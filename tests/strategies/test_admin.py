"""The strategies' admin through the real Django admin, logged in as staff: parameter forms built
from the class's declaration, field errors that change nothing, audited actions, live refusal and
the read-only trading records."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.urls import reverse

from strategies import services
from strategies.base import Param, Strategy
from strategies.library import REGISTRY
from strategies.models import AuditEvent, Order, StrategyConfig


class TinyAdminStrategy(Strategy):
    slug = "tiny_admin"
    title = "Tiny admin strategy"
    needs = frozenset()

    lookback = Param("int", 30, min=5, max=120, help="Minutes of history.")
    threshold = Param("float", 0.8, min=0.0, max=1.0, help="Share of the range.")
    direction = Param("choice", "both", choices=("long", "short", "both"))
    square_off = Param("time", dt.time(15, 15), min=dt.time(10, 0), max=dt.time(15, 29))
    trail = Param("bool", False)


@pytest.fixture(autouse=True)
def tiny_strategy(monkeypatch):
    monkeypatch.setitem(REGISTRY, TinyAdminStrategy.slug, TinyAdminStrategy)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # Real logins, without paying for PBKDF2's deliberate slowness in every test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(client):
    get_user_model().objects.create_user(
        "boss", "boss@example.com", "not-a-real-password", is_staff=True, is_superuser=True
    )
    assert client.login(username="boss", password="not-a-real-password")
    return client


@pytest.fixture
def config() -> StrategyConfig:
    return services.create_strategy_config(
        slug="tiny",
        strategy_class=TinyAdminStrategy.slug,
        instruments=["NSE_INDEX|Nifty 50"],
        capital=Decimal("500000"),
        max_daily_loss=Decimal("5000"),
        actor="test",
    )


def change_url(config: StrategyConfig) -> str:
    return reverse("admin:strategies_strategyconfig_change", args=[config.pk])


def form_data(**params) -> dict:
    data = {
        "instruments": "NSE_INDEX|Nifty 50\nNSE_INDEX|Nifty Bank",
        "capital": "500000",
        "lots": "2",
        "max_daily_loss": "5000",
        "param__lookback": "30",
        "param__threshold": "0.8",
        "param__direction": "both",
        "param__square_off": "15:15",
        "_save": "Save",
    }
    data |= {f"param__{name}": value for name, value in params.items()}
    return data


def page_messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.mark.django_db
def test_change_page_has_one_field_per_declared_parameter_with_bounds_and_help(staff, config):
    response = staff.get(change_url(config))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert [name for name in form.fields if name.startswith("param__")] == [
        "param__lookback",
        "param__threshold",
        "param__direction",
        "param__square_off",
        "param__trail",
    ]
    lookback = form.fields["param__lookback"]
    assert (lookback.min_value, lookback.max_value) == (5, 120)
    assert "Minutes of history." in lookback.help_text
    assert [value for value, _ in form.fields["param__direction"].choices] == ["long", "short", "both"]
    html = response.content.decode()
    assert 'name="param__lookback"' in html and 'max="120"' in html


@pytest.mark.django_db
def test_invalid_parameters_show_field_errors_and_change_nothing(staff, config):
    audit_before = AuditEvent.objects.count()
    response = staff.post(
        change_url(config),
        form_data(lookback="500", threshold="high", direction="sideways", square_off="16:00"),
    )
    assert response.status_code == 200  # the form again, not a redirect
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"param__lookback", "param__threshold", "param__direction", "param__square_off"}
    assert all(len(messages) == 1 for messages in errors.values())
    assert "15:29" in errors["param__square_off"][0]  # the class's own bound, not only the field's
    html = response.content.decode()
    assert html.count('class="errorlist') >= 4
    config.refresh_from_db()
    assert config.version == 1 and config.lots == 1 and config.parameters["lookback"] == 30
    assert AuditEvent.objects.count() == audit_before


@pytest.mark.django_db
def test_valid_change_goes_through_the_service_bumps_version_and_is_audited_as_the_user(staff, config):
    response = staff.post(change_url(config), form_data(lookback="45", square_off="14:45", trail="on"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    config.refresh_from_db()
    assert config.version == 2
    assert config.lots == 2
    assert config.instruments == ["NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank"]
    assert config.parameters == {
        "lookback": 45,
        "threshold": 0.8,
        "direction": "both",
        "square_off": "14:45",
        "trail": True,
    }
    event = AuditEvent.objects.get(action="strategy.changed")
    assert (event.actor_type, event.actor) == ("user", "boss")
    assert event.detail["parameters.lookback"] == {"from": 30, "to": 45}
    assert event.detail["lots"] == {"from": 1, "to": 2}


@pytest.mark.django_db
@pytest.mark.parametrize("slug", sorted(set(REGISTRY) - {TinyAdminStrategy.slug}))
def test_every_library_strategy_form_round_trips_its_own_values(staff, slug):
    config = services.create_strategy_config(
        slug=slug.replace("_", "-"),
        strategy_class=slug,
        instruments=["NSE_INDEX|Nifty 50"],
        capital=Decimal("500000"),
        max_daily_loss=Decimal("5000"),
        actor="test",
    )
    form = staff.get(change_url(config)).context["adminform"].form
    names = [name[len("param__") :] for name in form.fields if name.startswith("param__")]
    assert names == [spec["name"] for spec in REGISTRY[slug].param_schema()]
    data = {"_save": "Save"}
    for name in form.fields:
        value = form[name].value()
        if value is True:
            data[name] = "on"
        elif value not in (False, None):
            data[name] = str(value)
    response = staff.post(change_url(config), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    config.refresh_from_db()
    assert config.version == 1, "saving the unchanged form changed the configuration"


@pytest.mark.django_db
def test_add_creates_a_paper_config_with_default_parameters(staff):
    response = staff.post(
        reverse("admin:strategies_strategyconfig_add"),
        {
            "slug": "fresh",
            "strategy_class": TinyAdminStrategy.slug,
            "instruments": "NSE_INDEX|Nifty Bank",
            "capital": "100000",
            "lots": "1",
            "max_daily_loss": "2000",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    config = StrategyConfig.objects.get(slug="fresh")
    assert (config.mode, config.enabled, config.version) == ("paper", False, 1)
    assert config.parameters["lookback"] == 30
    assert AuditEvent.objects.filter(action="strategy.created", actor="boss").exists()


def run_action(client, action: str, *configs: StrategyConfig, **extra: str):
    return client.post(
        reverse("admin:strategies_strategyconfig_changelist"),
        {"action": action, "_selected_action": [c.pk for c in configs], **extra},
        follow=True,
    )


@pytest.mark.django_db
def test_switch_to_live_action_is_refused_with_a_message_without_live_trading(staff, config, settings):
    settings.LIVE_TRADING = False
    response = run_action(staff, "switch_to_live", config)
    assert response.status_code == 200
    shown = " ".join(page_messages(response))
    assert "tiny: Live trading is switched off" in shown
    config.refresh_from_db()
    assert (config.mode, config.version) == ("paper", 1)
    refusal = AuditEvent.objects.get(action="strategy.mode_refused")
    assert (refusal.actor_type, refusal.actor) == ("user", "boss")


@pytest.mark.django_db
def test_switch_to_live_and_back_with_live_trading(staff, config, settings):
    settings.LIVE_TRADING = True
    # The confirmation page names the account; with no account id known the phrase is LIVE.
    assert "Trade real money?" in run_action(staff, "switch_to_live", config).content.decode()
    config.refresh_from_db()
    assert config.mode == "paper"
    run_action(staff, "switch_to_live", config, confirm_account="LIVE")
    config.refresh_from_db()
    assert config.mode == "live"
    run_action(staff, "switch_to_paper", config)
    config.refresh_from_db()
    assert (config.mode, config.version) == ("paper", 3)


@pytest.mark.django_db
def test_enable_and_disable_actions_are_audited(staff, config):
    response = run_action(staff, "enable", config)
    assert "Enabled: tiny." in page_messages(response)
    config.refresh_from_db()
    assert config.enabled and config.version == 2
    run_action(staff, "disable", config)
    config.refresh_from_db()
    assert not config.enabled
    assert list(AuditEvent.objects.filter(actor="boss").order_by("id").values_list("action", flat=True)) == [
        "strategy.enabled",
        "strategy.disabled",
    ]


@pytest.mark.django_db
def test_trading_records_are_viewable_but_not_editable(staff, config):
    order = services.create_order(
        strategy=config, client_order_id="adm-1", instrument_key="NSE_FO|43919", side="BUY", quantity=65
    )
    services.order_transition(order, "submitted", detail={"via": "test"})
    for model in ("signal", "order", "fill", "position", "auditevent", "strategycheckpoint"):
        assert staff.get(reverse(f"admin:strategies_{model}_changelist")).status_code == 200, model
        assert staff.get(reverse(f"admin:strategies_{model}_add")).status_code == 403, model
    page = staff.get(reverse("admin:strategies_order_change", args=[order.pk]))
    assert page.status_code == 200
    assert "submitted" in page.content.decode() and "Order events" in page.content.decode()
    before = Order.objects.get(pk=order.pk).state
    staff.post(reverse("admin:strategies_order_change", args=[order.pk]), {"state": "filled"})
    assert Order.objects.get(pk=order.pk).state == before


@pytest.mark.django_db
def test_audit_log_filters_by_actor_action_object_and_date(staff, config):
    services.set_strategy_enabled(config, True, actor=get_user_model().objects.get(username="boss"))
    url = reverse("admin:strategies_auditevent_changelist")
    by_user = staff.get(url, {"actor_type__exact": "user"})
    assert [e.action for e in by_user.context["cl"].result_list] == ["strategy.enabled"]
    by_action = staff.get(url, {"action__exact": "strategy.created"})
    assert [e.actor for e in by_action.context["cl"].result_list] == ["test"]
    by_object = staff.get(url, {"q": str(config.pk), "object_type__exact": "strategyconfig"})
    assert len(by_object.context["cl"].result_list) == 2
    today = dt.date.today()
    by_date = staff.get(url, {"ts__year": today.year})
    assert by_date.status_code == 200


@pytest.mark.django_db
def test_a_config_whose_strategy_left_the_library_says_so_and_can_still_be_disabled(
    staff, config, monkeypatch
):
    services.set_strategy_enabled(config, True, actor="test")
    monkeypatch.delitem(REGISTRY, TinyAdminStrategy.slug)
    response = staff.post(change_url(config), form_data())
    assert response.status_code == 200
    assert "has no 'tiny_admin' any more" in " ".join(response.context["adminform"].form.non_field_errors())
    run_action(staff, "disable", config)
    config.refresh_from_db()
    assert not config.enabled and config.lots == 1


@pytest.mark.django_db
def test_the_admin_is_closed_to_anonymous_and_non_staff_users(client, config):
    assert client.get(change_url(config)).status_code == 302
    get_user_model().objects.create_user("clerk", "clerk@example.com", "not-a-real-password")
    assert client.login(username="clerk", password="not-a-real-password")
    response = client.post(change_url(config), form_data(lookback="45"))
    assert response.status_code == 302 and "/login/" in response["Location"]
    config.refresh_from_db()
    assert config.version == 1
