"""Money columns keep every one of their 28 digits and compare as numbers, on the database this
run uses (SQLite stores them as text, PostgreSQL as numeric)."""

from decimal import Decimal

import pytest
from django.db import connection

from botai.money import MoneyAdd, MoneySum
from tests.trading_app import factories as f
from trading_app.models import Balance, Trader

pytestmark = pytest.mark.django_db

# 17 and 28 significant digits: a float (SQLite's REAL) keeps about 15.
BALANCE = Decimal("10009.829313258288")
WIDEST = Decimal("1234567890123456.123456789012")


def _balances(*amounts: Decimal, account=None) -> list[Balance]:
    account = account or f.paper_account()
    return [
        Balance.objects.create(account=account, asset=f"A{i}", free=amount)
        for i, amount in enumerate(amounts)
    ]


def test_stored_amounts_come_back_exactly():
    ids = [b.pk for b in _balances(BALANCE, WIDEST, -WIDEST, Decimal("0.000000000001"))]
    stored = [Balance.objects.get(pk=pk).free for pk in ids]
    assert stored == [BALANCE, WIDEST, -WIDEST, Decimal("0.000000000001")]


def test_amounts_are_rounded_to_twelve_places_half_away_from_zero_as_postgresql_does():
    (balance,) = _balances(Decimal("1.0000000000005"))
    Balance.objects.filter(pk=balance.pk).update(used=Decimal("-2.0000000000005"))
    balance.refresh_from_db()
    assert (balance.free, balance.used) == (Decimal("1.000000000001"), Decimal("-2.000000000001"))


def test_comparisons_and_ordering_are_numeric():
    _balances(Decimal("9.5"), Decimal("10"), Decimal("-5"), Decimal("100.25"))
    by_amount = list(Balance.objects.order_by("free").values_list("free", flat=True))
    assert by_amount == [Decimal("-5"), Decimal("9.5"), Decimal("10"), Decimal("100.25")]
    assert Balance.objects.filter(free__gt=Decimal("9.75")).count() == 2
    assert Balance.objects.filter(free=Decimal("10.000")).count() == 1


def test_money_add_and_money_sum_are_exact():
    account = f.paper_account()
    trader = f.trader(account, [f.market()], realized_pnl=BALANCE)
    Trader.objects.filter(pk=trader.pk).update(
        realized_pnl=MoneyAdd("realized_pnl", Decimal("0.000000000013"))
    )
    trader.refresh_from_db()
    assert trader.realized_pnl == Decimal("10009.829313258301")
    _balances(WIDEST, BALANCE, Decimal("-0.000000000001"), account=account)
    total = Balance.objects.aggregate(total=MoneySum("free"))["total"]
    assert total == WIDEST + BALANCE - Decimal("0.000000000001")
    assert Balance.objects.filter(free__gt=WIDEST).aggregate(t=MoneySum("free"))["t"] is None


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's storage of money")
def test_sqlite_keeps_money_as_exact_text():
    (balance,) = _balances(BALANCE)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT free, typeof(free) FROM trading_app_balance WHERE id = %s", [balance.pk]
        )
        assert cursor.fetchone() == ("10009.829313258288", "text")
