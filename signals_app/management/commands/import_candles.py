from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from mlcore.candles import CandleError
from signals_app.services.candles import candles_import


class Command(BaseCommand):
    help = (
        "Import candle CSVs (BASE_QUOTE-TF.csv: timestamp ms,open,high,low,close,volume). "
        "All or nothing: a bad row names its file and line and nothing is stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path, help="directories or CSV files")
        parser.add_argument("--exchange", default="bybit")
        parser.add_argument("--timeframe", default="15m", help="files of other timeframes skip")
        parser.add_argument("--until", help="only candles opening before this UTC instant")

    def handle(self, *args, paths, exchange, timeframe, until, **options):
        until_at = parse_datetime(until) if until else None
        if until and until_at is None:
            raise CommandError(f"--until {until!r} is not an ISO date/time")
        try:
            report = candles_import(
                paths=paths, exchange=exchange, timeframe=timeframe, until=until_at, progress=True
            )
        except CandleError as exc:
            raise CommandError(f"nothing imported: {exc}") from exc
        for path in report.skipped:
            self.stdout.write(f"skipped (not {timeframe}): {path}")
        if report.markets_created:
            self.stdout.write(
                f"markets created (disabled; enable in the admin or with load_config): "
                f"{', '.join(report.markets_created)}"
            )
        self.stdout.write(f"imported {report.candles} candles from {len(report.files)} files")
