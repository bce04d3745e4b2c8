"""Feed-side tables: the Upstox instrument master and the Upstox access tokens.

The access token is a secret: it is stored encrypted (Fernet, key derived from SECRET_KEY), is not
editable or shown in the admin, and never appears in `str()`/`repr()`. Read it only through
`feeds.upstox.tokens`.
"""

from __future__ import annotations

from django.db import models


class Instrument(models.Model):
    """One row of Upstox's daily instrument master (indices, futures, options)."""

    instrument_key = models.CharField(max_length=64, unique=True)
    exchange_token = models.CharField(max_length=32)
    segment = models.CharField(max_length=16)
    name = models.CharField(max_length=64)
    trading_symbol = models.CharField(max_length=64)
    instrument_type = models.CharField(max_length=8)  # INDEX, FUT, CE, PE, EQ
    underlying_key = models.CharField(max_length=64, blank=True, db_index=True)
    strike = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    expiry = models.DateField(null=True, blank=True, db_index=True)
    lot_size = models.PositiveIntegerField(default=1)
    tick_size = models.DecimalField(max_digits=8, decimal_places=2, default="0.05")  # rupees
    freeze_quantity = models.PositiveIntegerField(default=0)
    weekly = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["underlying_key", "instrument_type", "expiry"])]

    def __str__(self) -> str:
        return f"{self.trading_symbol} ({self.instrument_key})"


class UpstoxToken(models.Model):
    """An Upstox access token with its expiry. The newest unexpired one of a kind is in use."""

    OAUTH = "oauth"
    ANALYTICS = "analytics"
    KIND_CHOICES = [(OAUTH, "OAuth (daily login)"), (ANALYTICS, "Analytics (read-only)")]

    kind = models.CharField(max_length=16, choices=KIND_CHOICES, default=OAUTH)
    # Fernet ciphertext of the token; never rendered (editable=False keeps it out of forms).
    encrypted_token = models.TextField(editable=False)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    user_id = models.CharField(max_length=32, blank=True)  # Upstox client id, not a secret
    source = models.CharField(max_length=32, default="oauth")  # oauth | manual
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-issued_at"]

    def __str__(self) -> str:
        return f"Upstox {self.kind} token issued {self.issued_at:%Y-%m-%d %H:%M} (expires {self.expires_at:%Y-%m-%d %H:%M})"

    def __repr__(self) -> str:
        return f"<UpstoxToken id={self.pk} kind={self.kind} expires_at={self.expires_at!s}>"
