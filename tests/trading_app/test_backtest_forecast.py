"""The backtest's model process: it runs ahead of a replay busy elsewhere, and its failures reach
the replay waiting for it."""

import time

import pytest

from mlcore.candles import load_csv
from mlcore.checkpoint import file_fingerprint
from trading_app.backtest.forecast import DONE, Forecast, ForecastError

pytestmark = pytest.mark.slow


@pytest.fixture
def candles(shared_data):
    return load_csv(shared_data / "ohlcv" / "BTC_USDT-15m.csv").iloc[:2000]


def _forecast(candles, *, path, fingerprint: str) -> Forecast:
    return Forecast(
        path=str(path), device="cpu", threads=1, fingerprint=fingerprint,
        markets=[("BTCUSDT", candles)], since=candles.index[0],
    )  # fmt: skip


def test_the_model_runs_to_the_end_while_nobody_waits(candles, tiny_checkpoint):
    """2,000 steps of answers are far more than a pipe holds: they are read as they come."""
    forecast = _forecast(
        candles, path=tiny_checkpoint, fingerprint=file_fingerprint(tiny_checkpoint)
    )
    forecast.start()
    try:
        deadline = time.monotonic() + 120
        while forecast.ready != [DONE] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert forecast.ready == [DONE]
        forecast.wait(DONE)
    finally:
        forecast.stop()
    assert len(forecast.predictions[0]) + len(forecast.missing[0]) == len(candles)


@pytest.mark.parametrize(
    ("path", "fingerprint", "message"),
    [
        ("missing.pt", "", "failed: CheckpointMissing"),
        (None, "another checkpoint", "checkpoint file changed"),
    ],
)
def test_a_failing_model_process_fails_the_wait(candles, tiny_checkpoint, path, fingerprint,
                                                message):  # fmt: skip
    forecast = _forecast(candles, path=path or tiny_checkpoint, fingerprint=fingerprint)
    forecast.start()
    try:
        with pytest.raises(ForecastError, match=message):
            forecast.wait(DONE)
    finally:
        forecast.stop()
