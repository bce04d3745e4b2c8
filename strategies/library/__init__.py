"""The strategy library: one module per strategy, and the registry mapping each slug to its class.

Everything here is pure Python (no Django, Celery or Redis), driven by the backtest runner and the
live worker alike.
"""

from __future__ import annotations

from strategies.base import Strategy
from strategies.library.eighty_percent import EightyPercentRule
from strategies.library.ib_breakout import IBBreakout
from strategies.library.look_above_fail import LookAboveAndFail
from strategies.library.open_drive import OpenDriveFollow
from strategies.library.va_acceptance import ValueAreaAcceptance

REGISTRY: dict[str, type[Strategy]] = {
    cls.slug: cls
    for cls in (IBBreakout, EightyPercentRule, ValueAreaAcceptance, OpenDriveFollow, LookAboveAndFail)
}


def get_strategy(slug: str) -> type[Strategy]:
    """The strategy class registered under `slug`; KeyError with the known slugs otherwise."""
    try:
        return REGISTRY[slug]
    except KeyError:
        raise KeyError(f"unknown strategy {slug!r}; known: {', '.join(sorted(REGISTRY))}") from None
