from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlcore.checkpoint import load_checkpoint, save_checkpoint
from mlcore.errors import (
    CheckpointCorrupt,
    CheckpointMissing,
    FeatureSetMismatch,
    InsufficientHistory,
    ModelError,
)
from mlcore.labels import HORIZONS, RISK_NAMES
from mlcore.predictor import SIGNAL_HORIZON, PredictionResult, Predictor
from mlcore.synthetic import generate_candles
from mlcore.train import PRESETS, synthetic_frames, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    frames = synthetic_frames(n=3000, timeframe="15m")
    train(frames=frames, config=replace(PRESETS["tiny"], num_threads=1), out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def markets() -> dict[str, pd.DataFrame]:
    return {f"S{k}": generate_candles(1200, seed=100 + k, timeframe="15m") for k in range(3)}


def _forward_counter(predictor: Predictor) -> list[int]:
    calls = [0]

    def hook(module, inputs, output):
        calls[0] += 1

    predictor.model.register_forward_hook(hook)
    return calls


def test_result_fields_follow_the_documented_formulas(checkpoint, markets):
    predictor = Predictor.load(checkpoint, device="cpu")
    results = predictor.predict(markets)
    assert set(results) == set(markets)
    band = load_checkpoint(checkpoint).label_bands[HORIZONS.index(SIGNAL_HORIZON)]
    for symbol, r in results.items():
        assert isinstance(r, PredictionResult)
        assert r.symbol == symbol
        assert r.candle_time == markets[symbol].index[-1]
        assert set(r.returns) == set(HORIZONS) == set(r.probabilities)
        assert set(r.risk) == set(RISK_NAMES)
        p = r.probabilities[SIGNAL_HORIZON]
        assert sum(p) == pytest.approx(1.0)
        assert r.direction == ("SHORT", "NEUTRAL", "LONG")[int(np.argmax(p))]
        assert r.confidence == pytest.approx(max(p))
        assert r.strength == pytest.approx(min(1.0, abs(r.returns[SIGNAL_HORIZON]) / band))
        assert not r.cached
        assert r.latency_ms > 0


def test_one_batched_forward_equals_per_symbol_forwards(checkpoint, markets):
    batched = Predictor.load(checkpoint, device="cpu")
    calls = _forward_counter(batched)
    together = batched.predict(markets)
    assert calls[0] == 1
    single = Predictor.load(checkpoint, device="cpu")
    for symbol, candles in markets.items():
        alone = single.predict({symbol: candles})[symbol]
        for h in HORIZONS:
            np.testing.assert_allclose(
                together[symbol].probabilities[h], alone.probabilities[h], rtol=1e-5, atol=1e-6
            )
            assert together[symbol].returns[h] == pytest.approx(alone.returns[h], abs=1e-6)


def test_compiled_predictor_predicts_what_eager_does(checkpoint, markets):
    """use_compile traces the inference path (its oneDNN linears give way to the stock ops)."""
    eager = Predictor.load(checkpoint, device="cpu").predict(markets)
    compiled = Predictor.load(checkpoint, device="cpu", use_compile=True).predict(markets)
    for symbol, result in eager.items():
        for h in HORIZONS:
            np.testing.assert_allclose(
                compiled[symbol].probabilities[h], result.probabilities[h], rtol=1e-5, atol=1e-6
            )


def test_cache_hit_runs_no_forward_until_a_new_candle(checkpoint, markets):
    predictor = Predictor.load(checkpoint, device="cpu")
    calls = _forward_counter(predictor)
    first = predictor.predict(markets)
    again = predictor.predict(markets)
    assert calls[0] == 1
    assert all(r.cached for r in again.values())
    assert again["S0"].probabilities == first["S0"].probabilities

    # A new closed candle for one symbol: only that symbol is recomputed, in one forward.
    grown = dict(markets)
    grown["S1"] = generate_candles(1201, seed=101, timeframe="15m")
    third = predictor.predict(grown)
    assert calls[0] == 2
    assert not third["S1"].cached
    assert third["S0"].cached
    assert third["S2"].cached
    assert third["S1"].candle_time == grown["S1"].index[-1]


def test_too_little_history_fails_that_symbol_only(checkpoint, markets):
    predictor = Predictor.load(checkpoint, device="cpu")
    short = markets["S0"].iloc[: predictor.min_history - 1]
    results = predictor.predict({"SHORT": short, "OK": markets["S1"]})
    assert isinstance(results["SHORT"], InsufficientHistory)
    assert isinstance(results["SHORT"], ModelError)
    assert isinstance(results["OK"], PredictionResult)


def test_a_gap_inside_the_needed_tail_is_insufficient_history(checkpoint, markets):
    predictor = Predictor.load(checkpoint, device="cpu")
    candles = markets["S2"]
    gappy = candles.drop(candles.index[-10])  # one missing candle 10 rows before the end
    result = predictor.predict({"GAP": gappy})["GAP"]
    assert isinstance(result, InsufficientHistory)
    assert "since the last gap" in str(result)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointMissing):
        Predictor.load(tmp_path / "nope.pt")


def test_corrupt_checkpoints(tmp_path, checkpoint):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointCorrupt):
        Predictor.load(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:2000])
    with pytest.raises(CheckpointCorrupt):
        Predictor.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointCorrupt):
        Predictor.load(foreign)


def test_weights_that_do_not_fit_the_config_are_corrupt(tmp_path, checkpoint):
    ckpt = load_checkpoint(checkpoint)
    ckpt.model_config = {**ckpt.model_config, "d_model": ckpt.model_config["d_model"] * 2}
    path = save_checkpoint(ckpt, tmp_path / "mismatched.pt")
    with pytest.raises(CheckpointCorrupt, match="weights"):
        Predictor.load(path)


def test_feature_set_mismatch(tmp_path, checkpoint):
    ckpt = load_checkpoint(checkpoint)
    ckpt.feature_set = "botai-ta-v0"
    path = save_checkpoint(ckpt, tmp_path / "old-features.pt")
    with pytest.raises(FeatureSetMismatch, match="botai-ta-v0"):
        Predictor.load(path)
    ckpt = load_checkpoint(checkpoint)
    ckpt.feature_names = ckpt.feature_names[::-1]
    path = save_checkpoint(ckpt, tmp_path / "reordered.pt")
    with pytest.raises(FeatureSetMismatch, match="different features"):
        Predictor.load(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the fallback on a CPU-only host")
def test_cuda_request_falls_back_to_cpu_with_a_warning(checkpoint):
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        predictor = Predictor.load(checkpoint, device="cuda")
    assert predictor.device.type == "cpu"
    auto = Predictor.load(checkpoint, device="auto")
    assert auto.device.type == "cpu"
