"""`manage.py backtest --trader ID --from DATE --to DATE [--data DIR]`: replay a trader over past
candles through the live services (trading_app.backtest.replay) and write its report."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mlcore.errors import ModelError
from trading_app.backtest.candles import CandleDataError
from trading_app.backtest.forecast import ForecastError
from trading_app.backtest.replay import BacktestError, backtest_run
from trading_app.models import Trader


def _instant(value: str, *, end_of_day: bool) -> datetime:
    """An ISO date or date-time, UTC unless it says otherwise; a bare --to date includes its
    whole day."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not an ISO date (2025-03-01) or date-time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end_of_day and len(value) == 10:
        parsed += timedelta(days=1) - timedelta(microseconds=1)
    return parsed


def _trader(key: str) -> Trader:
    found = Trader.objects.filter(pk=int(key)) if key.isdigit() else Trader.objects.none()
    found = found or Trader.objects.filter(name=key)
    trader = found.select_related("account").first()
    if trader is None:
        raise CommandError(f"no trader with id or name {key!r}")
    return trader


class Command(BaseCommand):
    help = (
        "Backtest a trader over stored (or CSV) candles through the live trading services; "
        "the report goes to data/backtests/<run id>/ and the BacktestRun table."
    )

    def add_arguments(self, parser):
        parser.add_argument("--trader", required=True, help="trader id or name")
        parser.add_argument("--from", dest="start", required=True, help="first candle, UTC")
        parser.add_argument("--to", dest="end", required=True, help="last candle, UTC")
        parser.add_argument(
            "--data", type=Path, help="directory of CSV candles (default: the stored candles)"
        )
        parser.add_argument(
            "--every-step", action="store_true",
            help="send every candle through the trading services (slower; same result)",
        )  # fmt: skip

    def handle(self, *args, trader: str, start: str, end: str, data: Path | None, **options):
        first, last = _instant(start, end_of_day=False), _instant(end, end_of_day=True)
        if last < first:
            raise CommandError("--to is before --from")
        if data is not None and not data.is_dir():
            raise CommandError(f"--data {data} is not a directory")
        try:
            run = backtest_run(
                trader=_trader(trader), start=first, end=last, data_dir=data,
                progress=options["verbosity"] > 0, every_step=options["every_step"],
            )  # fmt: skip
        except (BacktestError, CandleDataError, ForecastError, ModelError) as exc:
            raise CommandError(f"backtest failed: {exc}") from exc
        strategy, hold = run.metrics["strategy"], run.metrics["buy_and_hold"]
        self.stdout.write(
            f"backtest {run.pk}: {run.steps} candles, {run.orders} orders, "
            f"{strategy['trades']} trades, return {strategy['total_return_percentage']:.2f}% "
            f"(buy & hold {hold['total_return_percentage']:.2f}%), "
            f"max drawdown {strategy['max_drawdown_percentage']:.2f}%, {run.seconds:.1f} s"
        )
        self.stdout.write(self.style.SUCCESS(f"report: {run.report_path}"))
