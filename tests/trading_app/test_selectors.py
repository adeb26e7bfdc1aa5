"""The batch candle read: PostgreSQL's array path and the portable window-function path (SQLite)
give the same frames, aligned on each market's newest candle up to `until`."""

import numpy as np
import pytest
from django.db import connection

from tests.trading_app import factories as f
from trading_app import selectors

pytestmark = pytest.mark.django_db


def test_both_candle_paths_agree_and_respect_until(shared_data):
    btc, eth, empty = f.market("BTCUSDT"), f.market("ETHUSDT"), f.market("SOLUSDT")
    f.store_candles(btc, f.real_candles(shared_data, "BTC_USDT", n=150))
    last = f.store_candles(eth, f.real_candles(shared_data, "ETH_USDT", n=60))
    until = last - 10 * f.STEP  # ETH's newest 10 candles are beyond it
    ids = sorted([btc.pk, eth.pk, empty.pk])
    grids = {}
    for name, fill in (
        ("portable", lambda g: selectors._fill_portable(g, ids, until=until, step=f.STEP)),
        ("postgresql", lambda g: selectors._fill_postgresql(g, ids, until=until)),
    ):
        if name == "postgresql" and connection.vendor != "postgresql":
            continue
        grid = [np.full((100, 3), np.nan) for _ in selectors.PRICE_COLUMNS]
        fill(grid)
        grids[name] = grid
    frames = selectors.candle_frames(markets=[btc, eth, empty], lookback=100, until=until)
    close = frames.close
    eth_closes = f.real_candles(shared_data, "ETH_USDT", n=60)["close"].to_numpy()[:50]
    np.testing.assert_array_equal(close[eth.pk].to_numpy()[-50:], eth_closes)
    assert close[eth.pk].isna().sum() == 50  # 50 candles up to `until`: NaN-padded on top
    assert close[empty.pk].isna().all()
    assert frames.latest_closes()[eth.pk] == eth_closes[-1]
    for grid in grids.values():
        for k, name in enumerate(selectors.PRICE_COLUMNS):
            np.testing.assert_array_equal(grid[k], getattr(frames, name).to_numpy())
