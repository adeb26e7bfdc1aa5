"""What GET /api/v1/ml/status reports: config, model, queues and workers, last cycle, cache.

Everything here is one indexed query or one cached probe: the endpoint is polled by dashboards
and must stay fast (bench/bench_api.py measures it)."""

from datetime import timedelta

from celery import current_app
from django.db.models import Sum
from django.utils import timezone

from signals_app.models import CycleRun, MLConfig, ModelVersion
from signals_app.predictor import checkpoint_path, predictor_settings
from signals_app.probes import cached_probe, queue_workers_cached

MODEL_STATUS_TASK = "signals_app.tasks.model_status"
MODEL_PROBE_KEY = "probe:gpu-model"
MODEL_PROBE_FRESH_FOR = 15.0
MODEL_PROBE_WAIT = 5.0
CACHE_HIT_WINDOW = timedelta(hours=1)
CYCLE_COUNTS = (
    "markets", "markets_new", "candles_stored", "batches", "predictions", "cache_hits",
    "signals_long", "signals_short", "signals_neutral", "signals_accepted",
)  # fmt: skip


def _gpu_model_report() -> dict:
    """Ask a gpu worker what it has loaded (signals_app.tasks.model_status)."""
    workers = queue_workers_cached()[0]["workers"]
    if not workers.get("gpu"):
        return {"loaded": False, "detail": "no worker consumes the gpu queue"}
    # expires: an answer nobody waits for any more must not queue up behind the predictions.
    result = current_app.send_task(MODEL_STATUS_TASK, expires=MODEL_PROBE_WAIT * 2)
    try:
        report = result.get(timeout=MODEL_PROBE_WAIT, disable_sync_subtasks=False)
    except Exception as exc:  # noqa: BLE001 - a busy or failing worker is reported, not raised
        return {"loaded": False, "detail": f"the gpu worker did not answer: {exc!r}"}
    finally:
        result.forget()
    return report


def _model(config: MLConfig) -> dict:
    report, _ = cached_probe(
        key=MODEL_PROBE_KEY, fresh_for=MODEL_PROBE_FRESH_FOR, compute=_gpu_model_report
    )
    path = checkpoint_path(config)
    active = ModelVersion.objects.filter(active=True).first()
    loaded = bool(report.get("loaded"))
    if loaded:
        detail = f"loaded by gpu worker pid {report.get('pid')}"
    else:
        detail = report.get("error") or report.get("detail") or "the gpu worker has no model"
    return {
        "loaded": loaded,
        "checkpoint": str(path),
        "checkpoint_exists": path.exists(),
        "version": report.get("version") or (active.name if active else None),
        "fingerprint": report.get("fingerprint") or (active.fingerprint if active else None),
        "metrics": active.metrics if active else None,
        "device": report.get("device") or predictor_settings(config).device,
        "detail": detail,
    }


def _last_cycle() -> dict | None:
    cycle = CycleRun.objects.order_by("-started_at").first()
    if cycle is None:
        return None
    duration = (cycle.finished_at - cycle.started_at).total_seconds() if cycle.finished_at else None
    return {
        "id": cycle.pk,
        "started_at": cycle.started_at,
        "finished_at": cycle.finished_at,
        "duration_seconds": duration,
        "status": cycle.status,
        "reason": cycle.reason,
        "counts": {name: getattr(cycle, name) for name in CYCLE_COUNTS},
        "stage_seconds": cycle.stage_seconds,
        "errors": len(cycle.errors),
    }


def _cache_hit_rate() -> float | None:
    totals = CycleRun.objects.filter(started_at__gte=timezone.now() - CACHE_HIT_WINDOW).aggregate(
        hits=Sum("cache_hits"), predictions=Sum("predictions")
    )
    # predictions counts new inferences only; a cache hit is a market served without one.
    served = (totals["hits"] or 0) + (totals["predictions"] or 0)
    return totals["hits"] / served if served else None


def ml_status() -> dict:
    config = MLConfig.load()
    probe, age = queue_workers_cached()
    return {
        "ml_enabled": config.enabled,
        "model": _model(config),
        "queues": [{"name": name, "workers": names} for name, names in probe["workers"].items()],
        "workers_checked_seconds_ago": round(age, 1),
        "workers_error": probe["error"],
        "last_cycle": _last_cycle(),
        "cache_hit_rate": _cache_hit_rate(),
        "thresholds": {
            "min_confidence": config.min_confidence,
            "min_signal_strength": config.min_signal_strength,
            "risk_tolerance": config.risk_tolerance,
            "batch_size": config.batch_size,
            "interval_seconds": config.interval_seconds,
        },
    }
