"""The admin for traders and risk: validation, actions, secrets never shown, and the links
signal -> its orders -> its position. Also the single ML configuration row and the beat schedule."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from signals_app.models import MLConfig
from tests.trading_app import factories
from trading_app.models import ExchangeAccount, Order, Position, Trader

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("ops", password="pw"))
    return client


@pytest.fixture
def trader() -> Trader:
    return factories.trader(factories.paper_account(), [factories.market()])


def _change_form(trader: Trader, **changes) -> dict:
    form = {
        field: getattr(trader, field)
        for field in (
            "name", "type", "strategy", "signal_interval_seconds", "rsi_period", "rsi_oversold",
            "rsi_overbought", "ema_short", "ema_long", "initial_capital", "per_trade_percentage",
            "max_positions", "stop_loss_percentage", "take_profit_percentage",
            "max_drawdown_percentage", "halted_reason",
        )
    }  # fmt: skip
    form |= {
        "enabled": "on",
        "account": trader.account_id,
        "markets": [m.pk for m in trader.markets.all()],
    }
    return form | changes


def test_trader_form_has_the_three_sections_and_validates_risk(admin_client, trader):
    url = f"/admin/trading_app/trader/{trader.pk}/change/"
    page = admin_client.get(url).content.decode()
    for section in ("Strategy and indicators", "Capital", "Risk management"):
        assert f">{section}</h2>" in page
    response = admin_client.post(url, _change_form(trader, stop_loss_percentage=6))
    assert response.status_code == 200  # the form again, with the rule's message
    assert "take profit must be above the stop loss (6%)" in response.content.decode()
    response = admin_client.post(url, _change_form(trader, stop_loss_percentage=3))
    assert response.status_code == 302
    trader.refresh_from_db()
    assert trader.stop_loss_percentage == 3


def test_trader_actions_enable_disable_resume(admin_client, trader):
    url = "/admin/trading_app/trader/"

    def act(action: str):
        return admin_client.post(url, {"action": action, "_selected_action": [trader.pk]})

    act("disable")
    trader.refresh_from_db()
    assert trader.enabled is False
    act("enable")
    trader.refresh_from_db()
    assert trader.enabled is True
    Trader.objects.filter(pk=trader.pk).update(
        is_halted=True, halted_reason="drawdown 12% >= 10%", halted_at=datetime.now(UTC)
    )
    act("resume")
    trader.refresh_from_db()
    assert (trader.is_halted, trader.halted_reason, trader.halted_at) == (False, "", None)


def test_exchange_account_never_shows_a_secret(admin_client):
    account = ExchangeAccount(name="bybit-live", exchange="bybit", mode="LIVE")
    account.set_credentials(api_key="KEY-1234567", secret="SECRET-7654321")
    account.save()
    for url in (
        f"/admin/trading_app/exchangeaccount/{account.pk}/change/",
        "/admin/trading_app/exchangeaccount/",
    ):
        page = admin_client.get(url).content.decode()
        assert "KEY-1234567" not in page
        assert "SECRET-7654321" not in page
        assert account.secret_encrypted not in page
        assert account.api_key_encrypted not in page
    assert (
        "stored encrypted"
        in admin_client.get("/admin/trading_app/exchangeaccount/").content.decode()
    )


def test_signal_links_to_its_orders_and_they_to_the_position(admin_client, trader):
    signal = factories.signal(trader.markets.get())
    signal.orders_attempted = signal.orders_created = 1
    signal.save()
    position = Position.objects.create(
        trader=trader, market=signal.market, signal=signal, side="LONG", status="OPEN",
        amount=Decimal("0.1"), entry_price=signal.entry_price, opened_at=signal.candle_time,
    )  # fmt: skip
    order = Order.objects.create(
        client_order_id="o-1", trader=trader, market=signal.market, signal=signal,
        position=position, purpose="OPEN", side="buy", amount=Decimal("0.1"), status="FILLED",
    )  # fmt: skip
    Order.objects.create(
        client_order_id="o-other", trader=trader, market=signal.market, purpose="OPEN",
        side="buy", amount=Decimal("0.1"), status="REJECTED",
    )  # fmt: skip

    signal_page = admin_client.get(f"/admin/signals_app/signal/{signal.pk}/change/").content
    orders_url = f"/admin/trading_app/order/?signal__id__exact={signal.pk}"
    assert f'href="{orders_url}"' in signal_page.decode()
    orders_page = admin_client.get(orders_url).content.decode()
    assert "o-1" in orders_page
    assert "o-other" not in orders_page
    position_url = f"/admin/trading_app/position/{position.pk}/change/"
    assert f'href="{position_url}"' in orders_page
    position_page = admin_client.get(position_url).content.decode()
    assert f'href="/admin/signals_app/signal/{signal.pk}/change/"' in position_page
    assert f'href="/admin/trading_app/order/?position__id__exact={position.pk}"' in position_page
    assert admin_client.get(f"/admin/trading_app/order/{order.pk}/change/").status_code == 200


@pytest.mark.parametrize(
    ("url", "search", "found"),
    [
        ("/admin/signals_app/signal/", "BTCUSDT", True),
        ("/admin/signals_app/signal/", "ETHUSDT", False),
        ("/admin/signals_app/prediction/", "BTCUSDT", True),
        ("/admin/trading_app/position/", "multi_crypto_10", True),
        ("/admin/trading_app/order/", "BTCUSDT", True),
    ],
)
def test_read_only_lists_search(admin_client, trader, url, search, found):
    signal = factories.signal(trader.markets.get())
    position = Position.objects.create(
        trader=trader, market=signal.market, side="LONG", status="OPEN", amount=Decimal(1),
        entry_price=Decimal(1), opened_at=signal.candle_time,
    )  # fmt: skip
    Order.objects.create(
        client_order_id="o-1", trader=trader, market=signal.market, position=position,
        purpose="OPEN", side="buy", amount=Decimal(1),
    )  # fmt: skip
    changelist = admin_client.get(url, {"q": search}).context["cl"]
    assert changelist.result_count == (1 if found else 0)
    assert admin_client.get(f"{url}add/").status_code == 403


def test_ml_config_is_one_editable_row(admin_client):
    response = admin_client.get("/admin/signals_app/mlconfig/")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/signals_app/mlconfig/{MLConfig.SINGLETON_PK}/change/"
    page = admin_client.get(response["Location"]).content.decode()
    assert 'name="min_confidence"' in page
    assert MLConfig.objects.count() == 1


def test_beat_schedule_is_in_the_admin(admin_client):
    page = admin_client.get("/admin/django_celery_beat/periodictask/").content.decode()
    assert "signal-cycle" in page
    assert "position-sync" in page
