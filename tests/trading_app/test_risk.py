"""Every risk rule: as a plain function and as the engine applies it to a real batch."""

from decimal import Decimal

import pytest

from tests.trading_app import factories as f
from trading_app import risk
from trading_app.models import Order, Position, TradeDecision, Trader
from trading_app.services.engine import signals_process

LOT = risk.LotRules(
    amount_step=Decimal("0.001"), min_amount=Decimal("0.002"), min_notional=Decimal(5)
)


# ---------------------------------------------------------------- the rules as functions
def test_size_is_per_trade_percentage_of_equity_rounded_down_to_the_step():
    amount = risk.position_amount(
        equity=Decimal(12_345), per_trade_percentage=2, price=Decimal(100), lot=LOT
    )
    assert amount == Decimal("2.469")  # 246.90 / 100 = 2.469 exactly on the 0.001 step
    amount = risk.position_amount(
        equity=Decimal(10_000), per_trade_percentage=2, price=Decimal(30_001), lot=LOT
    )
    assert amount == Decimal("0.006")  # 0.0066664... rounded down, never up


def test_size_below_minimum_amount_or_notional_is_rejected():
    with pytest.raises(risk.Rejection, match="amount 0.001 below the market minimum 0.002"):
        risk.position_amount(
            equity=Decimal(10_000), per_trade_percentage=2, price=Decimal(150_000), lot=LOT
        )
    with pytest.raises(risk.Rejection, match="notional 4.00 below the market minimum 5"):
        risk.position_amount(
            equity=Decimal(200), per_trade_percentage=2, price=Decimal(1),
            lot=risk.LotRules(amount_step=Decimal(1), min_notional=Decimal(5)),
        )  # fmt: skip
    with pytest.raises(risk.Rejection, match="below one amount step"):
        risk.position_amount(
            equity=Decimal(100), per_trade_percentage=1, price=Decimal(50_000), lot=LOT
        )


def test_max_positions():
    risk.check_max_positions(open_positions=4, max_positions=5)
    with pytest.raises(risk.Rejection, match=r"max positions reached \(5 open, limit 5\)"):
        risk.check_max_positions(open_positions=5, max_positions=5)


def test_drawdown_from_peak():
    assert risk.drawdown_percentage(equity=Decimal(9_000), peak=Decimal(10_000)) == 10.0
    assert risk.drawdown_percentage(equity=Decimal(11_000), peak=Decimal(10_000)) == 0.0
    risk.check_drawdown(equity=Decimal(9_001), peak=Decimal(10_000), max_drawdown_percentage=10)
    with pytest.raises(risk.Rejection, match="drawdown 10.00% from peak 10000.00"):
        risk.check_drawdown(equity=Decimal(9_000), peak=Decimal(10_000), max_drawdown_percentage=10)


def test_balance_covers_margin_fee_and_slippage():
    needed = risk.check_balance(
        amount=Decimal(1), price=Decimal(100), cost_percentage=0.1, free=Decimal("100.1"),
        currency="USDT",
    )  # fmt: skip
    assert needed == Decimal("100.1")
    with pytest.raises(risk.Rejection, match="insufficient balance: need 100.10 USDT, free 100.09"):
        risk.check_balance(
            amount=Decimal(1), price=Decimal(100), cost_percentage=0.1, free=Decimal("100.09"),
            currency="USDT",
        )  # fmt: skip


def test_halted_trader_opens_nothing():
    with pytest.raises(risk.Rejection, match="trader is halted: drawdown"):
        risk.check_not_halted(is_halted=True, halted_reason="drawdown")


# ---------------------------------------------------------------- the rules in a real batch
@pytest.fixture
def markets(db):
    out = []
    for symbol, price in (("BTCUSDT", 50_000.0), ("ETHUSDT", 3_000.0), ("SOLUSDT", 150.0)):
        market = f.market(symbol)
        f.store_candles(market, f.calm_candles(n=120, price=price))
        out.append(market)
    return out


def _decision(signal) -> TradeDecision:
    return TradeDecision.objects.get(signal=signal)


@pytest.mark.django_db
def test_engine_stops_at_max_positions(markets):
    f.trader(f.paper_account(), markets, max_positions=2)
    signals = [f.signal(m) for m in markets]
    signals_process(signal_ids=[s.pk for s in signals])
    assert Position.objects.filter(status=Position.Status.OPEN).count() == 2
    last = _decision(signals[-1])
    assert last.outcome == TradeDecision.Outcome.REJECTED
    assert "max positions reached (2 open, limit 2)" in last.reasons[-1]


@pytest.mark.django_db
def test_engine_sizes_from_current_equity(markets):
    btc = markets[0]
    f.trader(f.paper_account(), [btc], realized_pnl=Decimal(5_000))  # equity 15,000
    signals_process(signal_ids=[f.signal(btc).pk])
    assert Order.objects.get().amount == Decimal("0.006")  # 2% of 15,000 / 50,000


@pytest.mark.django_db
def test_engine_rejects_below_market_minimum(markets):
    btc = markets[0]
    btc.min_amount = Decimal("0.01")
    btc.save()
    f.trader(f.paper_account(), [btc])
    signal = f.signal(btc)
    signals_process(signal_ids=[signal.pk])
    assert not Order.objects.exists()
    assert "amount 0.004 below the market minimum 0.01" in _decision(signal).reasons[-1]


@pytest.mark.django_db
def test_engine_rejects_on_insufficient_balance(markets):
    btc = markets[0]
    f.trader(f.paper_account(paper_initial_balance=Decimal(150)), [btc])
    signal = f.signal(btc)
    signals_process(signal_ids=[signal.pk])
    decision = _decision(signal)
    assert decision.outcome == TradeDecision.Outcome.REJECTED
    assert "insufficient balance: need 200.21 USDT, free 150.00" in decision.reasons[-1]
    assert not Position.objects.exists()


@pytest.mark.django_db
def test_engine_halts_a_trader_in_drawdown(markets):
    btc, eth = markets[:2]
    trader = f.trader(f.paper_account(), [btc, eth], peak_equity=Decimal(12_000))  # 16.7% down
    first, second = f.signal(btc), f.signal(eth)
    signals_process(signal_ids=[first.pk, second.pk])
    trader.refresh_from_db()
    assert trader.is_halted
    assert "drawdown 16.67% from peak 12000.00 reached the 10.0% limit" in trader.halted_reason
    assert not Order.objects.exists()
    assert {d.outcome for d in TradeDecision.objects.all()} == {TradeDecision.Outcome.REJECTED}
    # Halted: the next batch is not routed to it at all.
    f.advance(btc)
    signals_process(signal_ids=[f.signal(btc).pk])
    assert TradeDecision.objects.count() == 2


@pytest.mark.django_db
def test_database_allows_one_active_position_per_trader_and_market(markets):
    from django.db import IntegrityError, transaction

    btc = markets[0]
    trader = f.trader(f.paper_account(), [btc])
    row = dict(trader=trader, market=btc, side="LONG", amount=1, entry_price=1, opened_at=f.T0)
    Position.objects.create(status=Position.Status.CLOSED, **row)
    Position.objects.create(status=Position.Status.OPEN, **row)
    with pytest.raises(IntegrityError), transaction.atomic():
        Position.objects.create(status=Position.Status.PENDING, **row)
    assert Trader.objects.count() == 1
