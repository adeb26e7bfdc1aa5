"""signals_app's Celery tasks: thin wrappers over the services. Queues come from the routes in
botai/celery.py (run_cycle -> default; predict_batch, generate_signal, model_status -> gpu)."""

import logging
from datetime import datetime

from celery import Task, shared_task
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections
from django.utils.dateparse import parse_datetime

logger = logging.getLogger(__name__)


def _instant(value: str | None) -> datetime | None:
    return parse_datetime(value) if value else None


@shared_task(acks_late=True)
def run_cycle(now: str | None = None) -> dict:
    """Beat, every minute. Idempotent: the batches it sends skip what is already predicted."""
    from signals_app.services.cycle import cycle_run

    def dispatch(market_ids: list[int], candle_time: datetime, cycle_run_id: int, index: int):
        predict_batch.delay(market_ids, candle_time.isoformat(), cycle_run_id, index)

    run = cycle_run(now=_instant(now), dispatch=dispatch)
    return {
        "cycle_run": run.pk,
        "status": run.status,
        "reason": run.reason,
        "markets_new": run.markets_new,
        "batches": run.batches,
    }


class BatchTask(Task):
    """predict_batch's base. Celery calls on_failure once a task has failed for good (an error
    not in autoretry_for, or one of those once max_retries are used up), never on a retry: the
    batch reports the failure to its CycleRun then, so the run closes now rather than 10 minutes
    later."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        from signals_app.services.cycle import cycle_record_batch_failure

        names = ("market_ids", "candle_time", "cycle_run_id", "batch_index")
        call = {**dict(zip(names, args, strict=False)), **kwargs}
        if call.get("cycle_run_id") is None:
            return
        if isinstance(exc, DatabaseError | InterfaceError):
            close_old_connections()  # a dropped connection: record the failure on a new one
        try:
            cycle_record_batch_failure(
                cycle_run_id=call["cycle_run_id"],
                batch_index=call.get("batch_index", 0),
                market_ids=call.get("market_ids") or [],
                error=exc,
            )
        except Exception:  # a failure handler must not raise: Celery would run it again
            logger.exception(
                "batch %s of cycle run %s failed and could not be recorded (the next cycle "
                "closes the run as FAILED after 10 minutes)", call.get("batch_index", 0),
                call["cycle_run_id"],
            )  # fmt: skip


@shared_task(
    base=BatchTask,
    acks_late=True,
    # A connection dropped mid-batch (database restart, failover): redo the batch on a new one,
    # 1 s, 2 s, 4 s ... later. Idempotent, so what the first attempt committed is reused.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=6,
)
def predict_batch(
    market_ids: list[int], candle_time: str, cycle_run_id: int | None = None, batch_index: int = 0
) -> dict:
    """gpu queue: one batched forward pass for these markets (idempotent, see predictions_run)."""
    from signals_app.services.cycle import cycle_record_batch
    from signals_app.services.predictions import predictions_run

    report = predictions_run(market_ids=market_ids, candle_time=_instant(candle_time))
    if cycle_run_id is not None:
        cycle_record_batch(cycle_run_id=cycle_run_id, batch_index=batch_index, report=report)
    return report.as_dict()


@shared_task(acks_late=True)
def generate_signal(symbol: str, exchange: str = "bybit") -> dict:
    """gpu queue, for the API: the signal and prediction for one market's newest closed candle."""
    from signals_app.services.generate import signal_generate

    return signal_generate(symbol=symbol, exchange=exchange)


@shared_task
def model_status() -> dict:
    """gpu queue: what the answering worker process has loaded (loading it if needed)."""
    from signals_app.services.generate import model_status_report

    return model_status_report()
