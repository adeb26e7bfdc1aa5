"""The trading API against real PostgreSQL: traders CRUD with the admin's validation, orders and
positions read-only and filterable, staff-only writes."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from signals_app.models import Market, ModelVersion, Prediction, Signal
from trading_app.models import ExchangeAccount, Order, Position, Trader

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def staff_client() -> APIClient:
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("ops", is_staff=True))
    return client


@pytest.fixture
def markets() -> dict[str, Market]:
    return {
        symbol: Market.objects.create(exchange="bybit", symbol=symbol, ccxt_symbol=symbol)
        for symbol in ("BTCUSDT", "ETHUSDT")
    }


@pytest.fixture
def account() -> ExchangeAccount:
    return ExchangeAccount.objects.create(name="paper-bybit", exchange="bybit")


def trader_body(**overrides) -> dict:
    return {
        "name": "multi_crypto_10", "account": "paper-bybit", "symbols": ["BTCUSDT", "ETHUSDT"],
        "stop_loss_percentage": 2, "take_profit_percentage": 5, "max_drawdown_percentage": 10,
        **overrides,
    }  # fmt: skip


# ---------------------------------------------------------------- traders


def test_staff_creates_reads_updates_a_trader(staff_client, markets, account):
    created = staff_client.post("/api/v1/traders", trader_body(), format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert body["account"] == "paper-bybit"
    assert body["rsi_period"] == 14  # the traders.yaml defaults
    trader = Trader.objects.get(name="multi_crypto_10")
    assert set(trader.markets.values_list("symbol", flat=True)) == {"BTCUSDT", "ETHUSDT"}

    url = f"/api/v1/traders/{trader.pk}"
    patched = staff_client.patch(
        url, {"stop_loss_percentage": 3, "symbols": ["ETHUSDT"]}, format="json"
    )
    assert patched.status_code == 200, patched.json()
    trader.refresh_from_db()
    assert trader.stop_loss_percentage == 3
    assert list(trader.markets.values_list("symbol", flat=True)) == ["ETHUSDT"]
    listed = APIClient().get("/api/v1/traders", {"symbol": "ETHUSDT"}).json()["results"]
    assert [t["name"] for t in listed] == ["multi_crypto_10"]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"stop_loss_percentage": 6},
            "take_profit_percentage",
            "take profit must be above the stop loss (6%) (got 5)",
        ),
        ({"rsi_oversold": 80}, "rsi_overbought", "RSI overbought must be above oversold"),
        ({"ema_short": 30}, "ema_long", "EMA long period must be longer than the short one"),
        ({"max_drawdown_percentage": 100}, "max_drawdown_percentage", "must be in (0, 100)"),
        ({"per_trade_percentage": 0}, "per_trade_percentage", "must be in (0, 100]"),
        ({"initial_capital": "-5"}, "initial_capital", "initial capital must be positive"),
        ({"name": "has spaces"}, "name", "letters, numbers, underscores or hyphens"),
        ({"symbols": ["BTCUSDT", "NOPEUSDT"]}, "symbols", "no bybit market for NOPEUSDT"),
        ({"symbols": []}, "symbols", "may not be empty"),
        ({"account": "missing"}, "account", "does not exist"),
        ({"account": "paper\x00"}, "account", "does not exist"),  # never reaches PostgreSQL
    ],
)
def test_invalid_trader_is_400_naming_field_and_rule(
    staff_client, markets, account, overrides, field, message
):
    response = staff_client.post("/api/v1/traders", trader_body(**overrides), format="json")
    assert response.status_code == 400
    errors = response.json()
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert not Trader.objects.exists()


def test_update_is_validated_against_the_stored_values(staff_client, markets, account):
    staff_client.post("/api/v1/traders", trader_body(), format="json")
    trader = Trader.objects.get()
    response = staff_client.patch(
        f"/api/v1/traders/{trader.pk}", {"take_profit_percentage": 1}, format="json"
    )
    assert response.status_code == 400
    assert "take profit must be above the stop loss" in response.json()["take_profit_percentage"][0]
    trader.refresh_from_db()
    assert trader.take_profit_percentage == 5


def test_duplicate_trader_name_is_400(staff_client, markets, account):
    staff_client.post("/api/v1/traders", trader_body(), format="json")
    response = staff_client.post("/api/v1/traders", trader_body(), format="json")
    assert response.status_code == 400
    assert response.json()["name"] == ["trader with this name already exists."]


def test_writes_need_a_staff_user(markets, account):
    anonymous = APIClient().post("/api/v1/traders", trader_body(), format="json")
    assert anonymous.status_code == 403
    assert anonymous.json()["detail"] == "Authentication credentials were not provided."
    user = APIClient()
    user.force_authenticate(get_user_model().objects.create_user("viewer"))
    response = user.post("/api/v1/traders", trader_body(), format="json")
    assert response.status_code == 403
    assert "staff" in response.json()["detail"]
    token = APIClient()
    staff = get_user_model().objects.create_user("ops", is_staff=True)
    token.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    assert token.post("/api/v1/traders", trader_body(), format="json").status_code == 201


def test_a_trader_with_history_is_not_deleted(staff_client, markets, account):
    trader, _, _ = _history(markets, account)
    response = staff_client.delete(f"/api/v1/traders/{trader.pk}")
    assert response.status_code == 409
    assert "disable it instead" in response.json()["detail"]
    fresh = Trader.objects.create(name="fresh", account=account)
    assert staff_client.delete(f"/api/v1/traders/{fresh.pk}").status_code == 204
    missing = staff_client.get(f"/api/v1/traders/{fresh.pk}")
    assert missing.status_code == 404
    assert missing.json()["detail"]


# ---------------------------------------------------------------- orders and positions


def _history(markets, account):
    trader = Trader.objects.create(name="t1", account=account)
    trader.markets.set(markets.values())
    version = ModelVersion.objects.create(name="v", checkpoint_path="v.pt", fingerprint="v")
    prediction = Prediction.objects.create(
        market=markets["BTCUSDT"], candle_time=T0, model_version=version, close=100,
        returns={}, probabilities={}, risk={}, direction="LONG", confidence=0.6, strength=0.4,
        latency_ms=1,
    )  # fmt: skip
    signal = Signal.objects.create(
        market=markets["BTCUSDT"], prediction=prediction, candle_time=T0, model_version=version,
        type="LONG", confidence=0.6, strength=0.4, entry_price=Decimal(100),
        expires_at=T0 + timedelta(minutes=30),
    )  # fmt: skip
    position = Position.objects.create(
        trader=trader, market=markets["BTCUSDT"], signal=signal, side="LONG", status="OPEN",
        amount=Decimal("0.1"), entry_price=Decimal(100), opened_at=T0,
    )  # fmt: skip
    closed = Position.objects.create(
        trader=trader, market=markets["ETHUSDT"], side="SHORT", status="CLOSED",
        amount=Decimal("1"), entry_price=Decimal(10), opened_at=T0 - timedelta(hours=1),
        closed_at=T0, close_reason="STOP_LOSS",
    )  # fmt: skip
    orders = [
        Order.objects.create(
            client_order_id=f"c{i}",
            trader=trader,
            market=position.market,
            signal=signal,
            position=position,
            purpose="OPEN",
            side="buy",
            amount=Decimal("0.1"),
            status=status,
        )  # fmt: skip
        for i, status in enumerate(["FILLED", "REJECTED"])
    ]
    return trader, [position, closed], orders


def test_a_signals_orders_and_their_position(markets, account):
    trader, (position, closed), orders = _history(markets, account)
    client = APIClient()
    listed = client.get("/api/v1/orders", {"signal": position.signal_id}).json()["results"]
    assert [o["id"] for o in listed] == [orders[1].pk, orders[0].pk]  # newest first
    assert {o["position"] for o in listed} == {position.pk}
    assert listed[0]["trader_name"] == "t1"
    filled = client.get("/api/v1/orders", {"status": "FILLED"}).json()["results"]
    assert [o["client_order_id"] for o in filled] == ["c0"]
    detail = client.get(f"/api/v1/positions/{position.pk}").json()
    assert detail["signal"] == position.signal_id
    assert detail["symbol"] == "BTCUSDT"
    open_ = client.get("/api/v1/positions", {"status": "OPEN"}).json()["results"]
    assert [p["id"] for p in open_] == [position.pk]
    by_trader = client.get("/api/v1/positions", {"trader_name": "t1"}).json()["results"]
    assert [p["id"] for p in by_trader] == [position.pk, closed.pk]
    assert client.get("/api/v1/orders", {"status": "LOST"}).status_code == 400


def test_orders_and_positions_are_read_only(staff_client):
    for url in ("/api/v1/orders", "/api/v1/positions"):
        response = staff_client.post(url, {}, format="json")
        assert response.status_code == 405
        assert response.json()["detail"] == 'Method "POST" not allowed.'
