"""The strategy library: one module per strategy, and the registry mapping each slug to its class.

Everything here is pure Python (no Django, Celery or Redis), driven by the backtest runner and the
live worker alike.
"""

from __future__ import annotations

from strategies.base import Strategy
from strategies.library.ib_breakout import IBBreakout

REGISTRY: dict[str, type[Strategy]] = {cls.slug: cls for cls in (IBBreakout,)}


def get_strategy(slug: str) -> type[Strategy]:
    """The strategy class registered under `slug`; KeyError with the known slugs otherwise."""
    try:
        return REGISTRY[slug]
    except KeyError:
        raise KeyError(f"unknown strategy {slug!r}; known: {', '.join(sorted(REGISTRY))}") from None
