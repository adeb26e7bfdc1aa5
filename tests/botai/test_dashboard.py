"""The dashboard page and its server-side SVG charts."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from botai import charts
from signals_app.models import CycleRun, Market, ModelVersion, Prediction, Signal
from trading_app.models import EquitySnapshot, ExchangeAccount, Order, Position, Trader


def test_charts_escape_labels_and_draw_every_value():
    svg = charts.horizontal_bars(
        label="<script>x</script>", bars=[("sync", 0.5), ("inference", 2.0)], unit="s"
    )
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    widths = [float(w) for w in re.findall(r'<rect x="110" y="[\d.]+" width="([\d.]+)"', svg)]
    assert widths == pytest.approx([300 * 0.5 / 2.0, 300.0])  # longest bar = full plot width
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    line = charts.line(
        label="equity", points=[(t0, 100.0), (t0 + timedelta(hours=1), 90.0)], unit="USDT"
    )
    assert 'points="64.0,10.0 472.0,140.0"' in line  # first = highest, last = lowest
    assert "not enough points" in charts.line(label="e", points=[(t0, 1.0)], unit="")
    columns = charts.stacked_columns(
        label="signals", columns=[("00h", {"LONG": 2, "SHORT": 1}), ("01h", {})],
        series={"LONG": "#0a0", "SHORT": "#a00"},
    )  # fmt: skip
    assert columns.count("<rect") == 2 + 2  # two legend swatches, two stacked segments
    assert "00h LONG: 2" in columns


@pytest.fixture
def history():
    now = timezone.now()
    market = Market.objects.create(exchange="bybit", symbol="BTCUSDT", ccxt_symbol="BTC/USDT")
    version = ModelVersion.objects.create(name="v", checkpoint_path="v.pt", fingerprint="v")
    for minutes, type_ in ((10, "LONG"), (70, "SHORT"), (75, "SHORT")):
        prediction = Prediction.objects.create(
            market=market, candle_time=now - timedelta(minutes=minutes), model_version=version,
            close=100, returns={}, probabilities={}, risk={}, direction=type_, confidence=0.6,
            strength=0.4, latency_ms=20,
        )  # fmt: skip
        Signal.objects.create(
            market=market, prediction=prediction, candle_time=prediction.candle_time,
            model_version=version, type=type_, confidence=0.6, strength=0.4,
            entry_price=Decimal(100), expires_at=now, orders_attempted=2, orders_created=1,
        )  # fmt: skip
    CycleRun.objects.create(
        started_at=now - timedelta(seconds=50), finished_at=now - timedelta(seconds=46),
        status="OK", markets=9, predictions=9, stage_seconds={"sync": 1.0, "inference": 2.5},
    )  # fmt: skip
    account = ExchangeAccount.objects.create(name="paper-bybit")
    trader = Trader.objects.create(name="multi_crypto_10", account=account)
    for minutes in range(0, 120, 10):
        EquitySnapshot.objects.create(
            trader=trader, time=now - timedelta(minutes=minutes), equity=10000 + minutes,
            realized_pnl=0, unrealized_pnl=0, open_positions=1, peak_equity=10120,
            drawdown_percentage=minutes / 100,
        )  # fmt: skip
    position = Position.objects.create(
        trader=trader, market=market, side="LONG", status="OPEN", amount=Decimal("0.01"),
        entry_price=Decimal(100), opened_at=now,
    )  # fmt: skip
    Order.objects.create(
        client_order_id="c1", trader=trader, market=market, position=position, purpose="OPEN",
        side="buy", amount=Decimal("0.01"), status="FILLED",
    )  # fmt: skip
    return trader


@pytest.mark.django_db
def test_dashboard_shows_cycle_signals_equity_positions_and_orders(client, history):
    staff = get_user_model().objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(staff)
    page = client.get("/admin/dashboard/").content.decode()
    assert 'aria-label="last cycle stages"' in page
    assert "took 4.0 s" in page
    assert 'aria-label="signals per hour by type"' in page
    assert page.count("<title>") >= 3
    assert 'aria-label="equity multi_crypto_10"' in page
    assert "<polyline" in page
    assert "/admin/trading_app/position/" in page  # the open position, linked
    assert "50 %" in page  # 3 of 6 orders created
    assert "FILLED" in page
    # Nothing is fetched from another host: no CDN, no remote script or stylesheet.
    assert not re.search(r'(src|href)="(https?:)?//', page)
    index = client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in index


@pytest.mark.django_db
def test_dashboard_is_for_staff_only(client):
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
