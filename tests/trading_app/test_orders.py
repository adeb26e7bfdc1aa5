"""The order manager on a TESTNET account, through the real ccxt adapter, offline, against the
Bybit stand-in of tests/trading_app/bybit.py (lost replies, retries and duplicates staged)."""

from decimal import Decimal

import pytest
import requests

from signals_app.models import Signal
from tests.trading_app import factories as f
from tests.trading_app.bybit import PRICE
from trading_app.models import Order, Position
from trading_app.services import orders as order_manager
from trading_app.services.engine import signals_process
from trading_app.services.sync import positions_sync

pytestmark = pytest.mark.django_db


def test_signal_to_exchange_order_then_sync_records_the_fill(setup, bybit):
    trader, market = setup
    signal = f.signal(market)

    result = signals_process(signal_ids=[signal.pk])

    assert not result.retry
    [sent] = bybit.creates
    order = Order.objects.get()
    assert sent["orderLinkId"] == order.client_order_id
    assert (sent["category"], sent["side"], sent["qty"]) == ("linear", "Buy", "0.02")
    assert Decimal(sent["stopLoss"]) == order.stop_loss  # SL/TP attached to the entry
    assert Decimal(sent["takeProfit"]) == order.take_profit
    assert order.status == Order.Status.SUBMITTED  # Bybit's create reply has no state
    assert order.exchange_order_id == f"id-{order.client_order_id}"
    assert Position.objects.get().status == Position.Status.PENDING
    signal.refresh_from_db()
    assert (signal.status, signal.orders_attempted, signal.orders_created) == ("EXECUTED", 1, 1)

    bybit.hold(symbol="BTCUSDT", side="Buy", size="0.02")
    positions_sync()

    order.refresh_from_db()
    assert order.status == Order.Status.FILLED
    assert (order.filled_amount, order.average_price, order.fee) == (
        Decimal("0.02"), Decimal(PRICE), Decimal("0.5"),
    )  # fmt: skip
    position = Position.objects.get()
    assert (position.status, position.entry_price) == (Position.Status.OPEN, Decimal(PRICE))
    assert len(bybit.creates) == 1


def test_lost_reply_is_found_by_client_id_and_never_placed_twice(setup, bybit):
    trader, market = setup
    bybit.lose_reply = True  # the exchange takes the order, the answer never arrives

    result = signals_process(signal_ids=[f.signal(market).pk])

    assert not result.retry
    assert len(bybit.creates) == 1
    order = Order.objects.get()
    assert order.exchange_order_id == f"id-{order.client_order_id}"  # learnt from the lookup
    assert order.status == Order.Status.FILLED  # the lookup reported it filled


def test_timeout_before_the_exchange_retries_after_a_lookup(setup, bybit):
    trader, market = setup
    signal = f.signal(market)
    bybit.fail_next_create = [requests.exceptions.ConnectTimeout("no route")]

    first = signals_process(signal_ids=[signal.pk])

    assert first.retry  # the task retries with backoff
    order = Order.objects.get()
    assert (order.status, order.attempts) == (Order.Status.SUBMITTED, 1)
    assert "RequestTimeout" in order.status_reason
    assert bybit.orders == {}

    second = signals_process(signal_ids=[signal.pk])  # the retried task

    assert not second.retry
    assert [body["orderLinkId"] for body in bybit.creates] == [order.client_order_id] * 2
    assert len(bybit.orders) == 1
    order.refresh_from_db()
    assert (order.status, order.attempts) == (Order.Status.SUBMITTED, 2)
    assert Order.objects.count() == 1
    signal.refresh_from_db()
    assert (signal.orders_attempted, signal.orders_created) == (1, 1)


def test_rate_limited_then_accepted(setup, bybit):
    trader, market = setup
    signal = f.signal(market)
    bybit.fail_next_create = [
        {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {}, "time": 1}
    ]
    assert signals_process(signal_ids=[signal.pk]).retry
    assert not signals_process(signal_ids=[signal.pk]).retry
    assert len(bybit.orders) == 1
    assert Order.objects.get().exchange_order_id


def test_insufficient_funds_rejects_with_the_exchange_reason(setup, bybit):
    trader, market = setup
    signal = f.signal(market)
    bybit.fail_next_create = [
        {"retCode": 110007, "retMsg": "ab not enough for new order", "result": {},
         "retExtInfo": {}, "time": 1}
    ]  # fmt: skip

    result = signals_process(signal_ids=[signal.pk])

    assert not result.retry
    order = Order.objects.get()
    assert order.status == Order.Status.REJECTED
    assert "InsufficientFunds" in order.status_reason
    assert "ab not enough for new order" in order.status_reason
    position = Position.objects.get()
    assert (position.status, position.close_reason) == ("CANCELED", "ENTRY_FAILED")
    signal.refresh_from_db()
    assert (signal.status, signal.orders_attempted, signal.orders_created) == (
        Signal.Status.ACCEPTED, 1, 0,
    )  # fmt: skip


def test_gives_up_after_max_attempts(setup, bybit):
    trader, market = setup
    signal = f.signal(market)
    bybit.fail_next_create = [
        requests.exceptions.ConnectionError("down") for _ in range(order_manager.MAX_ATTEMPTS)
    ]
    for _ in range(order_manager.MAX_ATTEMPTS):
        assert signals_process(signal_ids=[signal.pk]).retry
    assert not signals_process(signal_ids=[signal.pk]).retry
    order = Order.objects.get()
    assert order.status == Order.Status.FAILED
    assert f"gave up after {order_manager.MAX_ATTEMPTS} attempts" in order.status_reason
    assert len(bybit.creates) == order_manager.MAX_ATTEMPTS


def test_reversal_on_the_exchange_closes_before_it_opens(setup, bybit):
    trader, market = setup
    signals_process(signal_ids=[f.signal(market).pk])
    bybit.hold(symbol="BTCUSDT", side="Buy", size="0.02")
    positions_sync()  # the entry fills
    assert Position.objects.get().status == Position.Status.OPEN
    f.advance(market)
    short = f.signal(market, type="SHORT")

    signals_process(signal_ids=[short.pk])

    close_body, entry_body = bybit.creates[1:]
    assert (close_body["side"], close_body.get("reduceOnly")) == ("Sell", True)
    assert (entry_body["side"], entry_body.get("reduceOnly")) == ("Sell", None)
    old, new = Position.objects.order_by("pk")
    assert (old.status, old.close_reason) == (Position.Status.CLOSED, "SIGNAL")
    assert old.realized_pnl == -old.fees  # filled at the same price: the fees are the loss
    assert (new.side, new.status) == ("SHORT", Position.Status.PENDING)


def test_opposite_signal_waits_for_a_pending_entry(setup, bybit):
    trader, market = setup
    signals_process(signal_ids=[f.signal(market).pk])  # entry accepted, not yet reported filled
    f.advance(market)
    short = f.signal(market, type="SHORT")

    signals_process(signal_ids=[short.pk])

    assert len(bybit.creates) == 1  # no reduce-only close for a position not filled yet
    decision = short.trade_decisions.get()
    assert decision.outcome == "SKIPPED"
    assert "the LONG entry on BTCUSDT is still pending" in decision.reasons[-1]
