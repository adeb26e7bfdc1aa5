from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from signals_app.services.config import ConfigError, config_load


class Command(BaseCommand):
    help = "Load the seed's system.yaml `ml:` block into MLConfig and the enabled markets."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="system.yaml")
        parser.add_argument(
            "--exchange", default="bybit", help="exchange of markets created for new symbols"
        )

    def handle(self, *args, path: Path, exchange: str, **options):
        try:
            report = config_load(path=path, exchange=exchange)
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        changed = ", ".join(f"{k}={v}" for k, v in report.changed.items()) or "nothing changed"
        self.stdout.write(f"ML configuration: {changed}")
        for label, markets in (
            ("created", report.markets_created),
            ("enabled", report.markets_enabled),
            ("disabled", report.markets_disabled),
        ):
            if markets:
                self.stdout.write(f"markets {label}: {', '.join(markets)}")
        if report.ignored_sections:
            self.stdout.write(
                f"not handled by load_config: {', '.join(report.ignored_sections)} "
                "(traders.yaml sections load with manage.py load_traders)"
            )
