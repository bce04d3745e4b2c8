"""`manage.py upstox_token`: set an Upstox access token by hand (read from a prompt or stdin, never
from the command line, where it would land in shell history and `ps`), or show the token status."""

from __future__ import annotations

import getpass
import sys

from django.core.management.base import BaseCommand, CommandError

from feeds.models import UpstoxToken
from feeds.upstox.tokens import store_token, token_status


class Command(BaseCommand):
    help = "Store an Upstox access token (prompted, or piped on stdin) or show whether one is valid."

    def add_arguments(self, parser):
        parser.add_argument(
            "--kind", choices=[UpstoxToken.OAUTH, UpstoxToken.ANALYTICS], default=UpstoxToken.OAUTH
        )
        parser.add_argument("--status", action="store_true", help="only show the token status")
        parser.add_argument("--clear", action="store_true", help="delete stored tokens of --kind")

    def handle(self, *args, kind, status, clear, **options):
        if clear:
            deleted, _ = UpstoxToken.objects.filter(kind=kind).delete()
            self.stdout.write(f"deleted {deleted} {kind} token(s)")
            return
        if not status:
            if sys.stdin.isatty():
                secret = getpass.getpass(f"Upstox {kind} access token: ")
            else:
                secret = sys.stdin.readline()
            if not secret.strip():
                raise CommandError("no token given")
            token = store_token(access_token=secret, kind=kind, source="manual", created_by="manage.py")
            self.stdout.write(f"stored the {kind} token; valid until {token.expires_at:%Y-%m-%d %H:%M %Z}")
        self.stdout.write(token_status()["message"])
