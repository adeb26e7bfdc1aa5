"""The ML signal processor: thresholds from MLConfig (scaled by risk tolerance) really decide,
stops come from the predicted risk, old signals expire."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from signals_app.models import Market, MLConfig, ModelVersion, Prediction, Signal
from signals_app.services.signals import (
    signal_build,
    signals_expire_stale,
    signals_from_predictions,
    signals_supersede,
)

pytestmark = pytest.mark.django_db
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def market():
    return Market.objects.create(exchange="bybit", symbol="BTCUSDT", ccxt_symbol="BTC/USDT")


@pytest.fixture
def version():
    return ModelVersion.objects.create(name="v", checkpoint_path="x.pt", fingerprint="f")


def _prediction(market, version, *, p, expected=0.004, strength=0.5, at=T0, save=True):
    """p = (down, flat, up) at the 1 h horizon."""
    prediction = Prediction(
        market=market, candle_time=at, model_version=version, close=100_000.0,
        returns={"1": 0.0, "4": expected, "16": 0.0, "48": 0.0},
        probabilities={h: [1 / 3] * 3 for h in ("1", "16", "48")} | {"4": list(p)},
        risk={"max_drawdown_1h": 0.003, "max_rally_1h": 0.004,
              "max_drawdown_4h": 0.006, "max_rally_4h": 0.01},
        direction=("SHORT", "NEUTRAL", "LONG")[max(range(3), key=lambda i: p[i])],
        confidence=max(p), strength=strength, latency_ms=5.0,
    )  # fmt: skip
    if save:
        prediction.save()
    return prediction


def _config(**fields) -> MLConfig:
    config = MLConfig.load()
    for name, value in fields.items():
        setattr(config, name, value)
    return config


@pytest.mark.parametrize(
    ("tolerance", "p_up", "strength", "status", "reason"),
    [
        ("MEDIUM", 0.50, 0.5, "ACCEPTED", ""),
        ("MEDIUM", 0.44, 0.5, "REJECTED", "confidence 0.440 < 0.450 (MEDIUM)"),
        ("MEDIUM", 0.50, 0.19, "REJECTED", "strength 0.190 < 0.200 (MEDIUM)"),
        ("LOW", 0.50, 0.5, "REJECTED", "confidence 0.500 < 0.540 (LOW)"),  # 0.45 * 1.2
        ("LOW", 0.55, 0.23, "REJECTED", "strength 0.230 < 0.240 (LOW)"),
        ("HIGH", 0.37, 0.17, "ACCEPTED", ""),  # 0.36 and 0.16 suffice
        ("HIGH", 0.35, 0.5, "REJECTED", "confidence 0.350 < 0.360 (HIGH)"),
    ],
)
def test_thresholds_scaled_by_risk_tolerance_decide(
    market, version, tolerance, p_up, strength, status, reason
):
    p = ((1 - p_up) / 2, (1 - p_up) / 2, p_up)
    prediction = _prediction(market, version, p=p, strength=strength, save=False)
    signal = signal_build(prediction, config=_config(risk_tolerance=tolerance), timeframe="15m")
    assert signal.type == Signal.Type.LONG
    assert (signal.status, signal.rejection_reason) == (status, reason)
    assert signal.confidence == pytest.approx(p_up)


def test_a_return_head_disagreeing_with_the_call_has_no_strength(market, version):
    prediction = _prediction(market, version, p=(0.1, 0.2, 0.7), expected=-0.002, save=False)
    signal = signal_build(prediction, config=_config(), timeframe="15m")
    assert (signal.strength, signal.status) == (0.0, "REJECTED")


def test_neutral_is_recorded_and_never_traded(market, version):
    prediction = _prediction(market, version, p=(0.2, 0.6, 0.2), save=False)
    signal = signal_build(prediction, config=_config(min_confidence=0, min_signal_strength=0),
                          timeframe="15m")  # fmt: skip
    assert (signal.type, signal.status, signal.stop_loss) == ("NEUTRAL", "REJECTED", None)


def test_stops_come_from_the_predicted_risk(market, version):
    config = _config(risk_tolerance="MEDIUM")
    long = signal_build(_prediction(market, version, p=(0.1, 0.2, 0.7), save=False),
                        config=config, timeframe="15m")  # fmt: skip
    # SL beyond the 4 h drawdown (0.6 % * 1.25), TP at the 4 h rally (1 %)
    assert long.stop_loss == Decimal("99250.000000000000")
    assert long.take_profit == Decimal("101000.000000000000")
    short = signal_build(
        _prediction(market, version, p=(0.7, 0.2, 0.1), expected=-0.004, save=False),
        config=config, timeframe="15m",
    )  # fmt: skip
    assert short.stop_loss == Decimal("101250.000000000000")  # above: the rally is adverse
    assert short.take_profit == Decimal("99400.000000000000")
    assert long.expires_at == T0 + timedelta(minutes=30)


def test_one_signal_per_prediction_and_older_ones_expire(market, version):
    config = _config()
    first = _prediction(market, version, p=(0.1, 0.2, 0.7))
    [signal] = signals_from_predictions(predictions=[first], config=config,
                                        markets={market.pk: market})  # fmt: skip
    again = signals_from_predictions(
        predictions=[first], config=config, markets={market.pk: market}
    )
    assert [s.pk for s in again] == [signal.pk]
    assert Signal.objects.count() == 1
    later = _prediction(market, version, p=(0.1, 0.2, 0.7), at=T0 + timedelta(minutes=15))
    [newer] = signals_from_predictions(predictions=[later], config=config,
                                       markets={market.pk: market})  # fmt: skip
    assert signals_supersede(newest={market.pk: newer.candle_time}) == 1
    signal.refresh_from_db()
    assert signal.status == Signal.Status.EXPIRED
    assert signals_expire_stale(now=newer.expires_at - timedelta(seconds=1)) == 0
    assert signals_expire_stale(now=newer.expires_at) == 1
