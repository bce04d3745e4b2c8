"""The admin: where staff enable, tune and switch strategies, and read what they did.

Every change made here goes through `strategies.services` (so it is validated the same way
everywhere, bumps the configuration version and lands in the audit log). Signals, orders, fills,
positions and audit events are read-only: they are written by the trading code, never by hand.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from strategies import services
from strategies.forms import PARAM_PREFIX, StrategyConfigForm, strategy_config_form
from strategies.models import (
    AuditEvent,
    Fill,
    Order,
    OrderEvent,
    Position,
    Signal,
    StrategyCheckpoint,
    StrategyConfig,
    TradingMode,
    strategy_registry,
)


@admin.register(StrategyConfig)
class StrategyConfigAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "strategy_class",
        "enabled",
        "mode",
        "lots",
        "capital",
        "max_daily_loss",
        "version",
    )
    list_filter = ("enabled", "mode", "strategy_class")
    search_fields = ("slug",)
    actions = ("enable", "disable", "switch_to_paper", "switch_to_live")

    def get_readonly_fields(self, request: HttpRequest, obj: StrategyConfig | None = None) -> tuple[str, ...]:
        always = ("mode", "version", "created_at", "updated_at")
        if obj is None:
            return always
        # Switching on/off and paper/live are actions of their own; the class fixes the parameters.
        return ("slug", "strategy_class", "enabled", *always)

    def get_form(
        self, request: HttpRequest, obj: StrategyConfig | None = None, change: bool = False, **kwargs
    ):
        strategy_cls = strategy_registry().get(obj.strategy_class) if obj is not None else None
        kwargs["form"] = strategy_config_form(strategy_cls)
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: StrategyConfig | None = None):
        fields = self.get_fields(request, obj)
        parameters = [name for name in fields if name.startswith(PARAM_PREFIX)]
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [
            (None, {"fields": [name for name in fields if name not in parameters]})
        ]
        if parameters:
            strategy_cls = strategy_registry()[obj.strategy_class]
            fieldsets.append(
                (
                    f"Parameters of {obj.strategy_class}",
                    {"fields": parameters, "description": getattr(strategy_cls, "description", "")},
                )
            )
        elif obj is None:
            fieldsets[0][1]["description"] = (
                "A new strategy starts with its declared default parameters; tune them after saving. "
                "It starts in paper mode."
            )
        return fieldsets

    def save_model(
        self, request: HttpRequest, obj: StrategyConfig, form: StrategyConfigForm, change: bool
    ) -> None:
        data = form.cleaned_data
        values = {name: data[name] for name in services.SETTINGS_FIELDS if name in data}
        if not change:
            created = services.create_strategy_config(
                slug=data["slug"],
                strategy_class=data["strategy_class"],
                enabled=data.get("enabled", False),
                actor=request.user,
                **values,
            )
            obj.pk = created.pk
            obj.refresh_from_db()
            return
        current = StrategyConfig.objects.get(pk=obj.pk)
        parameters = form.parameter_values() if form.parameter_names() else None
        services.update_strategy_config(current, actor=request.user, parameters=parameters, **values)
        obj.refresh_from_db()

    def _each(self, request: HttpRequest, queryset: QuerySet[StrategyConfig], change, done: str) -> None:
        changed = []
        for config in queryset:
            try:
                change(config)
            except ValidationError as exc:
                messages.error(request, f"{config.slug}: {' '.join(exc.messages)}")
            else:
                changed.append(config.slug)
        if changed:
            messages.success(request, f"{done}: {', '.join(changed)}.")

    @admin.action(description="Enable selected strategies")
    def enable(self, request: HttpRequest, queryset: QuerySet[StrategyConfig]) -> None:
        self._each(
            request, queryset, lambda c: services.set_strategy_enabled(c, True, actor=request.user), "Enabled"
        )

    @admin.action(description="Disable selected strategies")
    def disable(self, request: HttpRequest, queryset: QuerySet[StrategyConfig]) -> None:
        self._each(
            request,
            queryset,
            lambda c: services.set_strategy_enabled(c, False, actor=request.user),
            "Disabled",
        )

    @admin.action(description="Switch selected strategies to paper trading")
    def switch_to_paper(self, request: HttpRequest, queryset: QuerySet[StrategyConfig]) -> None:
        self._each(
            request,
            queryset,
            lambda c: services.set_strategy_mode(c, TradingMode.PAPER, actor=request.user),
            "Switched to paper",
        )

    @admin.action(description="Switch selected strategies to LIVE trading")
    def switch_to_live(self, request: HttpRequest, queryset: QuerySet[StrategyConfig]) -> Any:
        from strategies.execution.admin import confirm_live_switch

        if (page := confirm_live_switch(request, queryset)) is not None:
            return page  # the staff user must first confirm the account by its id
        self._each(
            request,
            queryset,
            lambda c: services.set_strategy_mode(c, TradingMode.LIVE, actor=request.user),
            "Switched to LIVE",
        )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, never added, changed or deleted by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Signal)
class SignalAdmin(ReadOnlyAdmin):
    list_display = ("ts", "strategy", "instrument_key", "kind", "side", "entry", "stop", "target", "reason")
    list_filter = ("strategy", "kind", "side", "instrument_key")
    search_fields = ("reason", "stream_id")
    date_hierarchy = "ts"


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    fields = ("ts", "from_state", "to_state", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class FillInline(admin.TabularInline):
    model = Fill
    fields = ("ts", "fill_id", "quantity", "price", "charges")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "client_order_id",
        "strategy",
        "instrument_key",
        "side",
        "quantity",
        "state",
        "filled_quantity",
        "average_price",
        "broker",
    )
    list_filter = ("state", "broker", "side", "strategy")
    search_fields = ("client_order_id", "broker_order_id", "instrument_key")
    date_hierarchy = "created_at"
    inlines = (OrderEventInline, FillInline)


@admin.register(Fill)
class FillAdmin(ReadOnlyAdmin):
    list_display = ("ts", "order", "fill_id", "quantity", "price", "charges")
    list_filter = ("order__strategy",)
    search_fields = ("fill_id", "order__client_order_id")
    date_hierarchy = "ts"


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = (
        "trading_day",
        "strategy",
        "instrument_key",
        "net_quantity",
        "average_price",
        "realised_pnl",
        "charges",
    )
    list_filter = ("strategy", "trading_day")
    search_fields = ("instrument_key",)
    date_hierarchy = "trading_day"


@admin.register(StrategyCheckpoint)
class StrategyCheckpointAdmin(ReadOnlyAdmin):
    list_display = ("strategy", "stream_key", "last_stream_id", "updated_at")
    list_filter = ("strategy",)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("ts", "actor_type", "actor", "action", "object_type", "object_id", "reason")
    list_filter = ("actor_type", "actor", "action", "object_type", "ts")
    search_fields = ("actor", "action", "object_type", "object_id", "reason")
    date_hierarchy = "ts"


from strategies.execution import admin as _execution_admin  # noqa: E402,F401  (trading states, kill switch)
