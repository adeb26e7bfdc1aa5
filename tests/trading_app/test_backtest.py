"""Backtests on the live code path: the command and its report, isolation from the live tables,
no look-ahead, skipped steps that change nothing, and parity with a live-path paper session
driven minute by minute over the same candles."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command

from signals_app.models import Candle, Market, MLConfig, ModelVersion, Prediction, Signal
from tests.trading_app import factories
from trading_app.backtest.metrics import (
    Curve,
    Grid,
    buy_and_hold_curve,
    ema_rsi_sides,
    performance,
)
from trading_app.backtest.replay import backtest_run
from trading_app.models import (
    BacktestRun,
    Balance,
    EquitySnapshot,
    ExchangeAccount,
    Order,
    Position,
    TradeDecision,
    Trader,
)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

STEP = timedelta(minutes=15)
# The tiny checkpoint trains on candles before 2025-05-01: the backtests run after it.
HISTORY_UNTIL = datetime(2025, 6, 1, tzinfo=UTC)
START = datetime(2025, 6, 1, tzinfo=UTC)
END = datetime(2025, 6, 4, 23, 45, tzinfo=UTC)
ORDER_FIELDS = ("market", "purpose", "side", "amount", "price", "average_price", "filled_at")


@pytest.fixture
def world(shared_data, tiny_checkpoint, settings, tmp_path):
    """BTC and ETH candles stored through END, the tiny model, every LONG/SHORT accepted, and a
    paper trader on both markets with the traders.yaml defaults."""
    call_command("import_candles", str(shared_data / "ohlcv"), "--until", "2025-06-10T00:00Z")
    settings.MODEL_PATH = tiny_checkpoint
    settings.DATA_DIR = tmp_path
    config = MLConfig.load()
    config.min_confidence = config.min_signal_strength = 0.0
    config.save()
    markets = list(Market.objects.filter(symbol__in=["BTCUSDT", "ETHUSDT"]).order_by("symbol"))
    Market.objects.filter(pk__in=[m.pk for m in markets]).update(
        amount_step=Decimal("0.000001"), price_step=Decimal("0.01"), min_notional=Decimal("5")
    )
    account = factories.paper_account()
    trader = factories.trader(account, markets)
    return {"trader": trader, "markets": markets, "ohlcv": shared_data / "ohlcv"}


def _orders(rows) -> list[tuple]:
    return [
        (
            row["market"],
            row["purpose"],
            row["side"],
            Decimal(str(row["amount"])),
            Decimal(str(row["price"])),
            Decimal(str(row["average_price"])),
            pd.Timestamp(row["filled_at"]),
        )  # fmt: skip
        for row in rows
    ]


def _report(run: BacktestRun) -> dict:
    return json.loads(Path(run.report_path).with_name("report.json").read_text())


def _live_counts() -> dict[str, int]:
    models = (Candle, Market, Prediction, Signal, ModelVersion, ExchangeAccount, Trader, Order,
              Position, TradeDecision, Balance, EquitySnapshot)  # fmt: skip
    return {model.__name__: model.objects.count() for model in models}


def test_command_replays_through_the_services_and_writes_the_report(world, tmp_path):
    trader = world["trader"]
    before = _live_counts()
    trader_before = Trader.objects.values().get(pk=trader.pk)
    call_command(
        "backtest", "--trader", trader.name, "--from", START.isoformat(), "--to", "2025-06-04",
        verbosity=0,
    )  # fmt: skip
    run = BacktestRun.objects.get()
    assert run.status == BacktestRun.Status.DONE, run.error
    assert run.steps == 4 * 96  # 2025-06-01 00:00 .. 2025-06-04 23:45, a bar every 15 min
    assert 0 < run.service_steps <= run.steps
    assert run.orders > 0
    assert run.model_fingerprint
    strategy = run.metrics["strategy"]
    assert strategy["trades"] > 0
    assert strategy["fees_paid"] > 0
    for name in ("strategy", "buy_and_hold", "ema_rsi"):
        assert set(run.metrics[name]) >= {
            "trades", "win_rate_percentage", "average_win", "average_loss", "profit_factor",
            "total_return_percentage", "annualised_return_percentage", "sharpe", "sortino",
            "max_drawdown_percentage", "exposure_percentage", "fees_paid",
        }  # fmt: skip
    assert run.metrics["buy_and_hold"]["trades"] == 2
    assert run.metrics["buy_and_hold"]["exposure_percentage"] == 100.0
    page = tmp_path / "backtests" / str(run.pk) / "report.html"
    assert run.report_path == str(page)
    html = page.read_text()
    assert "data:image/png;base64," in html
    assert "http://" not in html
    assert "https://" not in html
    report = json.loads((page.parent / "report.json").read_text())
    assert len(report["clock"]) == run.steps
    assert len(report["orders"]) == run.orders
    # The live tables hold what they held before, the live trader is as it was.
    assert _live_counts() == before
    assert Trader.objects.values().get(pk=trader.pk) == trader_before


def test_no_look_ahead_truncating_the_candles_after_t_keeps_every_decision_up_to_t(world):
    trader = world["trader"]
    end = datetime(2025, 6, 6, 23, 45, tzinfo=UTC)
    full = _report(backtest_run(trader=trader, start=START, end=end, progress=False))
    cut = datetime(2025, 6, 5, 8, 0, tzinfo=UTC)
    Candle.objects.filter(open_time__gt=cut).delete()
    truncated = _report(backtest_run(trader=trader, start=START, end=end, progress=False))
    decided = [o for o in full["orders"] if pd.Timestamp(o["filled_at"]) <= cut + STEP]
    assert decided, "the period must hold orders before the cut"
    assert len(decided) < len(full["orders"]), "and after it"
    assert _orders(truncated["orders"]) == _orders(decided)
    steps = len(truncated["clock"])
    assert truncated["clock"] == full["clock"][:steps]
    assert pd.Timestamp(truncated["clock"][-1]) == cut + STEP
    for name in ("strategy", "ema_rsi"):
        assert truncated["equity"][name][:-1] == full["equity"][name][: steps - 1]


@pytest.mark.parametrize("max_drawdown", [10.0, 0.05], ids=["defaults", "halting"])
def test_skipping_quiet_steps_changes_nothing(world, max_drawdown):
    """Only steps with an accepted signal, or on which the sync has work, go through the
    services; sending every step gives the same orders, equity and halt. With a 0.05% drawdown
    limit the trader is halted along the way."""
    trader = world["trader"]
    Trader.objects.filter(pk=trader.pk).update(max_drawdown_percentage=max_drawdown)
    trader.refresh_from_db()
    end = datetime(2025, 6, 6, 23, 45, tzinfo=UTC)
    fast = backtest_run(trader=trader, start=START, end=end, progress=False)
    thorough = backtest_run(trader=trader, start=START, end=end, progress=False, every_step=True)
    assert fast.service_steps < thorough.service_steps == thorough.steps
    assert _orders(_report(fast)["orders"]) == _orders(_report(thorough)["orders"])
    assert len(_report(fast)["orders"]) > 2
    assert _report(fast)["equity"] == _report(thorough)["equity"]
    halted = fast.metrics["replay"]["halted_reason"]
    assert halted == thorough.metrics["replay"]["halted_reason"]
    assert bool(halted) == (max_drawdown < 1)


def test_equity_curve_is_what_the_position_sync_snapshots(world):
    from trading_app.backtest.metrics import grid_of, strategy_curve
    from trading_app.backtest.replay import backtest_replay

    trader = world["trader"]
    run = BacktestRun.objects.create(trader=trader, trader_name=trader.name, start=START, end=END)
    outcome, tapes = backtest_replay(run=run, trader=trader, start=START, end=END, progress=False)
    grid = grid_of(tapes, outcome.steps)
    curve = strategy_curve(
        grid=grid, orders=outcome.orders, positions=outcome.positions, initial=10000.0
    )
    by_clock = dict(zip(grid.clock, curve.equity, strict=True))
    assert len(outcome.snapshots) > 10
    for time_, equity in outcome.snapshots:
        assert by_clock[pd.Timestamp(time_)] == pytest.approx(equity, abs=1e-6)


def test_a_failing_run_is_recorded(world):
    trader = world["trader"]
    trader.markets.update(timeframe="1h")
    with pytest.raises(ValueError, match="the model reads 15m candles"):
        backtest_run(trader=trader, start=START, end=END, progress=False)
    run = BacktestRun.objects.get()
    assert run.status == BacktestRun.Status.FAILED
    assert "15m" in run.error


def test_command_refuses_unknown_trader_and_reversed_dates(world):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no trader"):
        call_command("backtest", "--trader", "nobody", "--from", "2025-06-01", "--to", "2025-06-02")
    with pytest.raises(CommandError, match="before --from"):
        call_command(
            "backtest", "--trader", world["trader"].name, "--from", "2025-06-02", "--to",
            "2025-06-01",
        )  # fmt: skip


def test_csv_data_gives_the_stored_candles_result(world):
    trader = world["trader"]
    stored = backtest_run(trader=trader, start=START, end=END, progress=False)
    csv = backtest_run(trader=trader, start=START, end=END, progress=False, data_dir=world["ohlcv"])
    assert csv.data_source == str(world["ohlcv"])
    assert _orders(_report(csv)["orders"]) == _orders(_report(stored)["orders"])


# ---------------------------------------------------------------- parity with the live path

SESSION_FIRST = datetime(2025, 6, 4, 18, 0, tzinfo=UTC)  # first candle decided on
SESSION_LAST = datetime(2025, 6, 5, 23, 45, tzinfo=UTC)  # last candle decided on


def _live_session(*, trader: Trader) -> None:
    """The services as the tasks call them, one minute at a time, on the replay source:
    run_cycle -> predict_batch (-> process_signals) then sync_positions, without Celery."""
    from signals_app.services.cycle import cycle_record_batch, cycle_run
    from signals_app.services.predictions import predictions_run
    from trading_app.services.engine import signals_process
    from trading_app.services.sync import positions_sync

    minute = SESSION_FIRST + STEP  # the first candle has just closed
    last = SESSION_LAST + STEP + timedelta(minutes=14)
    while minute <= last:
        handed: list[int] = []

        def dispatch(market_ids, candle_time, cycle_run_id, index, handed=handed):
            report = predictions_run(market_ids=market_ids, candle_time=candle_time)
            cycle_record_batch(cycle_run_id=cycle_run_id, batch_index=index, report=report)
            handed.extend(report.accepted_ids)  # what process_signals receives

        cycle_run(now=minute, dispatch=dispatch)
        if handed:
            signals_process(signal_ids=handed, now=minute)
        positions_sync(now=minute)
        minute += timedelta(minutes=1)


def test_backtest_places_the_orders_a_live_path_paper_session_places(world, settings):
    from botai.celery import app

    settings.MARKET_DATA_SOURCE, settings.REPLAY_DIR = "replay", str(world["ohlcv"])
    Candle.objects.filter(open_time__gte=SESSION_FIRST).delete()  # the session syncs them
    Market.objects.update(enabled=True)
    trader = world["trader"]
    try:
        _live_session(trader=trader)
    finally:
        app.control.purge()  # predictions_run handed the accepted ids to the (absent) workers
    live = [
        {**row, "market": row.pop("market__symbol")}
        for row in Order.objects.filter(trader=trader)
        .order_by("filled_at", "pk")
        .values(
            "market__symbol", "purpose", "side", "amount", "price", "average_price", "filled_at"
        )  # fmt: skip
    ]
    assert len(live) >= 10  # 22 on these candles: entries, reversals and exits
    assert {"OPEN", "CLOSE", "TAKE_PROFIT"} <= {o["purpose"] for o in live}
    run = backtest_run(trader=trader, start=SESSION_FIRST, end=SESSION_LAST, progress=False)
    assert run.steps == (SESSION_LAST - SESSION_FIRST) // STEP + 1
    assert _orders(_report(run)["orders"]) == _orders(live)


# ---------------------------------------------------------------- API and admin


def test_api_lists_runs_read_only(world):
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    run = backtest_run(trader=world["trader"], start=START, end=START + 8 * STEP, progress=False)
    client = APIClient()
    listed = client.get("/api/v1/backtests")
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()["results"]] == [run.pk]
    one = client.get(f"/api/v1/backtests/{run.pk}").json()
    assert one["metrics"]["strategy"]["trades"] == run.metrics["strategy"]["trades"]
    assert one["status"] == "DONE"
    client.force_authenticate(get_user_model().objects.create_user("ops", is_staff=True))
    assert client.post("/api/v1/backtests", {}, format="json").status_code == 405
    assert client.delete(f"/api/v1/backtests/{run.pk}").status_code == 405


def test_admin_shows_runs_read_only(world, client):
    from django.contrib.auth import get_user_model

    run = backtest_run(trader=world["trader"], start=START, end=START + 8 * STEP, progress=False)
    client.force_login(get_user_model().objects.create_superuser("root", "r@example.com", "pw"))
    assert client.get("/admin/trading_app/backtestrun/").status_code == 200
    assert client.get(f"/admin/trading_app/backtestrun/{run.pk}/change/").status_code == 200
    assert client.get("/admin/trading_app/backtestrun/add/").status_code == 403


# ---------------------------------------------------------------- figures


def _grid(closes: dict[str, list[float]]) -> Grid:
    steps = pd.date_range("2025-01-01", periods=len(next(iter(closes.values()))), freq="1D", tz=UTC)
    frames = {
        s: pd.DataFrame({"close": c}, index=steps) for s, c in closes.items()
    }  # fmt: skip
    return Grid(steps=steps, delta=pd.Timedelta("1D"), closes={s: np.asarray(c, dtype=float)
                for s, c in closes.items()}, frames=frames)  # fmt: skip


def test_performance_figures_by_hand():
    grid = _grid({"X": [1.0] * 5})
    equity = np.array([100.0, 110.0, 99.0, 104.5, 120.0])
    curve = Curve(equity=equity, in_market=np.array([1, 1, 0, 0, 1], dtype=bool),
                  trade_pnls=[10.0, -11.0, 5.5, 15.5], fees=2.0)  # fmt: skip
    figures = performance(curve, grid=grid, initial=100.0)
    assert figures["trades"] == 4
    assert figures["win_rate_percentage"] == 75.0
    assert figures["average_win"] == pytest.approx(31 / 3)
    assert figures["average_loss"] == -11.0
    assert figures["profit_factor"] == pytest.approx(31 / 11)
    assert figures["total_return_percentage"] == pytest.approx(20.0)
    assert figures["max_drawdown_percentage"] == pytest.approx(10.0)  # 110 -> 99
    assert figures["exposure_percentage"] == 60.0
    assert figures["fees_paid"] == 2.0
    daily = np.array([100, 110, 99, 104.5, 120]) / np.array([100, 100, 110, 99, 104.5]) - 1
    assert figures["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * np.sqrt(365))
    downside = np.sqrt(np.mean(np.minimum(daily, 0) ** 2))
    assert figures["sortino"] == pytest.approx(daily.mean() / downside * np.sqrt(365))
    days = 5  # first close to last close plus one step
    assert figures["annualised_return_percentage"] == pytest.approx(
        100 * (1.2 ** (365.25 / days) - 1)
    )


def test_buy_and_hold_pays_slippage_and_fees_both_ways():
    grid = _grid({"X": [100.0, 120.0, 150.0], "Y": [10.0, 5.0, 8.0]})
    curve = buy_and_hold_curve(grid=grid, initial=1000.0, fee=0.001, slippage=0.0005)

    def sleeve(first: float, last: float) -> float:
        buy = first * 1.0005
        amount = 500 / (buy * 1.001)
        sell = last * 0.9995
        return 500 - amount * buy * 0.001 + amount * (sell - buy) - amount * sell * 0.001

    assert curve.equity[-1] == pytest.approx(sleeve(100, 150) + sleeve(10, 8))
    assert len(curve.trade_pnls) == 2
    assert curve.in_market.all()


def test_ema_rsi_rule_reads_the_past_only_and_matches_ta(shared_data):
    from ta.momentum import RSIIndicator
    from ta.trend import EMAIndicator

    from mlcore.candles import load_csv

    frame = load_csv(shared_data / "ohlcv" / "BTC_USDT-15m.csv").iloc[:3000]
    trader = Trader(ema_short=9, ema_long=21, rsi_period=14, rsi_oversold=30, rsi_overbought=70)
    sides = ema_rsi_sides(frame, trader=trader)
    assert ema_rsi_sides(frame.iloc[:1700], trader=trader).equals(sides.iloc[:1700])
    fast = EMAIndicator(frame["close"], window=9).ema_indicator()
    slow = EMAIndicator(frame["close"], window=21).ema_indicator()
    rsi = RSIIndicator(frame["close"], window=14).rsi()
    expected = np.select([(fast > slow) & (rsi < 70), (fast < slow) & (rsi > 30)], [1, -1], 0)
    assert (sides.to_numpy()[100:] == expected[100:]).all()
    assert {-1, 0, 1} == set(sides.iloc[100:])


def test_the_ema_rsi_rule_is_sized_like_the_strategy():
    from trading_app.backtest.metrics import _baseline

    grid = _grid({"X": [100.0, 110.0, 110.0, 110.0, 90.0]})
    sides = {"X": np.array([1, 1, 0, -1, 0])}
    curve = _baseline(grid=grid, sides=sides, initial=1000.0, fee=0.0, slippage=0.0, fraction=0.1)
    # long 100 notional at 100, out at 110 (+10); short 10% of 1010 at 110, out at 90
    short_gain = 101 / 110 * (110 - 90)
    assert curve.trade_pnls == pytest.approx([10.0, short_gain])
    np.testing.assert_allclose(curve.equity, [1000, 1010, 1010, 1010, 1010 + short_gain])
    assert curve.in_market.tolist() == [True, True, False, True, False]
