"""On-demand work for the API, run on a gpu worker: one market's signal now, the model's state."""

from decimal import Decimal

import pandas as pd
from django.forms.models import model_to_dict
from django.utils import timezone

from mlcore.errors import ModelError
from signals_app.models import Market, MLConfig, Prediction, Signal
from signals_app.predictor import loaded_predictor, loaded_status, serving_model_version
from signals_app.services.candles import candles_sync
from signals_app.services.predictions import predictions_run
from signals_app.sources import closed_until


def _plain(row) -> dict:
    data = model_to_dict(row)
    data["id"] = row.pk
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in data.items()}


def _json(data: dict) -> dict:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in data.items()}


def signal_generate(*, symbol: str, exchange: str) -> dict:
    """Sync the market's candles, predict its newest closed candle (or reuse the stored
    prediction: one per market, candle and model) and return the signal with its prediction.

    {"error": ...} when the market is unknown or the model cannot serve."""
    market = Market.objects.filter(exchange=exchange, symbol=symbol.upper()).first()
    if market is None:
        return {"error": f"unknown market {exchange}:{symbol}"}
    now = timezone.now()
    sync = candles_sync(markets=Market.objects.filter(pk=market.pk), now=now)
    report = predictions_run(
        market_ids=[market.pk], candle_time=closed_until(pd.Timestamp(now), market.timeframe)
    )
    if report.reason:
        return {"error": report.reason}
    prediction = (
        Prediction.objects.filter(market=market, model_version_id=report.model_version)
        .order_by("-candle_time")
        .first()
    )
    if prediction is None:
        errors = [e["error"] for e in sync.errors + report.errors]
        return {"error": "; ".join(errors) or f"no candles stored for {market}"}
    signal = Signal.objects.filter(prediction=prediction).first()
    return {
        "market": str(market),
        "cached": report.predicted == 0,
        "errors": [e["error"] for e in sync.errors + report.errors],
        "prediction": _json(_plain(prediction)),
        "signal": _json(_plain(signal)) if signal else None,
    }


def model_status_report() -> dict:
    """What the answering gpu worker serves, loading the configured checkpoint if needed."""
    try:
        predictor = loaded_predictor(MLConfig.load())
    except ModelError as exc:
        return {**loaded_status(), "loaded": False, "error": f"{type(exc).__name__}: {exc}"}
    version = serving_model_version(predictor)
    return {**loaded_status(), "model_version": version.pk}
