"""Training from the Django side: candles from the database (or mlcore's synthetic market) into
mlcore.train, and the resulting checkpoint registered as a ModelVersion.

torch is imported inside the functions: the web process and the default workers never load it.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from django.db.models import Count

from mlcore.candles import COLUMNS
from signals_app.models import Candle, Market, MLConfig, ModelVersion
from signals_app.predictor import checkpoint_path, model_version_register

# Below this many candles per market (~31 days of 15m) the split leaves too little to validate on.
MIN_TRAINING_CANDLES = 3000
SYNTHETIC_CANDLES = 6000  # per synthetic symbol, two symbols


@dataclass
class TrainingOutcome:
    model_version: ModelVersion
    path: Path
    data: str  # what it was trained on, in words
    active: bool
    elapsed_seconds: float
    held_out: dict  # per-horizon accuracy / macro-F1 on the test (or validation) split


def database_frames(
    *, timeframe: str, min_candles: int = MIN_TRAINING_CANDLES, symbols: list[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Candle frames of the markets holding at least `min_candles` stored candles."""
    markets = Market.objects.filter(timeframe=timeframe).annotate(n=Count("candles"))
    if symbols:
        markets = markets.filter(symbol__in=symbols)
    frames = {}
    for market in markets.filter(n__gte=min_candles):
        rows = list(
            Candle.objects.filter(market=market)
            .order_by("open_time")
            .values_list("open_time", *COLUMNS)
        )
        index = pd.DatetimeIndex(pd.to_datetime([r[0] for r in rows], utc=True), name="time")
        values = np.array([r[1:] for r in rows], dtype=np.float64)
        frames[market.symbol] = pd.DataFrame(values, index=index, columns=list(COLUMNS))
    return frames


def synthetic_frames(*, timeframe: str) -> dict[str, pd.DataFrame]:
    from mlcore.train import synthetic_frames as generate

    return generate(n=SYNTHETIC_CANDLES, timeframe=timeframe)


def model_train(
    *,
    frames: dict[str, pd.DataFrame],
    data: str,
    preset: str = "tiny",
    out: Path | None = None,
    epochs: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> TrainingOutcome:
    """Train on `frames`, write the checkpoint and register it. It becomes the active model when
    written where the workers load from (MLConfig.model_path / MODEL_PATH)."""
    from mlcore.checkpoint import file_fingerprint
    from mlcore.features import FEATURE_SET
    from mlcore.train import PRESETS, train

    configured = checkpoint_path(MLConfig.load())
    out = Path(out or configured)
    config = PRESETS[preset]
    overrides = {"epochs": epochs, "num_threads": threads}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    result = train(frames=frames, config=config, out=out, progress=progress)
    held_out = result.metrics.get("test", result.metrics["val"])
    active = out.resolve() == configured.resolve()
    version = model_version_register(
        name=result.version,
        checkpoint_path=str(out),
        fingerprint=file_fingerprint(out),
        feature_set=FEATURE_SET,
        metrics={
            "data": data,
            "preset": preset,
            "samples": result.samples,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "elapsed_seconds": round(result.elapsed_seconds, 1),
            "held_out": held_out,
        },
        activate=active,
    )
    return TrainingOutcome(
        model_version=version,
        path=out,
        data=data,
        active=active,
        elapsed_seconds=result.elapsed_seconds,
        held_out=held_out["directions"],
    )


def training_data(*, timeframe: str) -> tuple[dict[str, pd.DataFrame], str]:
    """The database's candles when some market has enough, else mlcore's synthetic market."""
    frames = database_frames(timeframe=timeframe)
    if frames:
        total = sum(len(f) for f in frames.values())
        return frames, f"{total} stored {timeframe} candles of {', '.join(sorted(frames))}"
    frames = synthetic_frames(timeframe=timeframe)
    return frames, (
        f"synthetic candles ({len(frames)} symbols x {SYNTHETIC_CANDLES}, mlcore.synthetic): "
        f"no market has {MIN_TRAINING_CANDLES} stored {timeframe} candles yet"
    )
