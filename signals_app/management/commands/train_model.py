from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from signals_app.services.training import (
    database_frames,
    model_train,
    synthetic_frames,
    training_data,
)


class Command(BaseCommand):
    help = (
        "Train the PatchTST model (mlcore.train) on the stored candles or on synthetic ones and "
        "register it as a ModelVersion (active when written where the workers load from)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--data",
            choices=["auto", "database", "synthetic"],
            default="auto",
            help="auto: stored candles when a market has enough, else synthetic",
        )
        parser.add_argument("--symbols", nargs="+", help="database markets to train on")
        parser.add_argument(
            "--preset", default="tiny", help="mlcore.train preset: tiny|default|gpu"
        )
        parser.add_argument("--out", type=Path, help="default: MLConfig.model_path / MODEL_PATH")
        parser.add_argument("--epochs", type=int)
        parser.add_argument("--threads", type=int, help="torch threads")
        parser.add_argument("--timeframe", default="15m")

    def handle(self, *args, data, symbols, preset, out, epochs, threads, timeframe, **options):
        if data == "synthetic":
            frames, described = synthetic_frames(timeframe=timeframe), "synthetic candles"
        elif data == "database" or symbols:
            frames = database_frames(timeframe=timeframe, symbols=symbols)
            if not frames:
                raise CommandError(f"no market has enough stored {timeframe} candles to train on")
            described = f"stored candles of {', '.join(sorted(frames))}"
        else:
            frames, described = training_data(timeframe=timeframe)
        self.stdout.write(f"training preset '{preset}' on {described}")
        outcome = model_train(
            frames=frames, data=described, preset=preset, out=out, epochs=epochs, threads=threads
        )
        self.stdout.write(
            f"wrote {outcome.path} (model {outcome.model_version.name}) in "
            f"{outcome.elapsed_seconds:.0f} s; "
            + ("it is the active model" if outcome.active else "registered, not active")
        )
        for horizon, scores in outcome.held_out.items():
            self.stdout.write(
                f"  held-out {horizon}: accuracy {scores['accuracy']:.3f} "
                f"macro-F1 {scores['macro_f1']:.3f}"
            )
