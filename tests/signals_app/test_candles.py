"""Candles in: CSV import (all or nothing, file and line in errors) and the per-minute sync."""

import copy
import json
import logging
from datetime import UTC, datetime

import ccxt
import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from signals_app.models import Candle, Market
from signals_app.services.candles import candles_sync
from signals_app.sources.ccxt import CcxtSource
from signals_app.sources.replay import ReplaySource

pytestmark = pytest.mark.django_db
UNTIL = "2025-03-01T00:00:00Z"


def _head(source, target, lines: int, *, replace: dict[int, str] | None = None):
    rows = source.read_text().splitlines()[:lines]
    for number, text in (replace or {}).items():
        rows[number - 1] = text
    target.write_text("\n".join(rows) + "\n")


def test_import_real_candles_creates_disabled_markets_and_is_idempotent(shared_data):
    ohlcv = shared_data / "ohlcv"
    call_command("import_candles", str(ohlcv), "--until", UNTIL)
    cutoff = pd.Timestamp(UNTIL)
    for symbol in ("BTC_USDT", "ETH_USDT"):
        market = Market.objects.get(exchange="bybit", symbol=symbol.replace("_", ""))
        assert not market.enabled
        assert market.ccxt_symbol == symbol.replace("_", "/")
        timestamps = pd.read_csv(ohlcv / f"{symbol}-15m.csv", usecols=["timestamp"])["timestamp"]
        expected = int((pd.to_datetime(timestamps, unit="ms", utc=True) < cutoff).sum())
        assert market.candles.count() == expected
    btc = Market.objects.get(symbol="BTCUSDT")
    first = btc.candles.order_by("open_time").first()
    assert (first.open_time, first.close) == (datetime(2025, 1, 1, tzinfo=UTC), 93656.18)
    before = Candle.objects.count()
    call_command("import_candles", str(ohlcv / "BTC_USDT-15m.csv"), "--until", UNTIL)
    assert Candle.objects.count() == before


def test_a_bad_row_names_file_and_line_and_nothing_is_imported(shared_data, tmp_path):
    ohlcv = shared_data / "ohlcv"
    _head(ohlcv / "BTC_USDT-15m.csv", tmp_path / "BTC_USDT-15m.csv", 200)
    # line 50 of the second file: high below low
    _head(
        ohlcv / "ETH_USDT-15m.csv",
        tmp_path / "ETH_USDT-15m.csv",
        200,
        replace={50: "1735732800000,3350.0,3300.0,3340.0,3345.0,10.0"},
    )
    with pytest.raises(CommandError, match=r"ETH_USDT-15m\.csv: line 50 .*high < low"):
        call_command("import_candles", str(tmp_path))
    assert Candle.objects.count() == 0
    assert Market.objects.count() == 0


def test_misaligned_and_unparseable_rows_name_their_line(shared_data, tmp_path):
    ohlcv = shared_data / "ohlcv"
    _head(
        ohlcv / "BTC_USDT-15m.csv",
        tmp_path / "BTC_USDT-15m.csv",
        30,
        replace={7: "1735694100001,93000,93100,92900,93050,1"},
    )
    with pytest.raises(CommandError, match=r"BTC_USDT-15m\.csv: line 7"):
        call_command("import_candles", str(tmp_path / "BTC_USDT-15m.csv"))
    _head(ohlcv / "BTC_USDT-15m.csv", tmp_path / "BTC_USDT-15m.csv", 30, replace={9: "x,1,2,3,4,5"})
    with pytest.raises(CommandError, match=r"line 9: timestamp is not a number"):
        call_command("import_candles", str(tmp_path / "BTC_USDT-15m.csv"))
    (tmp_path / "btc.csv").write_text("timestamp,open,high,low,close,volume\n")
    with pytest.raises(CommandError, match="cannot tell the market"):
        call_command("import_candles", str(tmp_path / "btc.csv"))
    assert Candle.objects.count() == 0


def _imported_btc(shared_data, *, until: str) -> Market:
    call_command(
        "import_candles", str(shared_data / "ohlcv" / "BTC_USDT-15m.csv"), "--until", until
    )
    return Market.objects.get(symbol="BTCUSDT")


def test_sync_stores_only_newly_closed_real_candles(shared_data):
    btc = _imported_btc(shared_data, until="2025-06-01T00:00:00Z")
    source = ReplaySource(directory=shared_data / "ohlcv")
    now = datetime(2025, 6, 1, 1, 10, tzinfo=UTC)  # 00:00..00:45 closed, 01:00 still open
    report = candles_sync(markets=Market.objects.all(), source=source, now=now)
    assert (report.candles_stored, report.errors) == (4, [])
    newest = btc.candles.order_by("-open_time").first()
    assert newest.open_time == datetime(2025, 6, 1, 0, 45, tzinfo=UTC)
    recorded = pd.read_csv(shared_data / "ohlcv" / "BTC_USDT-15m.csv")
    row = recorded[recorded["timestamp"] == int(newest.open_time.timestamp() * 1000)].iloc[0]
    assert (newest.open, newest.close, newest.volume) == (row.open, row.close, row.volume)
    again = candles_sync(markets=Market.objects.all(), source=source, now=now)
    assert again.candles_stored == 0


def test_one_failing_market_does_not_stop_the_others(shared_data):
    _imported_btc(shared_data, until="2025-06-01T00:00:00Z")
    Market.objects.create(exchange="bybit", symbol="FOOUSDT", ccxt_symbol="FOO/USDT")
    report = candles_sync(
        markets=Market.objects.all(),
        source=ReplaySource(directory=shared_data / "ohlcv"),
        now=datetime(2025, 6, 1, 1, 0, tzinfo=UTC),
    )
    assert report.candles_stored == 4
    assert [(e["market"], e["stage"]) for e in report.errors] == [("bybit:FOOUSDT", "sync")]
    assert "no replay file" in report.errors[0]["error"]


def test_a_bad_candle_from_the_exchange_is_logged_and_not_stored(shared_data, caplog):
    case = json.loads((shared_data / "ccxt/bybit/response.json").read_text())["methods"][
        "fetchOHLCV"
    ][0]
    body = copy.deepcopy(case["httpResponse"])
    body["result"]["list"][1][2] = "40000"  # the middle candle's high below its low
    bad_time = pd.Timestamp(int(body["result"]["list"][1][0]), unit="ms", tz="UTC")

    def factory(exchange_id):
        exchange = ccxt.bybit({"enableRateLimit": False})
        exchange.set_markets(json.loads((shared_data / "ccxt/bybit/markets.json").read_text()))
        exchange.fetch = lambda *args, **kwargs: body
        return exchange

    market = Market.objects.create(
        exchange="bybit", symbol="BTCUSDT", ccxt_symbol="BTC/USDT:USDT", timeframe="1h"
    )
    first = pd.Timestamp(case["parsedResponse"][0][0], unit="ms", tz="UTC")
    Candle.objects.create(
        market=market, open_time=first - pd.Timedelta(hours=1), open=1, high=1, low=1, close=1,
        volume=1,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="signals_app"):
        report = candles_sync(
            markets=Market.objects.all(),
            source=CcxtSource(client_factory=factory),
            now=first + pd.Timedelta(hours=4),
        )
    assert (report.candles_stored, report.candles_rejected) == (2, 1)
    assert not market.candles.filter(open_time=bad_time).exists()
    assert f"bybit:BTCUSDT: bad candle at {bad_time}" in caplog.text


def test_backfill_creates_the_market_with_exchange_limits_and_stores_closed_candles(shared_data):
    from signals_app.services.candles import candles_backfill

    case = json.loads((shared_data / "ccxt/bybit/response.json").read_text())["methods"][
        "fetchOHLCV"
    ][0]
    pages = []

    def factory(exchange_id):
        exchange = ccxt.bybit({"enableRateLimit": False})
        exchange.set_markets(json.loads((shared_data / "ccxt/bybit/markets.json").read_text()))
        exchange.fetch = lambda url, *args, **kwargs: pages.append(url) or case["httpResponse"]
        return exchange

    first = pd.Timestamp(case["parsedResponse"][0][0], unit="ms", tz="UTC")
    report = candles_backfill(
        exchange="bybit",
        symbols=["btcusdt"],
        since=first,
        now=first + pd.Timedelta(hours=5),
        timeframe="1h",
        source=CcxtSource(client_factory=factory),
    )
    assert (report.markets, report.candles_stored, report.errors) == (1, 3, [])
    market = Market.objects.get(exchange="bybit", symbol="BTCUSDT")
    assert (market.ccxt_symbol, market.timeframe, market.enabled) == ("BTC/USDT", "1h", False)
    assert str(market.amount_step.normalize()) == "0.000001"
    assert str(market.min_notional.normalize()) == "5"
    assert list(market.candles.order_by("open_time").values_list("close", flat=True)) == [
        row[4] for row in case["parsedResponse"]
    ]
    assert len(pages) == 1
