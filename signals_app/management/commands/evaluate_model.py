"""`manage.py evaluate_model`: mlcore.evaluate on the stored candles, after the training data."""

from pathlib import Path

import pandas as pd
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mlcore.checkpoint import load_checkpoint
from mlcore.errors import ModelError
from mlcore.evaluate import evaluate, summary
from signals_app.models import MLConfig
from signals_app.predictor import checkpoint_path
from signals_app.services.training import database_frames


class Command(BaseCommand):
    help = (
        "Score a checkpoint against the baselines (flat, random, buy-and-hold, EMA/RSI, logistic "
        "regression) on stored candles after its training data; writes a JSON report and a PNG."
    )

    def add_arguments(self, parser):
        parser.add_argument("--checkpoint", type=Path, help="default: the served checkpoint")
        parser.add_argument(
            "--from", dest="start", help="first UTC date (default: end of training)"
        )
        parser.add_argument("--to", dest="end", help="exclusive end date (default: end of data)")
        parser.add_argument("--symbols", nargs="+", help="stored markets to evaluate on")
        parser.add_argument("--out-dir", type=Path, default=Path(settings.DATA_DIR) / "reports")

    def handle(self, *args, checkpoint, start, end, symbols, out_dir, **options):
        path = checkpoint or checkpoint_path(MLConfig.load())
        try:
            ckpt = load_checkpoint(path)
        except ModelError as exc:
            raise CommandError(str(exc)) from exc
        data_end = pd.Timestamp(ckpt.split["data_end"])
        begin = pd.Timestamp(start, tz="UTC") if start else data_end
        if begin < data_end:
            self.stderr.write(
                f"warning: --from {begin} is inside the training data (ends {data_end})"
            )
        frames = database_frames(timeframe=ckpt.timeframe, symbols=symbols)
        if not frames:
            raise CommandError(
                f"no market has enough stored {ckpt.timeframe} candles to evaluate on"
            )
        result = evaluate(
            checkpoint=path,
            frames=frames,
            start=begin,
            end=pd.Timestamp(end, tz="UTC") if end else None,
            out_dir=out_dir,
        )
        self.stdout.write(summary(result.report))
        self.stdout.write(f"wrote {result.json_path} and {result.png_path}")
