"""Synthetic market: deterministic, valid candles with the stylised facts of a real market."""

import numpy as np
import pandas as pd
import pytest

from mlcore.candles import COLUMNS, validate_candles
from mlcore.features import WARMUP, compute_features
from mlcore.synthetic import _regimes, generate_candles


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return generate_candles(20_000, seed=11)


def _abs_autocorr(log_ret: np.ndarray, lag: int) -> float:
    a = np.abs(log_ret)
    return float(np.corrcoef(a[lag:], a[:-lag])[0, 1])


def test_same_seed_same_candles_other_seed_other_candles():
    a = generate_candles(3_000, seed=42)
    pd.testing.assert_frame_equal(a, generate_candles(3_000, seed=42))
    b = generate_candles(3_000, seed=43)
    assert not np.allclose(a["close"].to_numpy(), b["close"].to_numpy())
    # A shorter run with the same seed is not required to be a prefix, but must be reproducible.
    pd.testing.assert_frame_equal(generate_candles(10, seed=42), generate_candles(10, seed=42))


@pytest.mark.parametrize(
    ("timeframe", "start"),
    [
        ("5m", "2024-06-01 00:05"),
        ("15m", "2025-01-01"),
        ("1h", "2023-03-04 07:00"),
        ("1d", "2022-01-01"),
    ],
)
def test_candles_pass_validation_on_their_grid(timeframe, start):
    df = generate_candles(2_000, seed=5, timeframe=timeframe, start=start, start_price=0.25)
    validate_candles(df, timeframe=timeframe, allow_gaps=False)
    assert tuple(df.columns) == COLUMNS
    assert df.index.name == "time"
    assert df.index[0] == pd.Timestamp(start, tz="UTC")
    assert df["open"].iloc[0] == 0.25
    # A 24/7 market: every candle opens at the previous close.
    np.testing.assert_array_equal(df["open"].to_numpy()[1:], df["close"].to_numpy()[:-1])
    assert (df["volume"] > 0).all()


def test_tz_aware_start_is_converted_to_utc():
    df = generate_candles(3, seed=1, start=pd.Timestamp("2025-01-01 01:00", tz="Europe/Berlin"))
    assert df.index[0] == pd.Timestamp("2025-01-01 00:00", tz="UTC")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 5, "start": "2025-01-01 00:07"}, "not on the 15m grid"),
        ({"n": -1}, "n must be"),
        ({"n": 5, "start_price": 0.0}, "start_price"),
        ({"n": 5, "timeframe": "7x"}, "unknown timeframe"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=message):
        generate_candles(n, seed=0, **kwargs)


def test_volatility_clusters_and_tails_are_fat(market):
    log_ret = np.diff(np.log(market["close"].to_numpy()))
    # |returns| stay autocorrelated for hours (GARCH), raw returns much less so.
    assert _abs_autocorr(log_ret, 1) > 0.1
    assert _abs_autocorr(log_ret, 16) > 0.05
    assert abs(float(np.corrcoef(log_ret[1:], log_ret[:-1])[0, 1])) < 0.05
    excess_kurtosis = pd.Series(log_ret).kurt()
    assert excess_kurtosis > 2.0
    # Per-candle volatility in the range of real 15m crypto (BTC 2025: ~0.23 %).
    assert 0.001 < log_ret.std() < 0.006


def test_volume_follows_the_size_of_moves(market):
    log_ret = np.diff(np.log(market["close"].to_numpy()))
    volume = market["volume"].to_numpy()[1:]
    assert np.corrcoef(np.abs(log_ret), volume)[0, 1] > 0.3
    # ... and the time of day (busiest around the US open, quietest around 03:00 UTC).
    by_hour = market["volume"].groupby(market.index.hour).median()
    assert by_hour.loc[14:16].mean() > 1.3 * by_hour.loc[2:4].mean()


def test_regimes_switch_with_spells_of_the_requested_length():
    path = _regimes(np.random.default_rng(3), 200_000, spell=192.0)
    assert set(np.unique(path)) == {0, 1, 2}
    switches = np.flatnonzero(np.diff(path)) + 1
    spells = np.diff(np.concatenate(([0], switches, [len(path)])))
    assert 150 < spells.mean() < 240
    assert (path[switches] != path[switches - 1]).all()  # a switch always changes regime
    shares = np.bincount(path) / len(path)
    assert (shares > 0.2).all()


def _variance_ratio(log_ret: np.ndarray, k: int) -> float:
    """Var of k-candle returns / (k * Var of 1-candle returns): 1 for a random walk."""
    path = np.concatenate(([0.0], np.cumsum(log_ret)))
    return float((path[k:] - path[:-k]).var() / (k * log_ret.var()))


def test_regime_drift_makes_trends_persist():
    """Spells of drift make multi-day returns larger than independent candles would add up to."""
    log_ret = np.diff(np.log(generate_candles(40_000, seed=2)["close"].to_numpy()))
    shuffled = np.random.default_rng(0).permutation(log_ret)  # same candles, order destroyed
    assert _variance_ratio(log_ret, 384) > _variance_ratio(shuffled, 384) + 0.2


def test_features_are_finite_on_synthetic_candles(market):
    features = compute_features(market.iloc[:2_000]).to_numpy()
    assert np.isfinite(features[WARMUP:]).all()
