"""`manage.py loadinstruments [PATH|URL]`: load the Upstox instrument master (gzipped JSON)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from feeds.upstox.instruments import load_instruments


class Command(BaseCommand):
    help = "Load the Upstox instrument master (NSE_INDEX and NSE_FO rows) from a file or URL."

    def add_arguments(self, parser):
        parser.add_argument(
            "source", nargs="?", default=None, help="path or URL (default UPSTOX_INSTRUMENTS_URL)"
        )

    def handle(self, *args, source, **options):
        source = source or settings.UPSTOX_INSTRUMENTS_URL
        try:
            result = load_instruments(source)
        except (OSError, ValueError) as e:
            raise CommandError(f"could not load the instrument master from {source}: {e}") from None
        self.stdout.write(
            f"loaded {result.loaded} instruments ({result.skipped} rows of other segments skipped)"
        )
