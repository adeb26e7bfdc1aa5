"""The batch indicators equal the `ta` library's, market by market, on real candles."""

import numpy as np
import pandas as pd
import pytest
import ta

from trading_app import indicators

N = 300


@pytest.fixture(scope="module")
def candles(shared_data):
    btc = pd.read_csv(shared_data / "ohlcv" / "BTC_USDT-15m.csv").iloc[:N]
    eth = pd.read_csv(shared_data / "ohlcv" / "ETH_USDT-15m.csv").iloc[:180]  # shorter history
    return btc.reset_index(drop=True), eth.reset_index(drop=True)


def _wide(frames, column: str) -> pd.DataFrame:
    """Columns aligned on the last row, shorter ones NaN-padded at the top (as selectors do)."""
    return pd.DataFrame(
        {
            market_id: np.concatenate([np.full(N - len(f), np.nan), f[column].to_numpy()])
            for market_id, f in enumerate(frames)
        }
    )


def _tail(series: pd.Series, n: int) -> np.ndarray:
    return series.to_numpy()[-n:]


@pytest.mark.parametrize("period", [7, 14])
def test_rsi_equals_ta_per_market(candles, period):
    rsi = indicators.rsi(_wide(candles, "close"), period=period)
    for market_id, frame in enumerate(candles):
        expected = ta.momentum.RSIIndicator(frame["close"], window=period).rsi().to_numpy()
        np.testing.assert_allclose(_tail(rsi[market_id], len(frame)), expected, rtol=1e-12)


@pytest.mark.parametrize("span", [9, 21])
def test_ema_equals_ta_per_market(candles, span):
    ema = indicators.ema(_wide(candles, "close"), span=span)
    for market_id, frame in enumerate(candles):
        expected = ta.trend.EMAIndicator(frame["close"], window=span).ema_indicator().to_numpy()
        np.testing.assert_allclose(_tail(ema[market_id], len(frame)), expected, rtol=1e-12)


def test_atr_equals_ta_per_market(candles):
    period = 14
    atr = indicators.atr(
        _wide(candles, "high"), _wide(candles, "low"), _wide(candles, "close"), period=period
    )
    for market_id, frame in enumerate(candles):
        expected = ta.volatility.AverageTrueRange(
            frame["high"], frame["low"], frame["close"], window=period
        ).average_true_range()
        ours = _tail(atr[market_id], len(frame))
        # ta writes 0 before the first full window; we leave NaN (unknown, not zero volatility).
        assert np.isnan(ours[: period - 1]).all()
        np.testing.assert_allclose(
            ours[period - 1 :], expected.to_numpy()[period - 1 :], rtol=1e-12
        )


def test_few_markets_give_the_values_of_a_wide_batch(candles):
    """Below FEW_COLUMNS markets the recursions run per column: bit for bit the row steps."""
    frames = {name: _wide(candles, name) for name in ("high", "low", "close")}
    copies = -(-indicators.FEW_COLUMNS // len(candles))
    wide = {name: pd.concat([f] * copies, axis=1, ignore_index=True) for name, f in frames.items()}
    pairs = [
        (indicators.rsi(frames["close"], period=14), indicators.rsi(wide["close"], period=14)),
        (indicators.ema(frames["close"], span=9), indicators.ema(wide["close"], span=9)),
        (
            indicators.atr(frames["high"], frames["low"], frames["close"], period=14),
            indicators.atr(wide["high"], wide["low"], wide["close"], period=14),
        ),
    ]
    for narrow, broad in pairs:
        assert broad.shape[1] >= indicators.FEW_COLUMNS > narrow.shape[1]
        np.testing.assert_array_equal(narrow.to_numpy(), broad.iloc[:, : len(candles)].to_numpy())
