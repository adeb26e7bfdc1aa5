"""Training targets for the multitask head: future returns, direction classes and risk.

Targets look into the future by definition. They are computed here, from candles, and only ever
reach the loss and the metrics; the model's inputs come from mlcore.features alone.

Output layout of the multitask head (20 values, the mlcore contract):
    [0:4]   future simple return for horizons (1, 4, 16, 48) candles
    [4:16]  direction logits, 4 horizons x 3 classes (down, flat, up)
    [16:20] risk: max drawdown 1h, max rally 1h, max drawdown 4h, max rally 4h
            (over the next 4 and 16 candles: 1h and 4h at 15m)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

HORIZONS: tuple[int, ...] = (1, 4, 16, 48)
MAX_HORIZON = max(HORIZONS)
CLASSES: tuple[str, ...] = ("down", "flat", "up")
DOWN, FLAT, UP = 0, 1, 2
RISK_HORIZONS: tuple[int, ...] = (4, 16)
RISK_NAMES: tuple[str, ...] = ("max_drawdown_1h", "max_rally_1h", "max_drawdown_4h", "max_rally_4h")

RETURN_SLICE = slice(0, len(HORIZONS))
DIRECTION_SLICE = slice(RETURN_SLICE.stop, RETURN_SLICE.stop + len(HORIZONS) * len(CLASSES))
RISK_SLICE = slice(DIRECTION_SLICE.stop, DIRECTION_SLICE.stop + len(RISK_NAMES))
N_OUTPUTS = RISK_SLICE.stop  # 20

# A third of the training returns fall inside the flat band, so the classes start roughly balanced.
DEFAULT_FLAT_FRACTION = 1.0 / 3.0


@dataclass(frozen=True)
class Targets:
    """Future-looking targets per candle; rows whose future leaves the candle run are NaN."""

    returns: np.ndarray  # float64 [N, len(HORIZONS)]
    risk: np.ndarray  # float64 [N, len(RISK_NAMES)], magnitudes >= 0
    valid: np.ndarray  # bool [N]: every target of the row is defined


def compute_targets(candles: pd.DataFrame, *, segments: np.ndarray) -> Targets:
    """Targets of every candle t, using only candles t+1 .. t+MAX_HORIZON of the same gap-free run.

    return_h(t)      = close[t+h] / close[t] - 1
    max_drawdown_h(t) = max(0, 1 - min(low[t+1 .. t+h]) / close[t])
    max_rally_h(t)    = max(0, max(high[t+1 .. t+h]) / close[t] - 1)
    """
    close = candles["close"].to_numpy(dtype=np.float64)
    high = candles["high"].to_numpy(dtype=np.float64)
    low = candles["low"].to_numpy(dtype=np.float64)
    segments = np.asarray(segments)
    if len(segments) != len(close):
        raise ValueError(f"segments has {len(segments)} entries for {len(close)} candles")
    n = len(close)

    returns = np.full((n, len(HORIZONS)), np.nan)
    for j, h in enumerate(HORIZONS):
        if n > h:
            returns[: n - h, j] = close[h:] / close[: n - h] - 1.0
            returns[: n - h, j][~_same_run(segments, h)] = np.nan

    risk = np.full((n, len(RISK_NAMES)), np.nan)
    for j, h in enumerate(RISK_HORIZONS):
        if n > h:
            # Window k covers rows k+1 .. k+h, i.e. the next h candles after candle k.
            future_low = sliding_window_view(low[1:], h).min(axis=1)
            future_high = sliding_window_view(high[1:], h).max(axis=1)
            base = close[: n - h]
            ok = _same_run(segments, h)
            drawdown = np.maximum(0.0, 1.0 - future_low / base)
            rally = np.maximum(0.0, future_high / base - 1.0)
            risk[: n - h, 2 * j] = np.where(ok, drawdown, np.nan)
            risk[: n - h, 2 * j + 1] = np.where(ok, rally, np.nan)

    valid = np.isfinite(returns).all(axis=1) & np.isfinite(risk).all(axis=1)
    return Targets(returns=returns, risk=risk, valid=valid)


def _same_run(segments: np.ndarray, h: int) -> np.ndarray:
    # Runs are contiguous, so t and t+h share a run exactly when every row between them does.
    return segments[h:] == segments[:-h]


def fit_flat_bands(
    train_returns: np.ndarray, *, flat_fraction: float = DEFAULT_FLAT_FRACTION
) -> np.ndarray:
    """Per-horizon flat band: the `flat_fraction` quantile of |return| over TRAINING rows only."""
    if not 0.0 < flat_fraction < 1.0:
        raise ValueError(f"flat_fraction must be in (0, 1), got {flat_fraction}")
    train_returns = np.asarray(train_returns, dtype=np.float64)
    if train_returns.ndim != 2 or train_returns.shape[1] != len(HORIZONS):
        raise ValueError(
            f"expected returns of shape [N, {len(HORIZONS)}], got {train_returns.shape}"
        )
    if not np.isfinite(train_returns).all() or len(train_returns) == 0:
        raise ValueError("training returns must be a non-empty array of finite values")
    return np.quantile(np.abs(train_returns), flat_fraction, axis=0)


def direction_classes(returns: np.ndarray, *, bands: np.ndarray) -> np.ndarray:
    """Class per horizon: DOWN if r < -band, UP if r > band, FLAT otherwise; -1 where r is NaN."""
    returns = np.asarray(returns, dtype=np.float64)
    bands = np.asarray(bands, dtype=np.float64)
    classes = np.full(returns.shape, FLAT, dtype=np.int64)
    classes[returns < -bands] = DOWN
    classes[returns > bands] = UP
    classes[~np.isfinite(returns)] = -1
    return classes


def class_weights(classes: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights [len(HORIZONS), 3] (mean 1 per horizon) for the cross-entropy."""
    weights = np.ones((classes.shape[1], len(CLASSES)))
    for j in range(classes.shape[1]):
        counts = np.bincount(classes[:, j][classes[:, j] >= 0], minlength=len(CLASSES))
        freq = np.maximum(counts, 1) / max(counts.sum(), 1)
        w = 1.0 / freq
        weights[j] = w / w.mean()
    return weights


@dataclass(frozen=True)
class Decoded:
    """Head outputs in target units."""

    returns: np.ndarray  # [N, len(HORIZONS)] expected simple return
    probabilities: np.ndarray  # [N, len(HORIZONS), 3] softmax over (down, flat, up)
    risk: np.ndarray  # [N, len(RISK_NAMES)]


def decode_outputs(
    outputs: np.ndarray, *, return_scale: np.ndarray, risk_scale: np.ndarray
) -> Decoded:
    """Undo the target scaling the heads were trained with and softmax the direction logits."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 2 or outputs.shape[1] != N_OUTPUTS:
        raise ValueError(f"expected outputs [N, {N_OUTPUTS}], got {outputs.shape}")
    logits = outputs[:, DIRECTION_SLICE].reshape(len(outputs), len(HORIZONS), len(CLASSES))
    logits = logits - logits.max(axis=2, keepdims=True)
    exp = np.exp(logits)
    return Decoded(
        returns=outputs[:, RETURN_SLICE] * np.asarray(return_scale),
        probabilities=exp / exp.sum(axis=2, keepdims=True),
        risk=outputs[:, RISK_SLICE] * np.asarray(risk_scale),
    )
