"""`manage.py importhistory PATH [PATH …]`: load recorded candles, ticks or F&O trades (CSV or
Parquet) into the history store. See persistence.importing for the accepted shapes. Refuses to run
while the feed holds the store."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from persistence.importing import ImportRejected, import_history
from persistence.store import StoreLocked


class Command(BaseCommand):
    help = (
        "Import 1-minute candles, ticks or F&O trades from CSV/Parquet files into the history store "
        "(all rows are validated first; nothing is imported if any row is bad)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")

    def handle(self, *args, paths: list[Path], **options) -> None:
        try:
            result = import_history(paths)
        except (ImportRejected, StoreLocked) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"imported {len(paths)} file(s): {result.ticks_written} new ticks of {result.ticks_read} read "
            f"({result.ticks_read - result.ticks_written} already stored), {result.candles} candles"
        )
