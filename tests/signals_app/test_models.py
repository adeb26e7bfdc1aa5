"""The database constraints the cycle's idempotency and the single config row rely on."""

from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, transaction

from signals_app.models import Candle, Market, MLConfig, ModelVersion

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _market() -> Market:
    return Market.objects.create(exchange="bybit", symbol="BTCUSDT", ccxt_symbol="BTC/USDT")


def test_candle_unique_per_market_and_time():
    market = _market()
    row = dict(market=market, open_time=T0, open=1, high=2, low=0.5, close=1.5, volume=3)
    Candle.objects.create(**row)
    with pytest.raises(IntegrityError), transaction.atomic():
        Candle.objects.create(**row)


def test_market_unique_per_exchange_and_symbol():
    _market()
    with pytest.raises(IntegrityError), transaction.atomic():
        _market()
    Market.objects.create(exchange="binance", symbol="BTCUSDT", ccxt_symbol="BTC/USDT")


def test_mlconfig_is_one_row():
    first = MLConfig.load()
    second = MLConfig(batch_size=3)
    second.save()
    assert MLConfig.objects.count() == 1
    assert first.pk == second.pk == MLConfig.SINGLETON_PK
    assert MLConfig.load().batch_size == 3


def test_one_active_model_version():
    ModelVersion.objects.create(name="a", checkpoint_path="a.pt", fingerprint="a", active=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(name="b", checkpoint_path="b.pt", fingerprint="b", active=True)


def test_one_prediction_and_one_signal_per_market_candle_and_model():
    from decimal import Decimal

    from signals_app.models import Prediction, Signal

    market = _market()
    version = ModelVersion.objects.create(name="a", checkpoint_path="a.pt", fingerprint="a")
    row = dict(
        market=market, candle_time=T0, model_version=version, close=1.0, returns={},
        probabilities={}, risk={}, direction="LONG", confidence=0.5, strength=0.5, latency_ms=1,
    )  # fmt: skip
    prediction = Prediction.objects.create(**row)
    with pytest.raises(IntegrityError), transaction.atomic():
        Prediction.objects.create(**row)
    other = Prediction.objects.create(**{**row, "model_version": ModelVersion.objects.create(
        name="b", checkpoint_path="b.pt", fingerprint="b")})  # fmt: skip
    signal = dict(
        market=market, candle_time=T0, model_version=version, type=Signal.Type.LONG,
        confidence=0.5, strength=0.5, entry_price=Decimal(1), expires_at=T0,
    )  # fmt: skip
    Signal.objects.create(prediction=prediction, **signal)
    with pytest.raises(IntegrityError), transaction.atomic():
        Signal.objects.create(prediction=other, **signal)  # same market, candle and model
