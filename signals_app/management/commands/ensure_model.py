from django.core.management.base import BaseCommand

from signals_app.models import MLConfig
from signals_app.predictor import checkpoint_path
from signals_app.services.training import model_train, training_data


class Command(BaseCommand):
    help = (
        "Make sure a checkpoint exists where the workers load from; when none does, train the "
        "small default model (stored candles if enough, else synthetic) and say which."
    )

    def add_arguments(self, parser):
        parser.add_argument("--preset", default="tiny")
        parser.add_argument("--timeframe", default="15m")

    def handle(self, *args, preset, timeframe, **options):
        path = checkpoint_path(MLConfig.load())
        if path.exists():
            self.stdout.write(f"model: {path}")
            return
        frames, described = training_data(timeframe=timeframe)
        self.stdout.write(
            self.style.WARNING(
                f"no model at {path}: training a small one (preset '{preset}') on {described}"
            )
        )
        outcome = model_train(frames=frames, data=described, preset=preset, out=path)
        self.stdout.write(
            f"model: {outcome.path} ({outcome.model_version.name}), trained in "
            f"{outcome.elapsed_seconds:.0f} s"
        )
