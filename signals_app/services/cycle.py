"""The per-minute cycle: sync candles, find the markets with a new closed candle, send one gpu
batch per MLConfig.batch_size markets; each batch reports back into the CycleRun.

A minute with no newly closed candle is a cache hit: every market's newest candle already has a
Prediction from the active model, so no batch is sent and no inference runs. Nothing here raises
for a market's or the model's sake: problems are recorded on the CycleRun (reason, errors) and
the next minute tries again.
"""

import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pandas as pd
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from signals_app.models import CycleRun, Market, MLConfig, ModelVersion, Prediction
from signals_app.predictor import checkpoint_path
from signals_app.services.candles import candles_sync, with_last_candle
from signals_app.services.predictions import BatchReport, signals_hand_over_stranded
from signals_app.services.signals import signals_expire_stale
from signals_app.sources import closed_until

logger = logging.getLogger(__name__)

# A run whose batches have not all reported after this is closed as FAILED (a lost gpu worker).
UNFINISHED_AFTER = timedelta(minutes=10)
SignalCounts = {"LONG": "signals_long", "SHORT": "signals_short", "NEUTRAL": "signals_neutral"}
# Dispatch a batch: (market_ids, candle_time, cycle_run_id, batch_index) -> None
Dispatcher = Callable[[list[int], datetime, int, int], None]
# A failed batch's error text on the run: the exception's type and message, this long at most.
ERROR_CHARS = 300
# Credentials an exception message may quote (a connection URL or DSN): never recorded.
_SECRETS = (
    (re.compile(r"(\w[\w+.-]*://)[^/@\s]+@"), r"\1***@"),
    (re.compile(r"\b(password|passwd|secret|token|api_?key)(\s*[=:]\s*)\S+", re.I), r"\1\2***"),
)


def markets_to_predict(markets, *, model_version: ModelVersion | None) -> tuple[list[Market], int]:
    """(markets whose newest candle has no Prediction from the active model, cache hits).

    With no active version yet (a model not served before) every market with candles is due."""
    annotated = with_last_candle(markets).filter(last_open_time__isnull=False)
    if model_version is None:
        return list(annotated), 0
    predicted = Prediction.objects.filter(
        market=OuterRef("pk"), candle_time=OuterRef("last_open_time"), model_version=model_version
    )
    rows = list(annotated.annotate(predicted=Exists(predicted)))
    due = [m for m in rows if not m.predicted]
    return due, len(rows) - len(due)


def _clip(text: str, limit: int | None = None) -> str:
    """text cut to `limit` characters (default: what CycleRun.reason holds), marked with "…"."""
    limit = limit or CycleRun._meta.get_field("reason").max_length
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finish(run: CycleRun, *, status: str, reason: str = "") -> CycleRun:
    run.status, run.reason, run.finished_at = status, _clip(reason), timezone.now()
    run.save()
    return run


def cycle_run(*, now: datetime | None = None, dispatch: Dispatcher) -> CycleRun:
    """One minute of the cycle. `now` is the cycle's clock: the wall clock, or a past instant
    when replaying history (which candles count as closed, which signals are stale)."""
    clock = now or timezone.now()
    cycles_unfinished_close(older_than=timezone.now() - UNFINISHED_AFTER)
    run = CycleRun.objects.create(started_at=timezone.now())
    config = MLConfig.load()
    if not config.enabled:
        return _finish(run, status=CycleRun.Status.SKIPPED, reason="ML is disabled in MLConfig")
    markets = Market.objects.filter(enabled=True)
    run.markets = markets.count()
    if not run.markets:
        return _finish(run, status=CycleRun.Status.SKIPPED, reason="no enabled market")

    sync = candles_sync(markets=markets, now=clock)
    signals_expire_stale(now=clock)
    signals_hand_over_stranded(now=clock)
    run.candles_stored, run.errors = sync.candles_stored, list(sync.errors)
    run.stage_seconds = {"sync": round(sync.seconds, 4)}

    started = time.perf_counter()
    path = checkpoint_path(config)
    if not path.exists():
        return _finish(
            run,
            status=CycleRun.Status.SKIPPED,
            reason=f"no checkpoint at {path}: run manage.py ensure_model (or train_model)",
        )
    active = ModelVersion.objects.filter(active=True).first()
    due, run.cache_hits = markets_to_predict(markets, model_version=active)
    run.model_version = active
    run.markets_new = len(due)
    run.stage_seconds["select"] = round(time.perf_counter() - started, 4)
    if not due:
        return _finish(run, status=_status(run), reason="cache hit: no newly closed candle")

    size = max(1, config.batch_size)
    batches = [due[i : i + size] for i in range(0, len(due), size)]
    run.batches = len(batches)
    started = time.perf_counter()
    # The newest closed candle any market can have now; each market is predicted on its own
    # newest candle up to this time.
    candle_time = max(closed_until(pd.Timestamp(clock), m.timeframe) for m in due)
    run.candle_time = candle_time
    run.save()
    for index, batch in enumerate(batches):
        dispatch([m.pk for m in batch], candle_time, run.pk, index)
    CycleRun.objects.filter(pk=run.pk).update(
        stage_seconds={**run.stage_seconds, "dispatch": round(time.perf_counter() - started, 4)}
    )
    run.refresh_from_db()
    return run


def _status(run: CycleRun) -> str:
    return CycleRun.Status.PARTIAL if run.errors else CycleRun.Status.OK


def cycle_record_batch(*, cycle_run_id: int, batch_index: int, report: BatchReport) -> None:
    """Add one finished batch's counts to its CycleRun (once per batch index, so a redelivered
    batch is not counted twice) and close the run when its last batch is in."""
    with transaction.atomic():
        run = CycleRun.objects.select_for_update().get(pk=cycle_run_id)
        if batch_index in run.batches_done:
            return
        run.batches_done = [*run.batches_done, batch_index]
        run.predictions += report.predicted
        run.cache_hits += report.cache_hits
        for signal_type, column in SignalCounts.items():
            setattr(run, column, getattr(run, column) + report.signals.get(signal_type, 0))
        run.signals_accepted += len(report.accepted_ids)
        run.errors = [*run.errors, *report.errors]
        for stage, seconds in report.stage_seconds.items():
            run.stage_seconds[stage] = round(run.stage_seconds.get(stage, 0.0) + seconds, 4)
        if report.device:
            run.device = report.device
        if report.reason:
            run.reason = _clip(report.reason)
        if len(run.batches_done) >= run.batches:
            run.finished_at = timezone.now()
            if run.reason and not run.predictions:
                run.status = CycleRun.Status.FAILED
            else:
                run.status = _status(run)
        run.save()


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return _clip(text, ERROR_CHARS)


def cycle_record_batch_failure(
    *, cycle_run_id: int, batch_index: int, market_ids: list[int], error: BaseException
) -> None:
    """A batch that died of an error (one its task does not retry, or after its retries) is
    recorded at once: it counts as done, each of its markets gets an error entry naming the
    exception, and the run closes by the usual rules when it was the last batch (FAILED when no
    batch predicted anything, else PARTIAL). Once per batch index, like cycle_record_batch: a
    redelivered failure, or a failure after the batch was already counted, adds nothing."""
    text = _error_text(error)
    ids = [i for i in market_ids if isinstance(i, int)] if isinstance(market_ids, list) else []
    labels = {
        pk: f"{exchange}:{symbol}"
        for pk, exchange, symbol in Market.objects.filter(pk__in=ids).values_list(
            "pk", "exchange", "symbol"
        )
    }
    markets = [labels.get(i, f"market {i!r}") for i in market_ids] if ids else ["*"]
    report = BatchReport(
        markets=len(labels),
        errors=[{"market": market, "stage": "predict", "error": text} for market in markets],
        reason=f"batch {batch_index} failed: {text}",
    )
    cycle_record_batch(cycle_run_id=cycle_run_id, batch_index=batch_index, report=report)


def cycles_unfinished_close(*, older_than: datetime) -> int:
    """Runs whose batches never all reported (a lost worker) are closed as FAILED."""
    return CycleRun.objects.filter(
        Q(status=CycleRun.Status.RUNNING) & Q(started_at__lt=older_than)
    ).update(
        status=CycleRun.Status.FAILED,
        reason="batches did not all report back",
        finished_at=timezone.now(),
    )
