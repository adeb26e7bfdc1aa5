"""The trading engine against the real database: routing, the one-position rule, reversals,
idempotent redelivery and what is written back to signals."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from signals_app.models import Signal
from tests.trading_app import factories as f
from trading_app.exchanges.paper import paper_balance
from trading_app.models import Balance, Order, Position, TradeDecision, Trader
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


def test_paper_balance_moves_by_margin_and_fee(btc, account):
    f.trader(account, [btc])
    signals_process(signal_ids=[f.signal(btc).pk])
    order = Order.objects.get()
    balance = Balance.objects.get(account=account)
    notional = order.amount * order.average_price
    assert balance.used == notional
    assert balance.free == Decimal("10000") - notional - order.fee


def test_neutral_superseded_and_unaccepted_signals_are_ignored(btc, account):
    f.trader(account, [btc])
    superseded = f.signal(btc)
    f.advance(btc)  # a newer candle has closed since
    ignored = [
        superseded,
        f.signal(btc, type="NEUTRAL"),
        f.signal(btc, model="b", status=Signal.Status.REJECTED),
        f.signal(btc, model="c", status=Signal.Status.EXPIRED),
    ]
    result = signals_process(signal_ids=[s.pk for s in ignored])
    assert result.ignored == 4
    assert not TradeDecision.objects.exists()
    assert not Order.objects.exists()


def test_routed_only_to_enabled_non_halted_subscribed_traders(btc, account):
    eth = f.market("ETHUSDT")
    subscribed = f.trader(account, [btc], name="subscribed")
    f.trader(account, [btc], name="disabled", enabled=False)
    f.trader(account, [btc], name="halted", is_halted=True, halted_reason="drawdown")
    f.trader(account, [eth], name="other_market")
    signals_process(signal_ids=[f.signal(btc).pk])
    assert list(TradeDecision.objects.values_list("trader__name", flat=True)) == [subscribed.name]


def test_same_direction_keeps_the_one_position(btc, account):
    f.trader(account, [btc])
    first = f.signal(btc)
    signals_process(signal_ids=[first.pk])
    f.advance(btc)
    second = f.signal(btc)
    signals_process(signal_ids=[second.pk])
    assert Position.objects.count() == 1
    assert Order.objects.count() == 1
    decision = TradeDecision.objects.get(signal=second)
    assert decision.outcome == TradeDecision.Outcome.SKIPPED
    assert "already LONG on BTCUSDT" in decision.reasons[-1]


def test_two_signals_for_one_market_in_one_batch_open_one_position(btc, account):
    f.trader(account, [btc])
    batch = [f.signal(btc, model="a"), f.signal(btc, model="b")]  # two models, one candle
    signals_process(signal_ids=[s.pk for s in batch])
    assert Position.objects.count() == 1
    assert TradeDecision.objects.filter(outcome=TradeDecision.Outcome.SKIPPED).count() == 1


def test_opposite_signal_closes_then_opens(btc, account):
    trader = f.trader(account, [btc])
    signals_process(signal_ids=[f.signal(btc, type="LONG").pk])
    f.advance(btc)
    short = f.signal(btc, type="SHORT")

    result = signals_process(signal_ids=[short.pk])

    assert result.orders == 2
    close, entry = Order.objects.filter(signal=short).order_by("pk")
    assert (close.purpose, close.side, entry.purpose, entry.side) == (
        "CLOSE",
        "sell",
        "OPEN",
        "sell",
    )
    assert close.client_order_id.endswith(f"-s{short.pk}-c")
    old, new = Position.objects.order_by("pk")
    assert old.status == Position.Status.CLOSED
    assert old.close_reason == Position.CloseReason.SIGNAL
    # Same close price both ways: the round trip loses the slippage on each side and both fees.
    expected = (old.exit_price - old.entry_price) * old.amount - old.fees
    assert old.realized_pnl == expected < 0
    assert (new.status, new.side) == (Position.Status.OPEN, "SHORT")
    trader.refresh_from_db()
    assert trader.realized_pnl == old.realized_pnl
    balance = Balance.objects.get(account=account)
    assert balance.used == new.amount * new.entry_price
    assert balance.free + balance.used == Decimal(10000) + old.realized_pnl - new.fees
    short.refresh_from_db()
    assert (short.orders_attempted, short.orders_created) == (2, 2)


def test_redelivered_batch_changes_nothing(btc, account):
    f.trader(account, [btc])
    signal = f.signal(btc)
    signals_process(signal_ids=[signal.pk])
    before = (Order.objects.count(), Position.objects.count(), TradeDecision.objects.count())
    balance = Balance.objects.get().free

    again = signals_process(signal_ids=[signal.pk])

    assert again.decisions == 0
    assert (
        Order.objects.count(),
        Position.objects.count(),
        TradeDecision.objects.count(),
    ) == before
    assert Balance.objects.get().free == balance
    signal.refresh_from_db()
    assert (signal.orders_attempted, signal.orders_created) == (1, 1)


def test_weak_signal_vetoed_by_indicators_is_recorded_with_reasons(account):
    market = f.market("SOLUSDT")
    closes = [100.0]
    for i in range(1, 120):  # a noisy uptrend: +0.5%, -0.3%, ... (RSI ~64, short EMA above long)
        closes.append(closes[-1] * (1.005 if i % 2 else 0.997))
    uptrend = f.calm_candles(n=120, price=100.0)
    uptrend["close"] = closes
    uptrend["open"] = uptrend["close"].shift(1).fillna(100.0)
    uptrend["high"] = uptrend[["open", "close"]].max(axis=1) * 1.001
    uptrend["low"] = uptrend[["open", "close"]].min(axis=1) * 0.999
    f.store_candles(market, uptrend)
    f.trader(account, [market])
    signal = f.signal(market, type="SHORT", confidence=0.46, strength=0.21)

    signals_process(signal_ids=[signal.pk])

    decision = TradeDecision.objects.get()
    assert decision.action == TradeDecision.Action.NONE
    assert decision.outcome == TradeDecision.Outcome.SKIPPED
    assert 60 < decision.rsi < 70
    assert decision.ema_score == 1.0  # against the short ...
    assert -0.2 < decision.final_score < 0  # ... so the weak model short does not pass
    assert "below the 0.2 entry threshold for SHORT" in decision.reasons[-1]
    assert not Order.objects.exists()
    signal.refresh_from_db()
    assert signal.status == Signal.Status.ACCEPTED  # nothing attempted: left as it was


def _entries_then_reversals(account, *, n: int, prefix: str) -> list[int]:
    """An entry batch, then a reversal batch, over n markets and two traders; returns the queries
    each batch issued."""
    markets = [f.market(f"{prefix}{i}USDT") for i in range(n)]
    for i, market in enumerate(markets):
        f.store_candles(market, f.calm_candles(n=120, price=100.0 * (i + 1)))
    f.trader(account, markets, name=f"{prefix}_a", max_positions=50)
    f.trader(account, markets, name=f"{prefix}_b", max_positions=50, per_trade_percentage=1)
    counts = []
    for kind, orders_per_pair in (("LONG", 1), ("SHORT", 2)):
        if kind == "SHORT":
            for market in markets:
                f.advance(market)
        ids = [f.signal(market, type=kind).pk for market in markets]
        with CaptureQueriesContext(connection) as queries:
            result = signals_process(signal_ids=ids)
        assert result.orders == 2 * n * orders_per_pair
        counts.append(len(queries))
    return counts


def test_a_batch_issues_the_same_queries_whatever_its_size(account):
    """Reads and writes go by kind, not by row: 9 markets (36 orders when reversing) take the
    queries of 1. The COPY and unnest writes run on raw psycopg cursors, uncounted here, but they
    too are one per kind."""
    paper_balance(account, lock=False)  # created on first use: not part of every batch
    one = _entries_then_reversals(account, n=1, prefix="ONE")
    assert _entries_then_reversals(account, n=9, prefix="NINE") == one


def test_each_trader_of_a_batch_books_its_own_realized_pnl(account):
    _entries_then_reversals(account, n=3, prefix="M")
    booked = {}
    for trader in Trader.objects.all():
        closed = Position.objects.filter(trader=trader, status=Position.Status.CLOSED)
        assert closed.count() == 3
        booked[trader.name] = trader.realized_pnl
        # approx: SQLite keeps decimals as floats
        assert trader.realized_pnl == pytest.approx(sum(p.realized_pnl for p in closed), rel=1e-9)
    assert booked["M_a"] < booked["M_b"] < 0  # twice the size, twice the round-trip costs
