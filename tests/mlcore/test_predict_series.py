"""predict_series (backtests) against predict() called step by step (the live path)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcore.errors import InsufficientHistory, InvalidCandles
from mlcore.predictor import PredictionResult, Predictor
from mlcore.synthetic import generate_candles
from mlcore.train import PRESETS, synthetic_frames, train

# float32 noise: the features' recursive averages start earlier than predict()'s tail, and a
# matmul rounds differently in a batch of 64 than in a batch of 1 (measured: ~1e-7 on
# probabilities, ~1e-9 on returns and risk; the bounds leave a factor of ~100).
PROBABILITY_TOLERANCE = 1e-5
FRACTION_TOLERANCE = 1e-7  # returns and risk are fractions of price


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    out = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    frames = synthetic_frames(n=3000, timeframe="15m")
    train(frames=frames, config=replace(PRESETS["tiny"], num_threads=1), out=out, progress=False)
    return Predictor.load(Path(out), device="cpu")


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    """1,500 candles with a three-candle gap at row 900."""
    frame = generate_candles(1500, seed=7, timeframe="15m")
    return frame.drop(frame.index[900:903])


def _assert_same(live, series) -> None:
    if not isinstance(live, PredictionResult):
        assert type(series) is type(live)
        assert str(series) == str(live)
        return
    assert series.candle_time == live.candle_time
    assert series.direction == live.direction
    assert series.confidence == pytest.approx(live.confidence, abs=PROBABILITY_TOLERANCE)
    assert series.strength == pytest.approx(live.strength, abs=PROBABILITY_TOLERANCE)
    for h, p in live.probabilities.items():
        np.testing.assert_allclose(series.probabilities[h], p, atol=PROBABILITY_TOLERANCE)
    for h, r in live.returns.items():
        assert series.returns[h] == pytest.approx(r, abs=FRACTION_TOLERANCE)
    for name, r in live.risk.items():
        assert series.risk[name] == pytest.approx(r, abs=FRACTION_TOLERANCE)


def test_every_step_equals_predict_on_the_prefix(predictor, candles):
    """Sampled steps, and every step around the start and the gap, where the history is just
    too short or just long enough."""
    series = predictor.predict_series(candles, symbol="S", since=candles.index[10])
    assert list(series) == list(candles.index[10:])
    need = predictor.min_history
    edges = {need - 2, need - 1, need, 897, 898, 899 + need - 2, 899 + need - 1, 899 + need}
    sample = set(np.random.default_rng(3).integers(10, len(candles), 40).tolist())
    for t in sorted(edges | sample):
        live = predictor.predict({"S": candles.iloc[: t + 1]})["S"]
        _assert_same(live, series[candles.index[t]])
    errors = [r for r in series.values() if not isinstance(r, PredictionResult)]
    assert errors
    assert all(isinstance(e, InsufficientHistory) for e in errors)


def test_results_do_not_depend_on_the_batch_size_beyond_float_noise(predictor, candles):
    since = candles.index[-200]
    small = predictor.predict_series(candles, symbol="S", since=since, batch_size=7)
    large = predictor.predict_series(candles, symbol="S", since=since, batch_size=512)
    for t, result in large.items():
        _assert_same(result, small[t])


def test_no_look_ahead_a_truncated_history_gives_the_same_steps(predictor, candles):
    since = candles.index[-250]
    full = predictor.predict_series(candles, symbol="S", since=since)
    cut = candles.index[-120]
    truncated = predictor.predict_series(candles.loc[:cut], symbol="S", since=since)
    assert sum(isinstance(r, PredictionResult) for r in truncated.values()) > 50
    assert list(truncated) == [t for t in full if t <= cut]
    for t, result in truncated.items():
        _assert_same(full[t], result)


def test_invalid_history_is_refused(predictor, candles):
    broken = candles.copy()
    broken.iloc[500, broken.columns.get_loc("high")] = broken["low"].iloc[500] / 2
    with pytest.raises(InvalidCandles, match="S: "):
        predictor.predict_series(broken, symbol="S")


def test_empty_history_and_since_past_the_end(predictor, candles):
    assert predictor.predict_series(candles.iloc[:0], symbol="S") == {}
    late = candles.index[-1] + pd.Timedelta("1h")
    assert predictor.predict_series(candles, symbol="S", since=late) == {}


def test_iter_series_yields_the_same_results_in_time_order(predictor, candles):
    since = candles.index[300]
    whole = predictor.predict_series(candles, symbol="S", since=since, batch_size=16)
    parts = list(predictor.iter_series(candles, symbol="S", since=since, batch_size=16))
    assert len(parts) > 10
    flat = [t for part in parts for t in part]
    assert flat == sorted(flat) == list(whole)
    for part in parts:
        for t, result in part.items():
            _assert_same(whole[t], result)
