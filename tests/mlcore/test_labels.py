import numpy as np
import pandas as pd
import pytest

from mlcore.labels import (
    DIRECTION_SLICE,
    DOWN,
    FLAT,
    HORIZONS,
    N_OUTPUTS,
    RETURN_SLICE,
    RISK_NAMES,
    RISK_SLICE,
    UP,
    class_weights,
    compute_targets,
    decode_outputs,
    direction_classes,
    fit_flat_bands,
)


def _candles(close: np.ndarray) -> pd.DataFrame:
    index = pd.date_range("2025-01-01", periods=len(close), freq="15min", tz="UTC", name="time")
    return pd.DataFrame(
        {
            "open": close,
            "high": close * 1.01,
            "low": close * 0.98,
            "close": close,
            "volume": np.ones(len(close)),
        },
        index=index,
    )


def test_layout_is_the_contracts_twenty_outputs():
    assert HORIZONS == (1, 4, 16, 48)
    assert (RETURN_SLICE.start, RETURN_SLICE.stop) == (0, 4)
    assert (DIRECTION_SLICE.start, DIRECTION_SLICE.stop) == (4, 16)
    assert (RISK_SLICE.start, RISK_SLICE.stop) == (16, 20)
    assert N_OUTPUTS == 20
    assert RISK_NAMES == ("max_drawdown_1h", "max_rally_1h", "max_drawdown_4h", "max_rally_4h")


def test_returns_and_risk_match_hand_computed_values():
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    df = _candles(close)
    targets = compute_targets(df, segments=np.zeros(len(df), dtype=int))
    t = 50
    for j, h in enumerate(HORIZONS):
        assert targets.returns[t, j] == pytest.approx(close[t + h] / close[t] - 1)
    low, high = df["low"].to_numpy(), df["high"].to_numpy()
    assert targets.risk[t, 0] == pytest.approx(max(0.0, 1 - low[t + 1 : t + 5].min() / close[t]))
    assert targets.risk[t, 1] == pytest.approx(max(0.0, high[t + 1 : t + 5].max() / close[t] - 1))
    assert targets.risk[t, 2] == pytest.approx(max(0.0, 1 - low[t + 1 : t + 17].min() / close[t]))
    assert targets.risk[t, 3] == pytest.approx(max(0.0, high[t + 1 : t + 17].max() / close[t] - 1))
    assert (targets.risk[targets.valid] >= 0).all()


def test_targets_never_reach_past_the_end_or_across_a_gap():
    df = _candles(np.linspace(100, 120, 300))
    segments = np.repeat([0, 1], [150, 150])
    targets = compute_targets(df, segments=segments)
    # The last 48 rows of each run cannot see 48 candles ahead inside the run.
    assert not targets.valid[102:150].any()
    assert not targets.valid[252:].any()
    assert targets.valid[:102].all()
    assert targets.valid[150:252].all()
    # Horizon 1 is still defined right up to the row before the gap, not across it.
    assert np.isfinite(targets.returns[148, 0])
    assert np.isnan(targets.returns[149, 0])


def test_target_at_t_ignores_the_past():
    """Changing candles before t leaves t's targets alone (they are future-only)."""
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 150)))
    a = compute_targets(_candles(close), segments=np.zeros(150, dtype=int))
    changed = close.copy()
    changed[:60] *= 1.5
    b = compute_targets(_candles(changed), segments=np.zeros(150, dtype=int))
    np.testing.assert_array_equal(a.returns[60:], b.returns[60:])
    np.testing.assert_array_equal(a.risk[60:], b.risk[60:])


def test_flat_band_balances_classes_on_the_data_it_was_fitted_on():
    rng = np.random.default_rng(2)
    returns = rng.standard_t(3, size=(30_000, 4)) * np.array([0.002, 0.004, 0.008, 0.015])
    bands = fit_flat_bands(returns)
    assert (np.diff(bands) > 0).all()  # longer horizons move more
    classes = direction_classes(returns, bands=bands)
    for j in range(4):
        share = np.bincount(classes[:, j], minlength=3) / len(classes)
        np.testing.assert_allclose(share, [1 / 3, 1 / 3, 1 / 3], atol=0.02)


def test_direction_classes_and_nan():
    classes = direction_classes(
        np.array([[-0.02, 0.0, 0.02, np.nan]]), bands=np.array([0.01, 0.01, 0.01, 0.01])
    )
    assert classes.tolist() == [[DOWN, FLAT, UP, -1]]


def test_class_weights_are_inverse_frequency():
    classes = np.array([[0], [1], [1], [1]])
    w = class_weights(classes)
    assert w[0, 0] == pytest.approx(3 * w[0, 1])
    assert w[0].mean() == pytest.approx(1.0)


def test_fit_flat_bands_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        fit_flat_bands(np.full((10, 4), np.nan))
    with pytest.raises(ValueError, match="shape"):
        fit_flat_bands(np.zeros((10, 3)))


def test_decode_outputs_unscales_and_softmaxes():
    out = np.zeros((2, N_OUTPUTS))
    out[:, RETURN_SLICE] = 1.0
    out[0, DIRECTION_SLICE.start + 2] = 10.0  # horizon 1: "up" logit
    decoded = decode_outputs(out, return_scale=np.array([1, 2, 3, 4]), risk_scale=np.ones(4))
    np.testing.assert_allclose(decoded.returns[0], [1, 2, 3, 4])
    np.testing.assert_allclose(decoded.probabilities.sum(axis=2), 1.0)
    assert decoded.probabilities[0, 0].argmax() == UP
    np.testing.assert_allclose(decoded.probabilities[1, 0], [1 / 3] * 3)
