"""Admin for the trading states, with the kill switch and resume as actions.

The kill switch action calls `strategies.execution.killswitch.engage` (halt, cancel, close; every
step audited) with the staff user as actor; resume calls `strategies.trading.resume`. States are
never edited by hand. The changelist always shows the account's row, so the actions are always
there to select.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from strategies.execution.models import TradingState, TradingStateName


@admin.register(TradingState)
class TradingStateAdmin(admin.ModelAdmin):
    list_display = ("scope", "state", "reason", "source", "trading_day", "changed_at", "changed_by")
    list_filter = ("state", "source")
    search_fields = ("scope", "reason")
    actions = ("engage_kill_switch", "resume_trading")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        from strategies.trading import ACCOUNT

        # An ACTIVE row for the account is the same as none; it gives the actions a row to act on.
        TradingState.objects.get_or_create(
            scope=ACCOUNT, defaults={"state": TradingStateName.ACTIVE, "changed_at": timezone.now()}
        )
        return super().changelist_view(request, extra_context)

    @admin.action(description="KILL SWITCH: halt the account, cancel every order, close every position")
    def engage_kill_switch(self, request: HttpRequest, queryset: QuerySet[TradingState]) -> None:
        from strategies.execution import killswitch

        result = killswitch.engage(
            request.user, f"kill switch from the admin by {request.user.get_username()}"
        )
        level = messages.WARNING if not (result.problems or result.not_closed) else messages.ERROR
        self.message_user(request, f"Kill switch engaged: {result.summary()}", level)

    @admin.action(description="Resume trading in the selected scopes (lift HALTED / REDUCING)")
    def resume_trading(self, request: HttpRequest, queryset: QuerySet[TradingState]) -> None:
        from strategies import trading

        for row in queryset:
            trading.resume(
                row.scope, actor=request.user, reason=f"resumed in the admin by {request.user.get_username()}"
            )
        self.message_user(request, f"Resumed: {', '.join(r.scope for r in queryset)}.", messages.SUCCESS)


# --- Switching a strategy to live: a confirmation that names the account -------------------------

LIVE_CONFIRM_TEMPLATE = """{% extends "admin/base_site.html" %}
{% block content %}
<h1>Trade real money?</h1>
<p>You are switching <strong>{{ slugs|join:", " }}</strong> to <strong>LIVE</strong> trading on
Upstox account <strong>{{ account }}</strong>{% if sandbox %} (sandbox){% endif %}. Its orders will
be real orders on that account.</p>
{% if error %}<p class="errornote">{{ error }}</p>{% endif %}
<form method="post">{% csrf_token %}
  {% for pk in pks %}<input type="hidden" name="_selected_action" value="{{ pk }}">{% endfor %}
  <input type="hidden" name="action" value="switch_to_live">
  <p><label for="confirm_account">Type <code>{{ phrase }}</code> to confirm:</label>
  <input id="confirm_account" name="confirm_account" autocomplete="off" autofocus></p>
  <input type="submit" value="Switch to LIVE on {{ account }}">
  <a href="">Cancel</a>
</form>
{% endblock %}
"""


def live_account() -> tuple[str, str]:
    """(the Upstox account the orders would go to, the phrase that confirms it). Never the token."""
    from django.conf import settings
    from django.utils import timezone

    from feeds.models import UpstoxToken

    stored = (
        UpstoxToken.objects.filter(kind=UpstoxToken.OAUTH, expires_at__gt=timezone.now())
        .order_by("-issued_at")
        .first()
    )
    if stored is not None and stored.user_id:
        return stored.user_id, stored.user_id
    if settings.UPSTOX_ACCESS_TOKEN:
        return "of the token in UPSTOX_ACCESS_TOKEN (account id unknown)", "LIVE"
    return "(none: no valid Upstox token)", "LIVE"


def confirm_live_switch(request: HttpRequest, queryset: QuerySet) -> Any:
    """The confirmation page for the admin's switch-to-live action, or None once the staff user
    typed the account id (or LIVE when it is unknown). Without LIVE_TRADING no page: the service
    refuses and says why."""
    from django.conf import settings
    from django.http import HttpResponse
    from django.template import engines

    if not settings.LIVE_TRADING:
        return None
    account, phrase = live_account()
    typed = (request.POST.get("confirm_account") or "").strip()
    if typed == phrase:
        return None
    context = {
        "slugs": [c.slug for c in queryset],
        "pks": [c.pk for c in queryset],
        "account": account,
        "phrase": phrase,
        "sandbox": settings.UPSTOX_SANDBOX,
        "error": "That is not the account id: nothing was switched." if typed else "",
        "title": "Switch to live trading",
    }
    template = engines["django"].from_string(LIVE_CONFIRM_TEMPLATE)
    return HttpResponse(template.render(context, request))
