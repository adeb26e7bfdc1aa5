"""sync_positions: SL/TP from new candles, PnL, equity snapshots and the drawdown halt."""

from datetime import timedelta
from decimal import Decimal

import pandas as pd
import pytest

from tests.trading_app import factories as f
from trading_app.models import Balance, EquitySnapshot, Order, Position
from trading_app.services.engine import signals_process
from trading_app.services.sync import positions_sync
from trading_app.services.traders import trader_resume

pytestmark = pytest.mark.django_db

PRICE = 50_000.0


@pytest.fixture
def opened():
    """A paper LONG on BTC opened at the close of the last calm candle."""
    market = f.market("BTCUSDT")
    last = f.store_candles(market, f.calm_candles(n=120, price=PRICE))
    trader = f.trader(f.paper_account(), [market])
    signals_process(signal_ids=[f.signal(market).pk])
    return trader, market, Position.objects.get(), last


def _next_candle(market, after, *, open_, high, low, close, n=1):
    frame = pd.DataFrame(
        {
            "time": [after + f.STEP * (i + 1) for i in range(n)],
            "open": open_, "high": high, "low": low, "close": close, "volume": 1.0,
        }
    )  # fmt: skip
    return f.store_candles(market, frame)


def test_nothing_hit_marks_to_market_and_snapshots_equity(opened):
    trader, market, position, last = opened
    _next_candle(
        market, last, open_=PRICE, high=PRICE * 1.005, low=PRICE * 0.996, close=PRICE * 1.004
    )

    result = positions_sync()

    position.refresh_from_db()
    assert position.status == Position.Status.OPEN
    assert (
        position.unrealized_pnl
        == (Decimal(repr(PRICE * 1.004)) - position.entry_price) * position.amount
    )
    assert result.snapshots == 1
    snapshot = EquitySnapshot.objects.get()
    assert snapshot.equity == Decimal(10_000) + position.unrealized_pnl - position.fees
    assert snapshot.open_positions == 1
    trader.refresh_from_db()
    assert trader.peak_equity == max(Decimal(10_000), snapshot.equity)


def test_stop_loss_hit_closes_at_the_stop_with_slippage_and_fee(opened):
    trader, market, position, last = opened
    low = float(position.stop_loss) * 0.999
    _next_candle(market, last, open_=PRICE, high=PRICE * 1.001, low=low, close=low)

    result = positions_sync()

    assert result.stops == 1
    position.refresh_from_db()
    assert position.status == Position.Status.CLOSED
    assert position.close_reason == Position.CloseReason.STOP_LOSS
    assert position.exit_price == position.stop_loss * Decimal("0.9995")  # sell: minus slippage
    exit_order = Order.objects.get(purpose=Order.Purpose.STOP_LOSS)
    assert exit_order.status == Order.Status.FILLED
    assert exit_order.client_order_id.endswith(f"-p{position.pk}-sl")
    expected = (position.exit_price - position.entry_price) * position.amount - position.fees
    assert position.realized_pnl == expected < 0
    trader.refresh_from_db()
    assert trader.realized_pnl == position.realized_pnl
    balance = Balance.objects.get()
    assert balance.used == 0
    assert balance.free == Decimal(10_000) + position.realized_pnl


def test_take_profit_hit_and_a_second_sync_changes_nothing(opened):
    trader, market, position, last = opened
    high = float(position.take_profit) * 1.001
    _next_candle(market, last, open_=PRICE, high=high, low=PRICE * 0.999, close=high)

    assert positions_sync().take_profits == 1
    again = positions_sync()

    assert (again.stops, again.take_profits) == (0, 0)
    assert Order.objects.filter(purpose=Order.Purpose.TAKE_PROFIT).count() == 1
    position.refresh_from_db()
    assert position.close_reason == Position.CloseReason.TAKE_PROFIT
    assert position.realized_pnl > 0
    assert EquitySnapshot.objects.count() == 1  # one per trader per minute


def test_candles_before_the_entry_never_trigger(opened):
    """The entry candle and older ones are history: only later candles can hit SL/TP."""
    _, market, position, last = opened
    market.candles.filter(open_time=last).update(low=1.0)  # a spike inside the entry candle
    positions_sync()
    position.refresh_from_db()
    assert position.status == Position.Status.OPEN


def test_drawdown_halts_the_trader_until_resumed(opened):
    trader, market, position, last = opened
    # A 40% fall with the stop removed: the 200 USDT position loses 80, a 0.8% drawdown.
    position.stop_loss = None
    position.save()
    _next_candle(market, last, open_=PRICE, high=PRICE, low=PRICE * 0.6, close=PRICE * 0.6)
    trader.max_drawdown_percentage = 0.5
    trader.save()

    result = positions_sync()

    trader.refresh_from_db()
    assert result.halted == 1
    assert trader.is_halted
    assert "reached the 0.5% limit" in trader.halted_reason
    snapshot = EquitySnapshot.objects.get()
    assert snapshot.drawdown_percentage >= 0.5

    trader_resume(trader=trader, at=last)
    trader.refresh_from_db()
    assert not trader.is_halted
    assert trader.peak_equity == snapshot.equity  # the peak restarts where equity stands
    assert positions_sync(now=last + timedelta(hours=1)).halted == 0
