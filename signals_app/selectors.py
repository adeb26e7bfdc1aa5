"""Read-side queries of signals_app: the model's and the cycle's status, and the signal metrics."""

from datetime import datetime, timedelta

from django.db.models import Avg, Count, Q, Sum
from django.utils import timezone

from signals_app.models import CycleRun, MLConfig, ModelVersion, Prediction, Signal
from signals_app.predictor import checkpoint_path, predictor_settings

# A cycle older than this (three beat intervals) means beat or the default worker is not running.
STALE_CYCLE = timedelta(minutes=3)


def ml_status_checks() -> list[dict]:
    """The model's and the cycle's part of the system status (botai.status.Check fields)."""
    config = MLConfig.load()
    path = checkpoint_path(config)
    checks = []
    if not path.exists():
        checks.append(
            {
                "name": "model",
                "ok": False,
                "detail": f"no checkpoint at {path}: run manage.py ensure_model (make up does it)",
            }
        )
    last = CycleRun.objects.order_by("-started_at").first()
    if path.exists():
        active = ModelVersion.objects.filter(active=True).first()
        served = f"version {active.name}" if active else "not served by a gpu worker yet"
        device = f"device {predictor_settings(config).device} configured"
        ran_on = CycleRun.objects.exclude(device="").order_by("-started_at").first()
        if ran_on is not None:
            device += f", last batch ran on {ran_on.device}"
        checks.append({"name": "model", "ok": True, "detail": f"{path}, {served}, {device}"})
    if last is None:
        checks.append({"name": "cycle", "ok": False, "detail": "no cycle has run yet"})
        return checks
    age = timezone.now() - last.started_at
    detail = (
        f"last {last.status} {int(age.total_seconds())} s ago: {last.markets} markets, "
        f"{last.markets_new} new candles, {last.predictions} predictions, signals "
        f"{last.signals_long} long / {last.signals_short} short / {last.signals_neutral} neutral"
        f", {last.signals_accepted} accepted"
        + (f", device {last.device}" if last.device else "")
        + (f"; {last.reason}" if last.reason else "")
        + (f"; {len(last.errors)} market errors" if last.errors else "")
    )
    ok = age < STALE_CYCLE and last.status != CycleRun.Status.FAILED
    # Only the model is required: a stale cycle is reported, the workers' checks say why.
    checks.append({"name": "cycle", "ok": ok, "detail": detail, "required": False})
    return checks


def signal_metrics(*, since: datetime | None = None, until: datetime | None = None) -> dict:
    """The seed's metrics over a window (default: the last 24 h).

    order_success_rate = orders created / orders attempted, both written back onto each Signal by
    trading_app (None while trading has attempted nothing in the window)."""
    until = until or timezone.now()
    since = since or until - timedelta(hours=24)
    signals = Signal.objects.filter(created_at__gte=since, created_at__lt=until)
    totals = signals.aggregate(
        generated=Count("pk"),
        long=Count("pk", filter=Q(type=Signal.Type.LONG)),
        short=Count("pk", filter=Q(type=Signal.Type.SHORT)),
        neutral=Count("pk", filter=Q(type=Signal.Type.NEUTRAL)),
        accepted=Count("pk", filter=Q(handed_at__isnull=False)),
        executed=Count("pk", filter=Q(status=Signal.Status.EXECUTED)),
        orders_attempted=Sum("orders_attempted", default=0),
        orders_created=Sum("orders_created", default=0),
    )
    generation = Prediction.objects.filter(created_at__gte=since, created_at__lt=until).aggregate(
        avg_ms=Avg("latency_ms")
    )
    cycles = CycleRun.objects.filter(started_at__gte=since, started_at__lt=until)
    attempted = totals.pop("orders_attempted")
    created = totals.pop("orders_created")
    generated = totals["generated"]
    return {
        "since": since,
        "until": until,
        "signals_generated": generated,
        "distribution": {
            key.upper(): {
                "count": totals[key],
                "share": totals[key] / generated if generated else None,
            }
            for key in ("long", "short", "neutral")
        },
        "signals_accepted": totals["accepted"],
        "signals_executed": totals["executed"],
        "avg_generation_ms": generation["avg_ms"],
        "orders_attempted": attempted,
        "orders_created": created,
        "order_success_rate": created / attempted if attempted else None,
        "cycles": cycles.count(),
        "cycles_failed": cycles.filter(status=CycleRun.Status.FAILED).count(),
    }


def cycle_metrics(run: CycleRun) -> dict:
    """The same metrics for one cycle, from its counters."""
    generated = run.signals_long + run.signals_short + run.signals_neutral
    duration = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
    return {
        "cycle_run": run.pk,
        "started_at": run.started_at,
        "status": run.status,
        "signals_generated": generated,
        "distribution": {
            "LONG": run.signals_long,
            "SHORT": run.signals_short,
            "NEUTRAL": run.signals_neutral,
        },
        "signals_accepted": run.signals_accepted,
        "predictions": run.predictions,
        "cache_hits": run.cache_hits,
        "seconds": duration,
        "stage_seconds": run.stage_seconds,
        "errors": run.errors,
    }
