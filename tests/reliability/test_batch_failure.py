"""A gpu batch that fails for good (an error predict_batch does not retry, or a database error
after its retries are used up) is recorded on its CycleRun at once: the batch counts as done, its
markets carry the error, and the run closes by the usual rules instead of staying RUNNING until
the 10-minute cleanup. A redelivered failure counts once."""

import time

import pytest
from django.utils import timezone

from signals_app.models import CycleRun, Prediction
from signals_app.services.cycle import UNFINISHED_AFTER
from signals_app.tasks import predict_batch
from tests.reliability.conftest import (
    held,
    needs_postgresql,
    other_sessions,
    terminate,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
# A candle time the task cannot read (a producer writing another format): predictions_run gets
# None for it and raises deep inside (ValueError from the ORM), an error nobody planned for.
UNREADABLE_TIME = "18/06/2025 15:00"
# Well inside the 10 minutes after which the cycle would close a run left RUNNING.
CLOSED_WITHIN = 30


def _closed(run_id: int, *, what: str) -> CycleRun:
    return wait_for(
        lambda: CycleRun.objects.filter(pk=run_id, finished_at__isnull=False).first(),
        timeout=CLOSED_WITHIN, what=what,
    )  # fmt: skip


def _labels(markets) -> list[str]:
    return [f"{m.exchange}:{m.symbol}" for m in markets]


def test_a_batch_dying_of_an_unexpected_error_closes_its_run_at_once(
    gpu_batch, tiny_checkpoint, start_worker, figures
):
    markets, previous, run, newest = gpu_batch
    start_worker("gpu", name="gpu-failing", MODEL_PATH=tiny_checkpoint, ML_TORCH_THREADS=1)
    good, bad = markets[:12], markets[12:]
    CycleRun.objects.filter(pk=run.pk).update(batches=2)

    predict_batch.delay([m.pk for m in good], newest.isoformat(), run.pk, 0).get(timeout=120)
    sent = time.monotonic()
    failed = predict_batch.delay([m.pk for m in bad], UNREADABLE_TIME, run.pk, 1)
    run = _closed(run.pk, what="the run closed by its failed batch")
    closed_in = time.monotonic() - sent
    assert isinstance(failed.get(timeout=10, propagate=False), ValueError)
    assert failed.state == "FAILURE"

    assert (run.status, sorted(run.batches_done), run.predictions) == ("PARTIAL", [0, 1], 12)
    assert run.reason.startswith("batch 1 failed: ValueError: ")
    errors = [e for e in run.errors if e["stage"] == "predict"]
    assert [e["market"] for e in errors] == _labels(bad)
    assert {e["error"] for e in errors} == {run.reason.removeprefix("batch 1 failed: ")}
    assert len(run.reason) <= CycleRun._meta.get_field("reason").max_length

    # The same failing message again (redelivered after a worker died before the ack): once only.
    again = predict_batch.delay([m.pk for m in bad], UNREADABLE_TIME, run.pk, 1)
    assert isinstance(again.get(timeout=30, propagate=False), ValueError)
    after = CycleRun.objects.get(pk=run.pk)
    assert (after.status, sorted(after.batches_done), len(after.errors)) == (
        "PARTIAL", [0, 1], len(run.errors),
    )  # fmt: skip
    assert (after.predictions, after.finished_at, after.reason) == (
        12, run.finished_at, run.reason,
    )  # fmt: skip

    # A run whose only batch fails predicted nothing: FAILED, with the reason.
    alone = CycleRun.objects.create(
        started_at=timezone.now(), candle_time=newest, markets=12, markets_new=12, batches=1
    )
    predict_batch.delay([m.pk for m in bad], UNREADABLE_TIME, alone.pk, 0)
    alone = _closed(alone.pk, what="the single-batch run closed")
    assert (alone.status, alone.batches_done, alone.predictions) == ("FAILED", [0], 0)
    assert alone.reason.startswith("batch 0 failed: ValueError: ")
    assert [e["market"] for e in alone.errors] == _labels(bad)
    assert Prediction.objects.exclude(pk=previous.prediction_id).count() == 12
    figures.append(
        {"fault": "a gpu batch dies of an unexpected error (ValueError from bad input)",
         "batches": 2, "failed_batches": 1, "closed_in_seconds": round(closed_in, 1),
         "cleanup_after_seconds": UNFINISHED_AFTER.total_seconds(),
         "error_entries": len(errors), "duplicates": len(after.errors) - len(run.errors)}
    )  # fmt: skip


@needs_postgresql
def test_a_batch_whose_database_retries_run_out_closes_its_run(
    gpu_batch, tiny_checkpoint, start_worker, figures
):
    """PostgreSQL drops the batch's connection on every attempt (the first and its 6 retries)
    while it reads candles, outside any transaction (so Django has not closed the dead
    connection itself): the last OperationalError fails the task, and the failure is recorded on
    a new connection."""
    markets, previous, run, newest = gpu_batch
    worker = start_worker("gpu", name="gpu-db-down", MODEL_PATH=tiny_checkpoint, ML_TORCH_THREADS=1)
    attempts = predict_batch.max_retries + 1
    dropped = []
    with held(("LOCK TABLE signals_app_candle IN ACCESS EXCLUSIVE MODE", [])):
        result = predict_batch.delay([m.pk for m in markets], newest.isoformat(), run.pk, 0)
        for attempt in range(attempts):
            blocked = wait_for(
                lambda: {pid: query for pid, query in other_sessions(waiting_on_lock=True).items()
                         if pid not in dropped}, timeout=120,
                what=f"attempt {attempt + 1} of {attempts} reading candles",
            )  # fmt: skip
            assert [q.startswith("SELECT") and "signals_app_candle" in q
                    for q in blocked.values()] == [True], blocked  # fmt: skip
            assert terminate(blocked) == 1
            dropped.extend(blocked)
        run = _closed(run.pk, what="the run closed after the last retry")
    assert result.state == "FAILURE"
    assert (run.status, run.batches_done) == ("FAILED", [0])
    assert run.reason.startswith("batch 0 failed: OperationalError: terminating connection")
    assert [e["market"] for e in run.errors] == _labels(markets)
    assert "could not be recorded" not in worker.log.read_text()
    figures.append(
        {"fault": "PostgreSQL drops the gpu batch's connection on every attempt (retries run out)",
         "attempts": attempts, "connections_dropped": len(dropped), "status": run.status}
    )  # fmt: skip
