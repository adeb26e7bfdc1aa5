"""The trading engine against the real database: routing, the one-position rule, reversals,
idempotent redelivery and what is written back to signals."""

from decimal import Decimal

import pytest

from signals_app.models import Signal
from tests.trading_app import factories as f
from trading_app.models import Order, Position, TradeDecision
from trading_app.services.engine import signals_process

pytestmark = pytest.mark.django_db


@pytest.fixture
def btc():
    market = f.market("BTCUSDT")
    f.store_candles(market, f.calm_candles(n=120, price=50_000.0))
    return market


@pytest.fixture
def account():
    return f.paper_account()


def test_long_signal_becomes_filled_paper_order_and_open_position(btc, account):
    trader = f.trader(account, [btc])
    signal = f.signal(btc, type="LONG")

    result = signals_process(signal_ids=[signal.pk])

    assert result.orders == 1
    order = Order.objects.get()
    assert order.status == Order.Status.FILLED
    assert order.side == "buy"
    assert order.purpose == Order.Purpose.OPEN
    assert order.client_order_id == f"{account.client_id_prefix}-{trader.pk}-s{signal.pk}-o"
    # 2% of 10,000 at 50,000 = 0.004 BTC; fill at close + 0.05% slippage, fee 0.055% of notional
    assert order.amount == Decimal("0.004")
    assert order.average_price == Decimal("50000") * Decimal("1.0005")
    assert order.fee == order.amount * order.average_price * Decimal("0.00055")
    position = Position.objects.get()
    assert position.status == Position.Status.OPEN
    assert position.side == "LONG"
    assert position.entry_price == order.average_price
    assert position.stop_loss < position.entry_price < position.take_profit
    signal.refresh_from_db()
    assert signal.status == Signal.Status.EXECUTED
    assert (signal.orders_attempted, signal.orders_created) == (1, 1)
    decision = TradeDecision.objects.get()
    assert decision.outcome == TradeDecision.Outcome.ORDERED
    assert any("RSI(14)" in r for r in decision.reasons)
