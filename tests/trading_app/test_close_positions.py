"""Closing a trader's positions by hand (services.positions, the admin action, the API action):
positions opened by the real engine, closed at market through the order manager, once."""

import threading
from decimal import Decimal

import pytest
import requests
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from tests.trading_app import factories as f
from trading_app.models import Balance, Order, Position, Trader
from trading_app.services.engine import signals_process
from trading_app.services.positions import positions_close
from trading_app.services.sync import positions_sync

pytestmark = pytest.mark.django_db

SLIPPAGE, FEE = Decimal("0.0005"), Decimal("0.00055")  # the paper account's defaults
EXIT_PRICES = {"BTCUSDT": 51_000.0, "ETHUSDT": 2_900.0}


def same_money(a: Decimal, b: Decimal) -> bool:
    """Equal within the 12 decimal places the money columns keep."""
    return abs(a - b) <= Decimal("1e-11")


def _paper_trader_with_two_positions() -> Trader:
    """BTC long and ETH short opened by the engine, then both markets move."""
    btc, eth = f.market("BTCUSDT"), f.market("ETHUSDT")
    f.store_candles(btc, f.calm_candles(n=120, price=50_000.0))
    f.store_candles(eth, f.calm_candles(n=120, price=3_000.0))
    trader = f.trader(f.paper_account(), [btc, eth])
    signals_process(signal_ids=[f.signal(btc, type="LONG").pk, f.signal(eth, type="SHORT").pk])
    assert Position.objects.filter(status=Position.Status.OPEN).count() == 2
    for market in (btc, eth):
        last = market.candles.latest("open_time").open_time
        moved = f.calm_candles(n=1, price=EXIT_PRICES[market.symbol], start=last + f.STEP)
        f.store_candles(market, moved)
    return trader


@pytest.fixture
def paper_trader() -> Trader:
    return _paper_trader_with_two_positions()


def _closes() -> list[Order]:
    return list(Order.objects.filter(purpose=Order.Purpose.CLOSE).order_by("pk"))


def _assert_both_closed_at_market(trader: Trader) -> None:
    closes = _closes()
    assert len(closes) == 2
    positions = {p.market.symbol: p for p in Position.objects.select_related("market")}
    total = Decimal(0)
    for order in closes:
        position = positions[order.market.symbol]
        assert order.position_id == position.pk
        assert order.signal_id is None
        prefix = trader.account.client_id_prefix
        assert order.client_order_id == f"{prefix}-{trader.pk}-p{position.pk}-c"
        assert (order.status, order.attempts) == (Order.Status.FILLED, 1)
        price = Decimal(repr(EXIT_PRICES[order.market.symbol]))
        if position.side == Position.Side.LONG:
            assert order.side == "sell"
            assert order.average_price == price * (1 - SLIPPAGE)
        else:
            assert order.side == "buy"
            assert order.average_price == price * (1 + SLIPPAGE)
        assert same_money(order.fee, order.amount * order.average_price * FEE)
        assert (position.status, position.close_reason) == ("CLOSED", "MANUAL")
        assert position.exit_price == order.average_price
        direction = 1 if position.side == Position.Side.LONG else -1
        gross = direction * (order.average_price - position.entry_price) * position.amount
        assert same_money(position.realized_pnl, gross - position.fees)
        total += position.realized_pnl
    # BTC rose 2% under the long, ETH fell 3.3% under the short: both made money.
    assert all(p.realized_pnl > 0 for p in positions.values())
    trader.refresh_from_db()
    assert trader.realized_pnl == total
    balance = Balance.objects.get(account=trader.account)
    assert same_money(balance.free, Decimal("10000") + total)
    assert balance.used == 0


def test_service_closes_every_open_paper_position_at_market_once(paper_trader):
    result = positions_close(trader=paper_trader, reason="test: flat before the weekend")

    assert result.as_dict() == {"closed": 2, "withdrawn": 0, "problems": []}
    _assert_both_closed_at_market(paper_trader)
    assert {o.status_reason for o in _closes()} == {"test: flat before the weekend"}

    again = positions_close(trader=paper_trader, reason="test: a second click")

    assert again.as_dict() == {"closed": 0, "withdrawn": 0, "problems": []}
    assert len(_closes()) == 2
    _assert_both_closed_at_market(paper_trader)


@pytest.mark.django_db(transaction=True)
def test_a_double_click_racing_itself_closes_each_position_once():
    trader = _paper_trader_with_two_positions()
    barrier = threading.Barrier(2)
    results, errors = [], []

    def click() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(positions_close(trader=trader, reason="racing click").closed)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(results) == [0, 2]
    _assert_both_closed_at_market(trader)


def test_admin_action_closes_all_positions_of_the_selected_trader(client, paper_trader):
    client.force_login(get_user_model().objects.create_superuser("ops", password="pw"))
    form = {"action": "close_positions", "_selected_action": [paper_trader.pk]}

    def act() -> list[str]:
        response = client.post("/admin/trading_app/trader/", form, follow=True)
        return [str(message) for message in response.context["messages"]]

    assert act() == [f"{paper_trader.name}: 2 position(s) closed, 0 pending entry(ies) withdrawn"]
    _assert_both_closed_at_market(paper_trader)
    assert {o.status_reason for o in _closes()} == {"closed in the admin by ops"}
    assert act() == [f"{paper_trader.name}: 0 position(s) closed, 0 pending entry(ies) withdrawn"]
    assert len(_closes()) == 2


def test_api_action_is_staff_only_and_idempotent(paper_trader):
    url = f"/api/v1/traders/{paper_trader.pk}/close-positions"
    assert APIClient().post(url).status_code == 403
    viewer = APIClient()
    viewer.force_authenticate(get_user_model().objects.create_user("viewer"))
    refused = viewer.post(url)
    assert refused.status_code == 403
    assert "staff" in refused.json()["detail"]
    assert _closes() == []

    staff = APIClient()
    staff.force_authenticate(get_user_model().objects.create_user("ops", is_staff=True))
    response = staff.post(url)

    assert response.status_code == 200
    assert response.json() == {"closed": 2, "withdrawn": 0, "problems": []}
    _assert_both_closed_at_market(paper_trader)
    assert {o.status_reason for o in _closes()} == {"closed through the API by ops"}
    assert staff.post(url).json() == {"closed": 0, "withdrawn": 0, "problems": []}
    assert len(_closes()) == 2


# ---------------------------------------------------------- a testnet account (Bybit stand-in)


def test_exchange_close_is_reduce_only_placed_once_and_settled_by_sync(setup, bybit):
    trader, market = setup
    signals_process(signal_ids=[f.signal(market).pk])
    bybit.hold(symbol="BTCUSDT", side="Buy", size="0.02")
    positions_sync()  # the entry fills
    position = Position.objects.get()
    assert position.status == Position.Status.OPEN

    result = positions_close(trader=trader, reason="test")

    assert result.as_dict() == {"closed": 1, "withdrawn": 0, "problems": []}
    close_body = bybit.creates[-1]
    assert (close_body["side"], close_body["qty"], close_body.get("reduceOnly")) == (
        "Sell", "0.02", True,
    )  # fmt: skip
    assert (
        close_body["orderLinkId"]
        == f"{trader.account.client_id_prefix}-{trader.pk}-p{position.pk}-c"
    )
    close = Order.objects.get(purpose=Order.Purpose.CLOSE)
    assert close.status == Order.Status.SUBMITTED  # Bybit's create reply has no state

    assert positions_close(trader=trader, reason="test").closed == 0  # accepted, not settled yet
    assert len(bybit.creates) == 2

    bybit.positions = []  # the exchange no longer holds it
    positions_sync()

    close.refresh_from_db()
    position.refresh_from_db()
    assert close.status == Order.Status.FILLED
    assert (position.status, position.close_reason) == ("CLOSED", "MANUAL")
    assert position.realized_pnl == -position.fees  # the stand-in fills both at one price
    assert len(bybit.creates) == 2


def test_an_entry_the_exchange_never_received_is_withdrawn_for_good(setup, bybit):
    trader, market = setup
    bybit.fail_next_create = [requests.exceptions.ConnectTimeout("no route")]
    assert signals_process(signal_ids=[f.signal(market).pk]).retry
    entry = Order.objects.get()
    assert (entry.status, entry.exchange_order_id) == (Order.Status.SUBMITTED, "")

    result = positions_close(trader=trader, reason="test: withdraw")

    assert result.as_dict() == {"closed": 0, "withdrawn": 1, "problems": []}
    entry.refresh_from_db()
    assert (entry.status, entry.status_reason) == (Order.Status.CANCELED, "test: withdraw")
    position = Position.objects.get()
    assert (position.status, position.close_reason) == ("CANCELED", "ENTRY_FAILED")
    Order.objects.filter(pk=entry.pk).update(created_at=entry.created_at.replace(year=2000))
    positions_sync()  # would re-place a stale unsettled entry; a withdrawn one stays withdrawn
    assert len(bybit.creates) == 1
    assert bybit.orders == {}


def test_a_pending_entry_that_had_filled_is_recorded_then_closed(setup, bybit):
    trader, market = setup
    signals_process(signal_ids=[f.signal(market).pk])  # accepted, the fill not yet reported
    entry = Order.objects.get()
    assert Position.objects.get().status == Position.Status.PENDING

    result = positions_close(trader=trader, reason="test")

    assert result.as_dict() == {"closed": 1, "withdrawn": 0, "problems": []}
    entry.refresh_from_db()
    assert entry.status == Order.Status.FILLED
    assert [body.get("reduceOnly") for body in bybit.creates] == [None, True]
    assert Order.objects.get(purpose=Order.Purpose.CLOSE).position_id == entry.position_id
