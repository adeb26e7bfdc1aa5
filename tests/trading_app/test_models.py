"""Model rules: encrypted credentials that never leak, trader validation with clear messages,
and the uniqueness the engine's idempotency rests on."""

import logging

import pytest
from cryptography.fernet import Fernet
from django.core import serializers
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from tests.trading_app import factories as f
from trading_app.credentials import CredentialsError
from trading_app.models import ExchangeAccount, Order

pytestmark = pytest.mark.django_db

KEY, SECRET = "live-api-key-7f3a", "live-secret-91c2e"


@pytest.fixture
def live_account():
    account = ExchangeAccount(name="bybit-live", exchange="bybit", mode=ExchangeAccount.Mode.LIVE)
    account.set_credentials(api_key=KEY, secret=SECRET)
    account.full_clean()
    account.save()
    return account


def test_credentials_are_encrypted_at_rest(live_account):
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM trading_app_exchangeaccount WHERE id = %s", [live_account.pk])
        row = " ".join(map(str, cursor.fetchone()))
    assert KEY not in row
    assert SECRET not in row
    fresh = ExchangeAccount.objects.get(pk=live_account.pk)
    assert fresh.credentials() == {"api_key": KEY, "secret": SECRET, "password": ""}


def test_credentials_never_in_repr_str_or_serialised_output(live_account, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("trading_app").info("account %s %r", live_account, live_account)
    dumped = serializers.serialize("json", [live_account])
    for text in (str(live_account), repr(live_account), caplog.text, dumped):
        assert KEY not in text
        assert SECRET not in text


def test_another_key_cannot_read_them(live_account, settings):
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    with pytest.raises(CredentialsError, match="enter them again"):
        ExchangeAccount.objects.get(pk=live_account.pk).credentials()


def test_credentials_from_environment_variable_names(monkeypatch):
    account = ExchangeAccount.objects.create(
        name="env", mode=ExchangeAccount.Mode.TESTNET, api_key_env="BYBIT_KEY",
        secret_env="BYBIT_SECRET",
    )  # fmt: skip
    monkeypatch.setenv("BYBIT_KEY", "k")
    with pytest.raises(CredentialsError, match="BYBIT_SECRET is not set"):
        account.credentials()
    monkeypatch.setenv("BYBIT_SECRET", "s")
    assert account.credentials() == {"api_key": "k", "secret": "s", "password": ""}


def test_live_account_without_credentials_is_invalid():
    account = ExchangeAccount(name="bare", mode=ExchangeAccount.Mode.LIVE)
    with pytest.raises(ValidationError, match="needs API credentials"):
        account.full_clean()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"take_profit_percentage": 1.5}, "take_profit_percentage",
         "take profit must be above the stop loss (2%) (got 1.5)"),
        ({"stop_loss_percentage": 0}, "stop_loss_percentage",
         "stop loss percentage must be in (0, 100) (got 0)"),
        ({"per_trade_percentage": 150}, "per_trade_percentage",
         "per-trade percentage must be in (0, 100] (got 150)"),
        ({"max_drawdown_percentage": 0}, "max_drawdown_percentage",
         "max drawdown percentage must be in (0, 100)"),
        ({"rsi_oversold": 75}, "rsi_overbought", "RSI overbought must be above oversold (75)"),
        ({"rsi_period": 1}, "rsi_period", "RSI period must be at least 2"),
        ({"ema_short": 30}, "ema_long", "EMA long period must be longer than the short one (30)"),
        ({"max_positions": 0}, "max_positions", "max positions must be at least 1"),
        ({"initial_capital": 0}, "initial_capital", "initial capital must be positive"),
    ],
)  # fmt: skip
def test_trader_validation_names_the_field(changes, field, message):
    trader = f.trader(f.paper_account(), [])
    for name, value in changes.items():
        setattr(trader, name, value)
    with pytest.raises(ValidationError) as caught:
        trader.full_clean()
    assert any(message in text for text in caught.value.message_dict[field])


def test_client_order_id_is_unique():
    market = f.market()
    trader = f.trader(f.paper_account(), [market])
    row = dict(trader=trader, market=market, purpose="OPEN", side="buy", amount=1)
    Order.objects.create(client_order_id="same", **row)
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.create(client_order_id="same", **row)
