"""RSI, EMA and ATR for many markets at once.

A batch of signals covers many markets, so the candles come as wide frames: one column per market,
rows aligned from the end (the last row is each market's latest closed candle, shorter histories
are NaN-padded at the top). The formulas are those of the `ta` library (Wilder RSI, EMA with
adjust=False, Wilder ATR seeded with the mean of the first window) applied column-wise, so every
market's value equals what `ta` gives on that market alone (the tests check it).
"""

import numpy as np
import pandas as pd


def _ewm(values: np.ndarray, *, alpha: float, min_periods: int) -> np.ndarray:
    """pandas' ewm(alpha, min_periods, adjust=False).mean() down each column of a 2-D array whose
    NaNs are leading only. One vector step per row beats pandas' per-column loop several times
    over at 500 columns."""
    out = np.full(values.shape, np.nan)
    state = np.full(values.shape[1], np.nan)
    count = np.zeros(values.shape[1], dtype=np.int64)
    for i, row in enumerate(values):
        seen = ~np.isnan(row)
        state = np.where(np.isnan(state), row, (1 - alpha) * state + alpha * row)
        count += seen
        out[i] = np.where(count >= min_periods, state, np.nan)
    return out


def _frame(values: np.ndarray, like: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(values, index=like.index, columns=like.columns)


def ema(close: pd.DataFrame, *, span: int) -> pd.DataFrame:
    return _frame(_ewm(close.to_numpy(), alpha=2 / (span + 1), min_periods=span), close)


def rsi(close: pd.DataFrame, *, period: int) -> pd.DataFrame:
    values = close.to_numpy()
    diff = np.diff(values, axis=0, prepend=np.nan)
    real = ~np.isnan(values)
    # ta counts the first candle as a zero move (its diff is NaN); the padding stays NaN.
    up = np.where(real, np.where(diff > 0, diff, 0.0), np.nan)
    down = np.where(real, np.where(diff < 0, -diff, 0.0), np.nan)
    up_mean = _ewm(up, alpha=1 / period, min_periods=period)
    down_mean = _ewm(down, alpha=1 / period, min_periods=period)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(down_mean == 0, 100.0, 100.0 - 100.0 / (1.0 + up_mean / down_mean))
    return _frame(np.where(np.isnan(up_mean) | np.isnan(down_mean), np.nan, values), close)


def atr(high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame, *, period: int) -> pd.DataFrame:
    """Wilder's ATR; NaN until a market has `period` candles."""
    prev_close = close.shift(1)
    true_range = np.fmax(
        (high - low).to_numpy(),
        np.fmax((high - prev_close).abs().to_numpy(), (low - prev_close).abs().to_numpy()),
    )
    n_rows, n_cols = true_range.shape
    out = np.full((n_rows, n_cols), np.nan)
    first = close.notna().to_numpy().argmax(axis=0)  # first real row of each column
    seed_row = first + period - 1
    state = np.full(n_cols, np.nan)
    for row in range(n_rows):
        seeding = seed_row == row
        if seeding.any():
            columns = np.flatnonzero(seeding)
            state[columns] = [true_range[first[c] : row + 1, c].mean() for c in columns]
        running = seed_row < row
        state[running] = (state[running] * (period - 1) + true_range[row, running]) / period
        out[row] = np.where(seed_row <= row, state, np.nan)
    return pd.DataFrame(out, index=close.index, columns=close.columns)
