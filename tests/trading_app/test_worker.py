"""End to end through real Celery workers: signals handed over by task name (as signals_app does)
become paper orders and positions on a real `trading` worker; a real cycle on a real `gpu` worker
feeds it; a redelivered message adds nothing."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from botai.celery import app
from signals_app.models import CycleRun, Market, MLConfig, Signal
from signals_app.tasks import run_cycle
from tests.trading_app import factories as f
from trading_app.models import EquitySnapshot, Order, Position, TradeDecision

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PROCESS_SIGNALS = "trading_app.tasks.process_signals"


def _wait(condition, *, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"not reached in {timeout}s: {what}")


@pytest.fixture
def book(shared_data, transactional_db):
    """BTC and ETH with real candles, one paper trader subscribed to both."""
    markets = []
    for symbol in ("BTC_USDT", "ETH_USDT"):
        market = f.market(symbol.replace("_", ""), ccxt_symbol=symbol.replace("_", "/"))
        f.store_candles(market, f.real_candles(shared_data, symbol, n=200))
        markets.append(market)
    trader = f.trader(f.paper_account(), markets)
    return trader, markets


def test_signals_become_paper_orders_on_a_real_trading_worker(book, start_worker):
    trader, (btc, eth) = book
    signals = [f.signal(btc, type="LONG"), f.signal(eth, type="SHORT")]
    ids = [s.pk for s in signals]
    start_worker("trading")

    app.send_task(PROCESS_SIGNALS, args=[ids]).get(timeout=60)

    assert TradeDecision.objects.filter(trader=trader).count() == 2
    ordered = TradeDecision.objects.filter(outcome=TradeDecision.Outcome.ORDERED)
    assert Order.objects.filter(status=Order.Status.FILLED).count() == ordered.count()
    assert Position.objects.filter(status=Position.Status.OPEN).count() == ordered.count()
    executed = Signal.objects.filter(pk__in=ids, status=Signal.Status.EXECUTED).count()
    assert executed == ordered.count()
    assert {p.side for p in Position.objects.all()} <= {"LONG", "SHORT"}
    before = (Order.objects.count(), Position.objects.count(), TradeDecision.objects.count())

    # The same message again (a redelivery after a lost ack): nothing new.
    app.send_task(PROCESS_SIGNALS, args=[ids]).get(timeout=60)
    assert (
        Order.objects.count(),
        Position.objects.count(),
        TradeDecision.objects.count(),
    ) == before

    # The beat's position sync runs on the same worker.
    result = app.send_task("trading_app.tasks.sync_positions").get(timeout=60)
    assert result["snapshots"] == 1
    assert EquitySnapshot.objects.filter(trader=trader).count() == 1


# Most of the tiny checkpoint's calls are NEUTRAL or too weak to trade; on this afternoon it calls
# ETH LONG with conviction several times (found by running it over June 2025): the cycles replay it.
REPLAY_FROM = datetime(2025, 6, 18, 15, 0, tzinfo=UTC)
CANDLES = 12


@pytest.fixture
def cycle_setup(shared_data, tiny_checkpoint, settings, start_worker):
    """signals_app's real cycle: candles imported up to REPLAY_FROM then replayed, the tiny real
    checkpoint, a gpu and a trading worker; one paper trader subscribed to every market."""
    ohlcv = shared_data / "ohlcv"
    call_command("import_candles", str(ohlcv), "--until", REPLAY_FROM.isoformat())
    Market.objects.update(enabled=True)
    settings.MODEL_PATH = tiny_checkpoint
    settings.MARKET_DATA_SOURCE, settings.REPLAY_DIR = "replay", str(ohlcv)
    config = MLConfig.load()
    config.min_confidence = config.min_signal_strength = 0.0  # every LONG/SHORT goes to trading
    config.save()
    start_worker(
        "gpu", MODEL_PATH=tiny_checkpoint, ML_TORCH_THREADS=1, MARKET_DATA_SOURCE="replay",
        REPLAY_DIR=ohlcv,
    )  # fmt: skip
    start_worker("trading")
    return f.trader(f.paper_account(), list(Market.objects.all()))


def test_a_real_cycle_feeds_the_trading_worker(cycle_setup):
    trader = cycle_setup
    for candle in range(CANDLES):  # one cycle per closed candle
        now = REPLAY_FROM + timedelta(minutes=15 * candle + 1)
        run = run_cycle.apply(kwargs={"now": now.isoformat()}).get()
        _wait(
            lambda run=run: CycleRun.objects.get(pk=run["cycle_run"]).finished_at is not None,
            timeout=120, what="cycle finished",
        )  # fmt: skip
        # The trading worker decides on this candle's signals before the next cycle runs.
        handed = Signal.objects.filter(status__in=["ACCEPTED", "EXECUTED"])
        _wait(
            lambda handed=handed: not handed.filter(trade_decisions__isnull=True).exists(),
            timeout=60, what="trading decided every accepted signal",
        )  # fmt: skip

    traded = Signal.objects.exclude(type=Signal.Type.NEUTRAL)
    assert traded.count() >= 3, "the replayed evening should hold LONG/SHORT calls"
    decisions = TradeDecision.objects.filter(trader=trader)
    assert decisions.count() == traded.count()
    assert decisions.filter(outcome=TradeDecision.Outcome.ORDERED).exists()
    for decision in decisions:
        orders = Order.objects.filter(signal=decision.signal, trader=trader)
        if decision.outcome == TradeDecision.Outcome.ORDERED:
            assert set(orders.values_list("status", flat=True)) == {Order.Status.FILLED}
            decision.signal.refresh_from_db()
            assert decision.signal.status == Signal.Status.EXECUTED
            assert decision.signal.orders_created == orders.count()
        else:
            assert not orders.exists()
    for market in Market.objects.all():
        assert Position.objects.filter(trader=trader, market=market, status="OPEN").count() <= 1
