"""`manage.py portfoliostream`: the live account's Upstox order-update stream, as a process.

Every update and every (re)connect reconciles the bot's orders and positions with the broker's
(`strategies.execution.reconcile`). Exits at once, saying why, when no live broker can be built
(LIVE_TRADING off or no valid token); `up` starts it only when LIVE_TRADING is set.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from strategies.execution.reconcile import run_portfolio_stream


class Command(BaseCommand):
    help = "Run the live account's Upstox portfolio (order update) stream with reconciliation."

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        run_portfolio_stream(stop_event=stop)
