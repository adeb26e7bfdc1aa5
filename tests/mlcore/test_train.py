import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from mlcore.checkpoint import candles_fingerprint, load_checkpoint
from mlcore.dataset import Scaler, prepare_series, split_bounds, split_masks, training_rows
from mlcore.features import FEATURE_NAMES, FEATURE_SET
from mlcore.labels import HORIZONS
from mlcore.train import PRESETS, main, synthetic_frames, train

TINY = replace(PRESETS["tiny"], num_threads=1)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return synthetic_frames(n=3000, timeframe="15m")


@pytest.fixture(scope="module")
def trained(frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "tiny.pt"
    started = time.perf_counter()
    result = train(frames=frames, config=TINY, out=out, progress=False)
    return result, time.perf_counter() - started


def test_tiny_preset_trains_fast_and_writes_a_loadable_checkpoint(trained, frames):
    result, seconds = trained
    assert seconds < 60
    ckpt = load_checkpoint(result.path)
    assert ckpt.version == result.version
    assert ckpt.feature_set == FEATURE_SET
    assert ckpt.feature_names == list(FEATURE_NAMES)
    assert ckpt.channels == list(TINY.channels)
    assert ckpt.data_fingerprint == candles_fingerprint(frames) == result.data_fingerprint
    assert len(ckpt.label_bands) == len(HORIZONS)
    assert all(b > 0 for b in ckpt.label_bands)
    assert {"train", "val", "test", "history", "best_epoch"} <= set(ckpt.metrics)
    assert 1 <= result.best_epoch <= result.epochs_run <= TINY.epochs
    net = ckpt.model()
    out = net(torch.zeros(2, TINY.context_length, len(TINY.channels)))
    assert out.shape == (2, 20)
    assert torch.isfinite(out).all()


def test_scaler_and_bands_come_from_the_training_split_only(trained, frames):
    result, _ = trained
    ckpt = load_checkpoint(result.path)
    series = [
        prepare_series(
            df,
            symbol=s,
            timeframe=TINY.timeframe,
            context_length=TINY.context_length,
            channels=TINY.channels,
        )
        for s, df in frames.items()
    ]
    bounds = split_bounds(series, val_fraction=TINY.val_fraction, test_fraction=TINY.test_fraction)
    assert bounds.to_dict()["val_start"] == ckpt.split["val_start"]
    masks = [
        split_masks(s, bounds=bounds, context_length=TINY.context_length, timeframe="15m")["train"]
        for s in series
    ]
    expected = Scaler.fit(training_rows(series, masks, TINY.context_length))
    np.testing.assert_allclose(ckpt.scaler["mean"], expected.mean)
    np.testing.assert_allclose(ckpt.scaler["std"], expected.std)
    train_returns = np.concatenate(
        [s.targets.returns[m] for s, m in zip(series, masks, strict=True)]
    )
    expected_bands = np.quantile(np.abs(train_returns), TINY.flat_fraction, axis=0)
    np.testing.assert_allclose(ckpt.label_bands, expected_bands)
    assert pd.Timestamp(ckpt.split["train_end"]) < pd.Timestamp(ckpt.split["val_start"])


def test_same_seed_same_weights(trained, frames, tmp_path):
    result, _ = trained
    again = train(frames=frames, config=TINY, out=tmp_path / "again.pt", progress=False)
    a = load_checkpoint(result.path).state_dict
    b = load_checkpoint(again.path).state_dict
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_cli_trains_on_synthetic_candles_without_data(tmp_path, capsys):
    out = tmp_path / "cli.pt"
    args = ["--preset", "tiny", "--out", str(out), "--threads", "1", "--synthetic-candles", "2500"]
    assert main(args) == 0
    assert "synthetic" in capsys.readouterr().out
    assert load_checkpoint(out).train_config["preset"] == "tiny"
