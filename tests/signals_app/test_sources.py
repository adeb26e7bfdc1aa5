"""Market-data sources: replay on the real shared candles, the simulated feed, and ccxt at its
HTTP layer with Bybit's recorded responses (no network)."""

import json

import ccxt
import numpy as np
import pandas as pd
import pytest

from mlcore.candles import load_csv, validate_candles
from signals_app.sources import PermanentSourceError, SourceMarket, TemporarySourceError
from signals_app.sources.ccxt import CcxtSource
from signals_app.sources.replay import ReplaySource, replay_file_name
from signals_app.sources.simulated import SimulatedSource

BTC = SourceMarket(exchange="bybit", symbol="BTCUSDT", ccxt_symbol="BTC/USDT", timeframe="15m")


@pytest.fixture(scope="module")
def btc_file(shared_data):
    return load_csv(shared_data / "ohlcv" / "BTC_USDT-15m.csv")


def test_replay_inside_the_file_period_plays_the_recorded_candles(shared_data, btc_file):
    source = ReplaySource(directory=shared_data / "ohlcv")
    since = pd.Timestamp("2025-06-01 10:00", tz="UTC")
    now = pd.Timestamp("2025-06-01 12:07", tz="UTC")  # 12:00 candle still open
    frame = source.fetch(BTC, since=since, now=now)
    expected = btc_file.loc[since : pd.Timestamp("2025-06-01 11:45", tz="UTC")]
    pd.testing.assert_frame_equal(frame, expected, check_freq=False)


def test_replay_loops_past_the_end_and_never_returns_open_candles(shared_data, btc_file):
    source = ReplaySource(directory=shared_data / "ohlcv")
    now = pd.Timestamp("2026-11-24 07:01:30", tz="UTC")
    frame = source.fetch(BTC, since=pd.Timestamp("2026-11-23 20:55", tz="UTC"), now=now)
    assert frame.index[0] == pd.Timestamp("2026-11-23 21:00", tz="UTC")  # first slot on the grid
    assert frame.index[-1] == pd.Timestamp("2026-11-24 06:45", tz="UTC")
    assert len(frame) == 40
    validate_candles(frame, timeframe="15m", allow_gaps=False)
    # Every replayed row is a recorded row.
    recorded = {tuple(row) for row in btc_file.to_numpy()}
    assert all(tuple(row) in recorded for row in frame.to_numpy())


def test_replay_without_a_file_is_a_permanent_error(tmp_path):
    with pytest.raises(PermanentSourceError, match="no replay file"):
        ReplaySource(directory=tmp_path).fetch(
            BTC, since=pd.Timestamp("2025-01-01", tz="UTC"), now=pd.Timestamp.now(tz="UTC")
        )
    assert replay_file_name("BTC/USDT:USDT", "5m") == "BTC_USDT_USDT-5m.csv"


def test_simulated_feed_is_valid_deterministic_closed_and_continues_the_last_close():
    source = SimulatedSource()
    now = pd.Timestamp("2026-11-24 07:14:59", tz="UTC")
    since = pd.Timestamp("2026-11-24 03:00", tz="UTC")
    market = SourceMarket(**{**BTC.__dict__, "last_close": 91234.5})
    first = source.fetch(market, since=since, now=now)
    again = source.fetch(market, since=since, now=now)
    pd.testing.assert_frame_equal(first, again)
    validate_candles(first, timeframe="15m", allow_gaps=False)
    assert first.index[0] == since
    assert first.index[-1] == pd.Timestamp("2026-11-24 06:45", tz="UTC")  # 07:00 is still open
    assert first["open"].iloc[0] == pytest.approx(91234.5)
    assert first["close"].std() > 0


def _bybit(shared_data, answer):
    """A real ccxt Bybit client whose HTTP layer answers from the recorded responses."""

    def factory(exchange_id):
        exchange = ccxt.bybit({"enableRateLimit": False})
        exchange.set_markets(json.loads((shared_data / "ccxt/bybit/markets.json").read_text()))
        exchange.fetch = answer
        return exchange

    return CcxtSource(client_factory=factory)


@pytest.fixture(scope="module")
def recorded_ohlcv(shared_data):
    cases = json.loads((shared_data / "ccxt/bybit/response.json").read_text())
    return cases["methods"]["fetchOHLCV"][0]


def test_ccxt_source_parses_the_recorded_bybit_candles(shared_data, recorded_ohlcv):
    calls = []

    def answer(url, method="GET", headers=None, body=None):
        calls.append(url)
        return recorded_ohlcv["httpResponse"]

    source = _bybit(shared_data, answer)
    symbol, timeframe, since_ms, _ = recorded_ohlcv["input"]
    market = SourceMarket(
        exchange="bybit", symbol="BTCUSDT", ccxt_symbol=symbol, timeframe=timeframe
    )
    frame = source.fetch(
        market,
        since=pd.Timestamp(since_ms, unit="ms", tz="UTC"),
        now=pd.Timestamp("2024-02-01 12:00", tz="UTC"),
    )
    expected = np.array(recorded_ohlcv["parsedResponse"], dtype=np.float64)
    assert len(calls) == 1
    assert "/v5/market/kline" in calls[0]
    assert frame.index.as_unit("ms").asi8.tolist() == expected[:, 0].astype(np.int64).tolist()
    np.testing.assert_array_equal(frame.to_numpy(), expected[:, 1:])


def test_ccxt_source_drops_the_candle_still_open(shared_data, recorded_ohlcv):
    source = _bybit(shared_data, lambda *args, **kwargs: recorded_ohlcv["httpResponse"])
    market = SourceMarket(
        exchange="bybit", symbol="BTCUSDT", ccxt_symbol="BTC/USDT:USDT", timeframe="1h"
    )
    last_open = pd.Timestamp(recorded_ohlcv["parsedResponse"][-1][0], unit="ms", tz="UTC")
    frame = source.fetch(
        market, since=last_open - pd.Timedelta(hours=2), now=last_open + pd.Timedelta(minutes=30)
    )
    assert frame.index[-1] == last_open - pd.Timedelta(hours=1)


@pytest.mark.parametrize(
    ("raised", "ours"),
    [
        (ccxt.RequestTimeout("timed out"), TemporarySourceError),
        (ccxt.RateLimitExceeded("10006 too many visits"), TemporarySourceError),
        (ccxt.OnMaintenance("system maintenance"), TemporarySourceError),
        (ccxt.BadSymbol("symbol invalid"), PermanentSourceError),
        (ccxt.ExchangeError("params error"), PermanentSourceError),
    ],
)
def test_ccxt_errors_become_temporary_or_permanent(shared_data, raised, ours):
    def answer(*args, **kwargs):
        raise raised

    source = _bybit(shared_data, answer)
    with pytest.raises(ours, match="bybit:BTCUSDT"):
        source.fetch(
            BTC, since=pd.Timestamp("2024-01-01", tz="UTC"), now=pd.Timestamp.now(tz="UTC")
        )


def test_ccxt_limits_come_from_the_market_list(shared_data):
    source = _bybit(shared_data, lambda *a, **k: pytest.fail("no HTTP call expected"))
    limits = source.limits(BTC)
    assert str(limits.amount_step) == "0.000001"
    assert str(limits.price_step) == "0.1"
    assert str(limits.min_amount) == "0.000011"
    assert str(limits.min_notional) == "5"
    with pytest.raises(PermanentSourceError, match="lists no BNB/USDT"):
        source.limits(
            SourceMarket(**{**BTC.__dict__, "symbol": "BNBUSDT", "ccxt_symbol": "BNB/USDT"})
        )
