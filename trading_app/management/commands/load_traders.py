"""`manage.py load_traders traders.yaml [--account NAME]`: the seed's traders file -> Traders."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from trading_app.services.traders import TradersFileError, traders_load


class Command(BaseCommand):
    help = "Create or update traders from a traders.yaml file (all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument(
            "--account",
            help="exchange account for these traders (default: their exchange's paper account)",
        )

    def handle(self, *args, path: Path, account: str | None, **options):
        try:
            text = path.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        try:
            traders = traders_load(text=text, source=str(path), account_name=account)
        except TradersFileError as exc:
            raise CommandError(f"nothing loaded. {exc}") from exc
        for trader in traders:
            self.stdout.write(
                f"trader {trader.name}: {trader.markets.count()} markets on {trader.account}"
            )
        self.stdout.write(self.style.SUCCESS(f"{len(traders)} trader(s) loaded from {path}"))
