"""Admin for the instrument master (read-mostly) and Upstox tokens (metadata only, never the token)."""

from __future__ import annotations

from django.contrib import admin

from feeds.models import Instrument, UpstoxToken


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = [
        "trading_symbol",
        "instrument_key",
        "instrument_type",
        "strike",
        "expiry",
        "weekly",
        "lot_size",
    ]
    list_filter = ["instrument_type", "segment", "weekly", "expiry"]
    search_fields = ["instrument_key", "trading_symbol", "name", "exchange_token"]


@admin.register(UpstoxToken)
class UpstoxTokenAdmin(admin.ModelAdmin):
    list_display = ["kind", "issued_at", "expires_at", "user_id", "source", "created_by"]
    list_filter = ["kind", "source"]
    exclude = ["encrypted_token"]
    readonly_fields = ["kind", "issued_at", "expires_at", "user_id", "source", "created_by"]

    def has_add_permission(self, request) -> bool:
        return False  # tokens come from Connect Upstox or `manage.py upstox_token`
