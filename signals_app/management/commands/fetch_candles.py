import pandas as pd
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from signals_app.services.candles import candles_backfill
from signals_app.sources import SourceError


class Command(BaseCommand):
    help = "Backfill candles from an exchange's public OHLCV endpoint (ccxt), with progress."

    def add_arguments(self, parser):
        parser.add_argument("--exchange", default="bybit")
        parser.add_argument("--symbols", nargs="+", help="default: the enabled markets")
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument("--timeframe", default="15m", help="for markets created here")

    def handle(self, *args, exchange, symbols, days, timeframe, **options):
        now = pd.Timestamp(timezone.now())
        try:
            with tqdm(unit="candles", desc=f"{exchange} backfill") as bar:
                report = candles_backfill(
                    exchange=exchange,
                    symbols=symbols,
                    since=now - pd.Timedelta(days=days),
                    now=now,
                    timeframe=timeframe,
                    on_page=bar.update,
                )
        except SourceError as exc:
            raise CommandError(str(exc)) from exc
        for error in report.errors:
            self.stderr.write(f"{error['market']}: {error['error']}")
        self.stdout.write(
            f"stored {report.candles_stored} candles for {report.markets} markets "
            f"({report.candles_rejected} bad candles left out)"
        )
