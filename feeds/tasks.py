"""Celery tasks of the feeds app (thin: the work lives in services)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="feeds.tasks.refresh_instruments", ignore_result=False)
def refresh_instruments(source: str | None = None) -> dict:
    """Reload the Upstox instrument master (beat: every trading morning before the open)."""
    from django.conf import settings

    from feeds.upstox.instruments import load_instruments
    from feeds.upstox.tokens import token_status

    if source is None and settings.FEED_SOURCE != "upstox" and not token_status()["valid"]:
        # Upstox is not in use (the default demo): do not fetch from the broker's hosts at all.
        return {"loaded": 0, "skipped": 0, "not_in_use": True}
    result = load_instruments(source or settings.UPSTOX_INSTRUMENTS_URL)
    return {"loaded": result.loaded, "skipped": result.skipped}
