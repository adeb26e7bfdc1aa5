"""A simulated live market: mlcore's synthetic generator as a feed (the offline default).

Each request for candles from `since` generates a fresh synthetic stretch seeded by the market and
`since`, warmed up over WARMUP_CANDLES so its volatility regime is already under way, and scales
its prices so the first new candle opens at the last stored close: prices continue without a jump
and every process produces the same candles for the same minute.
"""

import zlib

import numpy as np
import pandas as pd

from mlcore.candles import timeframe_delta
from mlcore.synthetic import generate_candles
from signals_app.sources.base import SourceMarket, candle_frame, closed_until

WARMUP_CANDLES = 64


def _seed(market: SourceMarket, since: pd.Timestamp) -> int:
    # crc32, not hash(): Python salts str hashes per process.
    return zlib.crc32(f"{market.exchange}:{market.symbol}:{since.value}".encode())


def _start_price(market: SourceMarket) -> float:
    """A stable price level per symbol between 0.1 and ~1000, so markets do not all look alike."""
    return float(10 ** (zlib.crc32(market.symbol.encode()) % 4000 / 1000 - 1))


class SimulatedSource:
    name = "simulated"

    def fetch(
        self, market: SourceMarket, *, since: pd.Timestamp, now: pd.Timestamp
    ) -> pd.DataFrame:
        delta = timeframe_delta(market.timeframe)
        first = since.ceil(delta)
        last = closed_until(now, market.timeframe)
        if last < first:
            return candle_frame([], np.empty((0, 5)))
        n = int((last - first) / delta) + 1
        generated = generate_candles(
            WARMUP_CANDLES + n,
            seed=_seed(market, first),
            timeframe=market.timeframe,
            start=first - WARMUP_CANDLES * delta,
            start_price=_start_price(market),
        ).iloc[WARMUP_CANDLES:]
        anchor = market.last_close or _start_price(market)
        scale = anchor / float(generated["open"].iloc[0])
        prices = ["open", "high", "low", "close"]
        generated.loc[:, prices] = generated[prices].to_numpy() * scale
        return generated
