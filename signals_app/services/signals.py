"""The ML signal processor: a Prediction becomes a Signal (LONG / SHORT / NEUTRAL), checked
against the MLConfig thresholds, with stop loss and take profit from the predicted risk.

Formulas (h = the 1-hour horizon, 4 candles of 15m; p = the model's class probabilities at h):

    type        = LONG / SHORT / NEUTRAL for the most probable class up / down / flat
    confidence  = p[type's class]                 the probability the model gives the call, 1/3..1
    strength    = s_model * agree                 s_model = min(1, |E[r_h]| / flat band_h), the
                                                  predicted move measured in flat bands (computed
                                                  by mlcore, which holds the band); agree = 1 when
                                                  the return head's sign matches the call, else 0
    thresholds  = min_confidence * k, min_signal_strength * k with k = 1.2 / 1.0 / 0.8 for
                  risk_tolerance LOW / MEDIUM / HIGH (a cautious profile demands more)
    status      = ACCEPTED when type != NEUTRAL and both thresholds are met, else REJECTED with
                  the reason

    stop loss   = entry * (1 -/+ sl), sl = max(MIN_STOP, adverse_4h * SL_ROOM[tolerance])
    take profit = entry * (1 +/- tp), tp = max(MIN_STOP, favourable_4h * TP_REACH[tolerance])
                  adverse / favourable = the predicted max drawdown / max rally over the next 4 h
                  (swapped for SHORT); SL sits beyond the expected adverse excursion so ordinary
                  noise does not stop the trade out, TP at the expected favourable one.
    expires_at  = close of the candle after the one predicted on (the next prediction's time)
"""

import logging
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from django.db.models import Q

from mlcore.candles import timeframe_delta
from signals_app.models import Market, MLConfig, Prediction, Signal

logger = logging.getLogger(__name__)

SIGNAL_HORIZON = "4"  # candles; Prediction JSON keys are strings
THRESHOLD_FACTOR = {"LOW": 1.2, "MEDIUM": 1.0, "HIGH": 0.8}
SL_ROOM = {"LOW": 1.0, "MEDIUM": 1.25, "HIGH": 1.5}
TP_REACH = {"LOW": 0.8, "MEDIUM": 1.0, "HIGH": 1.2}
MIN_STOP = 0.002  # 0.2 %: below this a stop sits inside the spread and fee noise
_CLASS_INDEX = {Signal.Type.SHORT: 0, Signal.Type.NEUTRAL: 1, Signal.Type.LONG: 2}
_OPEN = (Signal.Status.NEW, Signal.Status.ACCEPTED)


def signal_confidence(prediction: Prediction, signal_type: str) -> float:
    return float(prediction.probabilities[SIGNAL_HORIZON][_CLASS_INDEX[signal_type]])


def signal_strength(prediction: Prediction, signal_type: str) -> float:
    expected = float(prediction.returns[SIGNAL_HORIZON])
    agrees = (
        (signal_type == Signal.Type.LONG and expected > 0)
        or (signal_type == Signal.Type.SHORT and expected < 0)
        or signal_type == Signal.Type.NEUTRAL
    )
    return float(prediction.strength) if agrees else 0.0


def thresholds(config: MLConfig) -> tuple[float, float]:
    k = THRESHOLD_FACTOR[config.risk_tolerance]
    return min(1.0, config.min_confidence * k), min(1.0, config.min_signal_strength * k)


def stops(
    prediction: Prediction, signal_type: str, *, tolerance: str
) -> tuple[Decimal | None, Decimal | None]:
    if signal_type == Signal.Type.NEUTRAL:
        return None, None
    drawdown, rally = prediction.risk["max_drawdown_4h"], prediction.risk["max_rally_4h"]
    adverse, favourable = (
        (drawdown, rally) if signal_type == Signal.Type.LONG else (rally, drawdown)
    )
    sl = max(MIN_STOP, float(adverse) * SL_ROOM[tolerance])
    tp = max(MIN_STOP, float(favourable) * TP_REACH[tolerance])
    sign = 1 if signal_type == Signal.Type.LONG else -1
    entry = prediction.close
    return _price(entry * (1 - sign * sl)), _price(entry * (1 + sign * tp))


def _price(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("1e-12"))


class Verdict(NamedTuple):
    type: str
    confidence: float
    strength: float
    status: str
    reason: str  # why it was rejected, "" when accepted


def signal_verdict(prediction: Prediction, *, config: MLConfig) -> Verdict:
    """What the ML signal processor makes of one Prediction, without building the Signal (a
    backtest asks it of every candle to skip the ones that cannot trade)."""
    signal_type = Signal.Type(prediction.direction)
    confidence = signal_confidence(prediction, signal_type)
    strength = signal_strength(prediction, signal_type)
    min_confidence, min_strength = thresholds(config)
    if signal_type == Signal.Type.NEUTRAL:
        status, reason = Signal.Status.REJECTED, "neutral: no trade"
    elif confidence < min_confidence:
        status = Signal.Status.REJECTED
        reason = f"confidence {confidence:.3f} < {min_confidence:.3f} ({config.risk_tolerance})"
    elif strength < min_strength:
        status = Signal.Status.REJECTED
        reason = f"strength {strength:.3f} < {min_strength:.3f} ({config.risk_tolerance})"
    else:
        status, reason = Signal.Status.ACCEPTED, ""
    return Verdict(signal_type, confidence, strength, status, reason)


def signal_build(prediction: Prediction, *, config: MLConfig, timeframe: str) -> Signal:
    """The (unsaved) Signal for one Prediction, with the thresholds applied."""
    verdict = signal_verdict(prediction, config=config)
    stop_loss, take_profit = stops(prediction, verdict.type, tolerance=config.risk_tolerance)
    return Signal(
        market_id=prediction.market_id,
        prediction=prediction,
        candle_time=prediction.candle_time,
        model_version_id=prediction.model_version_id,
        type=verdict.type,
        confidence=verdict.confidence,
        strength=verdict.strength,
        entry_price=_price(prediction.close),
        stop_loss=stop_loss,
        take_profit=take_profit,
        expires_at=prediction.candle_time + 2 * timeframe_delta(timeframe),
        status=verdict.status,
        rejection_reason=verdict.reason,
    )


def signals_from_predictions(
    *, predictions: Iterable[Prediction], config: MLConfig, markets: dict[int, Market]
) -> list[Signal]:
    """Create the Signals of these Predictions (at most one each: a second run finds them) and
    return the stored rows."""
    predictions = list(predictions)
    if not predictions:
        return []
    built = [
        signal_build(p, config=config, timeframe=markets[p.market_id].timeframe)
        for p in predictions
    ]
    Signal.objects.bulk_create(built, ignore_conflicts=True)
    return list(Signal.objects.filter(prediction__in=predictions).select_related("market"))


def signals_supersede(*, newest: dict[int, datetime]) -> int:
    """Open signals of a market older than its newest signal's candle become EXPIRED."""
    if not newest:
        return 0
    older = Q()
    for market_id, candle_time in newest.items():
        older |= Q(market_id=market_id, candle_time__lt=candle_time)
    return Signal.objects.filter(older, status__in=_OPEN).update(status=Signal.Status.EXPIRED)


def signals_expire_stale(*, now: datetime) -> int:
    """Open signals past their expiry (a market whose candles stopped coming) become EXPIRED."""
    return Signal.objects.filter(status__in=_OPEN, expires_at__lte=now).update(
        status=Signal.Status.EXPIRED
    )
