"""RSI, EMA and ATR for many markets at once.

A batch of signals covers many markets, so the candles come as wide frames: one column per market,
rows aligned from the end (the last row is each market's latest closed candle, shorter histories
are NaN-padded at the top). The formulas are those of the `ta` library (Wilder RSI, EMA with
adjust=False, Wilder ATR seeded with the mean of the first window) applied column-wise, so every
market's value equals what `ta` gives on that market alone (the tests check it).
"""

import numpy as np
import pandas as pd


def ema(close: pd.DataFrame, *, span: int) -> pd.DataFrame:
    return close.ewm(span=span, min_periods=span, adjust=False).mean()


def rsi(close: pd.DataFrame, *, period: int) -> pd.DataFrame:
    diff = close.diff()
    real = close.notna()
    # ta counts the first candle as a zero move (its diff is NaN); the padding stays NaN.
    up = diff.where(diff > 0, 0.0).where(real)
    down = (-diff).where(diff < 0, 0.0).where(real)
    up_mean = up.ewm(alpha=1 / period, min_periods=period, adjust=False).mean()
    down_mean = down.ewm(alpha=1 / period, min_periods=period, adjust=False).mean()
    values = np.where(down_mean == 0, 100.0, 100.0 - 100.0 / (1.0 + up_mean / down_mean))
    return pd.DataFrame(values, index=close.index, columns=close.columns).where(
        up_mean.notna() & down_mean.notna()
    )


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
