"""`manage.py fetchhistory --instrument KEY --from D --to D`: Upstox 1-minute candles into the store."""

from __future__ import annotations

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from feeds.upstox.history import HistoryError, fetch_history


class Command(BaseCommand):
    help = "Fetch 1-minute candles from Upstox (historical candle API v3) into the history store."

    def add_arguments(self, parser):
        parser.add_argument(
            "--instrument", required=True, action="append", help="instrument key (repeatable)"
        )
        parser.add_argument("--from", dest="first", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
        parser.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
        parser.add_argument("--history-dir", default=None, help="history store (default HISTORY_DIR)")

    def handle(self, *args, instrument, first, last, history_dir, **options):
        from persistence.writer import HistoryWriter

        if first > last:
            raise CommandError("--from must not be after --to")
        writer = HistoryWriter(history_dir)
        try:
            for key in instrument:
                result = fetch_history(instrument_key=key, first=first, last=last, write=writer.write_candles)
                self.stdout.write(
                    f"{key}: {result.candles} candles in {result.pages} monthly pages ({result.requests} requests)"
                )
        except HistoryError as e:
            raise CommandError(str(e)) from None
        finally:
            writer.close()
