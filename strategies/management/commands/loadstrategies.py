"""`python manage.py loadstrategies [PATH]`: seed the strategy table from configs/strategies.json.

Creates the configurations that do not exist yet and never touches the ones that do (after the
first start the admin is the source of truth). The whole file is checked before anything is
written: bad JSON, an unknown strategy or a bad parameter is one line on stderr and nothing changes.
Creation goes through `services.create_strategy_config`, so the seeding is in the audit log.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from strategies import services
from strategies.models import StrategyConfig, TradingMode, strategy_registry

DEFAULT_PATH = Path(settings.BASE_DIR) / "configs" / "strategies.json"
REQUIRED = ("slug", "strategy", "instruments", "capital", "max_daily_loss")
KNOWN = {*REQUIRED, "enabled", "mode", "lots", "parameters", "comment"}


def _one_line(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    return " ".join(exc.messages)


def read_seed(path: Path) -> list[dict[str, Any]]:
    """The entries of a seed file, checked for shape, known strategies and valid parameters.
    Raises CommandError with a one-line message naming the entry."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    entries = document.get("strategies") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise CommandError(f'{path}: expected {{"strategies": [...]}} or a list of strategies')
    registry = strategy_registry()
    seen: set[str] = set()
    checked = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: entry {number}"
        if not isinstance(entry, dict):
            raise CommandError(f"{where}: expected an object")
        where = f"{where} ({entry.get('slug', '?')})"
        missing = [key for key in REQUIRED if key not in entry]
        if missing:
            raise CommandError(f"{where}: missing {', '.join(missing)}")
        unknown = sorted(set(entry) - KNOWN)
        if unknown:
            raise CommandError(f"{where}: unknown key {', '.join(unknown)}")
        if entry["slug"] in seen:
            raise CommandError(f"{where}: slug listed twice")
        seen.add(entry["slug"])
        if entry["strategy"] not in registry:
            raise CommandError(
                f"{where}: unknown strategy {entry['strategy']!r}; known: {', '.join(sorted(registry))}"
            )
        if entry.get("mode", TradingMode.PAPER) not in TradingMode.values:
            raise CommandError(f"{where}: mode is one of {', '.join(TradingMode.values)}")
        try:
            parameters = services.clean_parameters(entry["strategy"], entry.get("parameters") or {})
            capital, max_daily_loss = Decimal(str(entry["capital"])), Decimal(str(entry["max_daily_loss"]))
        except ValidationError as exc:
            raise CommandError(f"{where}: {_one_line(exc)}") from None
        except InvalidOperation:
            raise CommandError(f"{where}: capital and max_daily_loss are decimal amounts") from None
        checked.append(
            {
                "slug": entry["slug"],
                "strategy_class": entry["strategy"],
                "instruments": entry["instruments"],
                "capital": capital,
                "max_daily_loss": max_daily_loss,
                "lots": entry.get("lots", 1),
                "parameters": parameters,
                "enabled": bool(entry.get("enabled", False)),
                "mode": entry.get("mode", TradingMode.PAPER),
            }
        )
    return checked


class Command(BaseCommand):
    help = "Create the strategy configurations of a seed file that do not exist yet (never overwrites)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="seed file (JSON)")

    def handle(self, *args: Any, path: str, **options: Any) -> None:
        entries = read_seed(Path(path))
        created, kept = [], []
        actor = services.Actor.system("loadstrategies")
        with transaction.atomic():  # a failure part-way leaves nothing behind
            existing = set(StrategyConfig.objects.values_list("slug", flat=True))
            for entry in entries:
                if entry["slug"] in existing:
                    kept.append(entry["slug"])
                    continue
                try:
                    services.create_strategy_config(**entry, actor=actor)
                except ValidationError as exc:
                    raise CommandError(f"{path}: {entry['slug']}: {_one_line(exc)}") from None
                created.append(entry["slug"])
        self.stdout.write(
            f"loadstrategies {path}: created {len(created)}"
            + (f" ({', '.join(created)})" if created else "")
            + f", kept {len(kept)} already configured"
            + (f" ({', '.join(kept)})" if kept else "")
        )
