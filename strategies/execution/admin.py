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
