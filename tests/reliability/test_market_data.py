"""Item 5: bad market data. Real BTC/ETH candles with faults injected at the source boundary (a
source is where data enters; the rules are in signals_app/services/candles.py's docstring):
each bad candle is rejected or repaired by its rule and logged with market and time, and the
model (the real tiny checkpoint) is never fed one, whatever path put it in the database."""

import logging
import re
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from signals_app.models import Candle, Market, Prediction
from signals_app.services.candles import candles_sync
from signals_app.services.predictions import predictions_run
from signals_app.sources.base import SourceMarket
from tests.trading_app import factories as f

pytestmark = pytest.mark.django_db
STORED, NEWEST = 500, 511  # candles stored before the sync; the newest closed one after it


class FaultySource:
    """A market-data source handing out a prepared frame: real candles with faults injected."""

    name = "faulty"

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def fetch(self, market: SourceMarket, *, since, now) -> pd.DataFrame:
        return self.frame


def _frame(rows: pd.DataFrame) -> pd.DataFrame:
    index = pd.DatetimeIndex(rows["time"], name="time")
    return pd.DataFrame(
        rows[["open", "high", "low", "close", "volume"]].to_numpy(np.float64),
        index=index, columns=["open", "high", "low", "close", "volume"],
    )  # fmt: skip


@pytest.fixture
def btc(shared_data):
    real = f.real_candles(shared_data, "BTC_USDT", n=NEWEST + 2)
    market = f.market("BTCUSDT")
    f.store_candles(market, real.iloc[:STORED])
    return market, real


def test_bad_candles_are_rejected_or_repaired_and_logged(btc, caplog, figures):
    market, real = btc
    now = real["time"].iloc[NEWEST + 1] + timedelta(minutes=1)  # NEWEST closed, the next open
    rows = _frame(real.iloc[STORED : NEWEST + 2])
    t = rows.index
    bad = rows.copy()
    bad.loc[t[1], "close"] = np.nan
    bad.loc[t[2], "open"] = 0.0
    bad.loc[t[3], "low"] = -1.0
    bad.loc[t[4], ["high", "low"]] = bad.loc[t[4], ["low", "high"]].to_numpy()  # high < low
    garbled = bad.loc[[t[5]]] * [1.5, 1.5, 1.5, 1.5, 1.0]  # sent first, corrected after
    future = bad.loc[[t[-1]]].set_axis([t[-1] + pd.Timedelta(hours=2)])
    delivered = pd.concat([
        bad.loc[t[:5]], garbled, bad.loc[[t[5], t[7], t[6]]],  # 7 before 6: out of order
        bad.loc[t[9:]], future,  # t[8] missing: a gap; t[-1] still open at `now`
    ])  # fmt: skip

    with caplog.at_level(logging.INFO, logger="signals_app"):
        report = candles_sync(
            markets=Market.objects.all(), source=FaultySource(delivered), now=now.to_pydatetime()
        )

    kept = [t[0], t[5], t[6], t[7], t[9], t[10], t[11]]
    assert (report.candles_stored, report.candles_rejected, report.errors) == (len(kept), 5, [])
    stored = _frame(
        pd.DataFrame(market.candles.filter(open_time__gt=t[0] - pd.Timedelta(minutes=1))
                     .order_by("open_time").values("open_time", *rows.columns))
        .rename(columns={"open_time": "time"})
    )  # fmt: skip
    pd.testing.assert_frame_equal(stored, rows.loc[kept], check_freq=False)  # the real values
    log = caplog.text
    name = "bybit:BTCUSDT"
    for at, rule in (
        (t[1], "NaN or infinite value"), (t[2], "non-positive price"),
        (t[3], "non-positive price"), (t[4], "high < low"),
    ):  # fmt: skip
        assert f"{name}: bad candle at {at} not stored: {rule}" in log
    assert f"{name}: duplicate candle at {t[5]}: the last one received is kept" in log
    assert f"{name}: candles out of order ({t[6]} first): sorted by time" in log
    assert f"{name}: gap: 4 candles missing after {t[0]}" in log  # t[1..4] rejected
    assert f"{name}: gap: 1 candles missing after {t[7]}" in log
    assert f"{name}: candle from the future at {future.index[0]}" in log
    assert str(t[-1]) not in log  # the candle still open is not an error
    figures.append(
        {"fault": "bad candles from a source (NaN, zero, negative, high<low, duplicate, "
                  "out of order, gap, future, still open)",
         "cases": 9, "stored": report.candles_stored, "rejected": report.candles_rejected,
         "logged": 9, "bad_stored": 0}
    )  # fmt: skip


@pytest.mark.slow  # the real tiny checkpoint
def test_the_model_is_never_fed_a_bad_candle(btc, shared_data, tiny_checkpoint, settings, caplog):
    """Through the real predictor: a gap in the window, bad rows written straight to the
    database, a candle from the future in the database. Only the clean market is predicted,
    and on its newest closed candle."""
    settings.MODEL_PATH = tiny_checkpoint
    market, real = btc
    f.store_candles(market, real.iloc[STORED : NEWEST + 1].drop(index=[STORED + 8]))  # a gap
    eth = f.real_candles(shared_data, "ETH_USDT", n=NEWEST + 1)
    clean, nan, crossed = (f.market(s) for s in ("ETHUSDT", "NANUSDT", "XUSDT"))
    for m in (clean, nan, crossed):
        f.store_candles(m, eth)
    newest = eth["time"].iloc[-1].to_pydatetime()
    nan_at, crossed_at = newest - timedelta(hours=2), newest - timedelta(hours=1)
    # An infinity, not a NaN: SQLite stores a NaN as NULL (refused: the column is NOT NULL), and
    # both trip the same guard.
    Candle.objects.filter(market=nan, open_time=nan_at).update(close=float("inf"))
    Candle.objects.filter(market=crossed, open_time=crossed_at).update(high=1.0, low=2.0)
    Candle.objects.create(
        market=clean, open_time=newest + timedelta(days=1), open=1, high=1, low=1, close=1,
        volume=1,
    )  # fmt: skip

    report = predictions_run(market_ids=list(Market.objects.values_list("pk", flat=True)),
                             candle_time=newest)  # fmt: skip

    errors = {e["market"]: e["error"] for e in report.errors}
    assert "384 candles, the model needs 385" in errors["bybit:BTCUSDT"]  # the gap
    assert f"({pd.Timestamp(nan_at)}): NaN or infinite value" in errors["bybit:NANUSDT"]
    assert f"({pd.Timestamp(crossed_at)}): high < low" in errors["bybit:XUSDT"]
    [prediction] = Prediction.objects.all()
    assert (prediction.market, prediction.candle_time) == (clean, newest)
    assert prediction.close == eth["close"].iloc[-1]


def test_an_import_with_a_candle_from_the_future_names_its_line(shared_data, tmp_path):
    lines = (shared_data / "ohlcv" / "BTC_USDT-15m.csv").read_text().splitlines()[:50]
    soon = pd.Timestamp.now(tz="UTC").floor("15min") + pd.Timedelta(hours=1)
    lines.append(f"{soon.value // 1_000_000},1,1,1,1,1")
    path = tmp_path / "BTC_USDT-15m.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CommandError, match=re.escape(f"line 51 ({soon}): candle from the future")):
        call_command("import_candles", str(path))
    assert not Candle.objects.exists()
