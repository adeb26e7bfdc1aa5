"""The paper exchange: fills with slippage and fee, SL/TP triggers on candle high/low, and state
that lives in the database (a new process sees the same balances, orders and positions)."""

from datetime import timedelta
from decimal import Decimal

import pytest

from tests.trading_app import factories as f
from trading_app.exchanges.base import OrderRequest, OrderStatus, PermanentExchangeError
from trading_app.exchanges.paper import PaperExchange, triggered_exit
from trading_app.models import Position
from trading_app.services.engine import signals_process

T = f.T0


def _candle(minutes: int, open_: float, high: float, low: float):
    return (T + timedelta(minutes=minutes), open_, high, low)


def test_stop_and_take_profit_on_candle_high_low():
    sl, tp = Decimal(95), Decimal(110)
    quiet = _candle(0, 100, 104, 96)
    assert triggered_exit(side="LONG", stop_loss=sl, take_profit=tp, candles=[quiet]) is None
    hit = triggered_exit(
        side="LONG", stop_loss=sl, take_profit=tp, candles=[quiet, _candle(15, 100, 111, 99)]
    )
    assert (hit.reason, hit.price, hit.candle_time) == (
        "TAKE_PROFIT",
        tp,
        T + timedelta(minutes=15),
    )
    hit = triggered_exit(
        side="LONG", stop_loss=sl, take_profit=tp, candles=[_candle(0, 100, 101, 95)]
    )
    assert (hit.reason, hit.price) == ("STOP_LOSS", sl)


def test_stop_first_when_both_fall_in_one_candle():
    wide = _candle(0, 100, 112, 94)
    hit = triggered_exit(
        side="LONG", stop_loss=Decimal(95), take_profit=Decimal(110), candles=[wide]
    )
    assert hit.reason == "STOP_LOSS"
    hit = triggered_exit(
        side="SHORT", stop_loss=Decimal(105), take_profit=Decimal(90), candles=[wide]
    )
    assert hit.reason == "STOP_LOSS"


def test_short_levels_mirror_and_a_gap_fills_at_the_open():
    short = triggered_exit(
        side="SHORT", stop_loss=Decimal(105), take_profit=Decimal(90),
        candles=[_candle(0, 100, 101, 89)],
    )  # fmt: skip
    assert (short.reason, short.price) == ("TAKE_PROFIT", Decimal(90))
    gap = triggered_exit(
        side="LONG", stop_loss=Decimal(95), take_profit=None, candles=[_candle(0, 90, 91, 88)]
    )
    assert (gap.reason, gap.price) == ("STOP_LOSS", Decimal(90))  # worse than the stop


@pytest.mark.django_db
def test_market_order_fills_at_latest_close_with_slippage_and_fee():
    market = f.market("ETHUSDT", ccxt_symbol="ETH/USDT")
    f.store_candles(market, f.calm_candles(n=5, price=2_000.0))
    exchange = PaperExchange(
        f.paper_account(paper_slippage_percentage=0.1, paper_fee_percentage=0.06)
    )
    buy = exchange.create_order(
        OrderRequest(client_order_id="b1", symbol="ETH/USDT", side="buy", amount=Decimal("0.5"))
    )
    sell = exchange.create_order(
        OrderRequest(client_order_id="s1", symbol="ETH/USDT", side="sell", amount=Decimal("0.5"))
    )
    assert buy.status == OrderStatus.CLOSED
    assert buy.average == Decimal("2000.0") * Decimal("1.001")
    assert sell.average == Decimal("2000.0") * Decimal("0.999")
    assert buy.fee == Decimal("0.5") * buy.average * Decimal("0.0006")
    with pytest.raises(PermanentExchangeError, match="market orders only"):
        exchange.create_order(
            OrderRequest(client_order_id="l1", symbol="ETH/USDT", side="buy", amount=Decimal(1),
                         type="limit", price=Decimal(1))
        )  # fmt: skip
    with pytest.raises(PermanentExchangeError, match="no candles for XRP/USDT"):
        exchange.create_order(
            OrderRequest(client_order_id="x1", symbol="XRP/USDT", side="buy", amount=Decimal(1))
        )


@pytest.mark.django_db
def test_state_survives_a_restart():
    """Everything the paper exchange knows is in the database: a fresh adapter (as in a new worker
    process) reports the same balance, order and position."""
    market = f.market("BTCUSDT")
    f.store_candles(market, f.calm_candles(n=120, price=50_000.0))
    account = f.paper_account()
    f.trader(account, [market])
    signals_process(signal_ids=[f.signal(market).pk])

    fresh = PaperExchange(type(account).objects.get(pk=account.pk))
    usdt = fresh.fetch_balance()["USDT"]
    position = Position.objects.get()
    assert usdt.used == position.amount * position.entry_price
    assert usdt.free == Decimal(10_000) - usdt.used - position.fees
    [held] = fresh.fetch_positions()
    assert (held.symbol, held.side, held.amount) == ("BTC/USDT", "long", position.amount)
    order = position.orders.get()
    found = fresh.find_order(client_order_id=order.client_order_id, symbol="BTC/USDT")
    assert (found.status, found.filled, found.average) == (
        OrderStatus.CLOSED, order.amount, order.average_price,
    )  # fmt: skip
    assert fresh.find_order(client_order_id="never-placed", symbol="BTC/USDT") is None
