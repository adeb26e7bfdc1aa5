"""Item 3: PostgreSQL drops a worker's connection in the middle of a task (pg_terminate_backend,
what a database restart or failover does): the task retries on a new connection and completes;
what the dropped transaction had written is gone with it, nothing half-written remains."""

import re
from decimal import Decimal

import pytest

from botai.celery import app
from signals_app.models import CycleRun, Prediction, Signal
from signals_app.tasks import predict_batch
from tests.conftest import queued_tasks
from tests.reliability.conftest import (
    GPU_MARKETS,
    LOCK_SIGNAL,
    PROCESS_SIGNALS,
    TRADERS_PER_ACCOUNT,
    every_signal_has_exactly_its_orders,
    held,
    ledger_holds,
    needs_postgresql,
    other_sessions,
    terminate,
    wait_for,
)
from trading_app.models import Balance, Order, TradeDecision

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _retries_logged(worker, task: str) -> list[str]:
    """The retry lines a worker logged for `task` (Celery: 'Task <name>[<id>] retry: ...')."""
    return re.findall(rf"Task {re.escape(task)}\[[^\]]+\] retry: (.*)", worker.log.read_text())


@needs_postgresql
def test_trading_transaction_dropped_then_retried(two_books, start_worker, figures):
    (account_a, _, signals_a), (account_b, _, signals_b) = two_books
    ids = [s.pk for s in signals_a + signals_b]
    worker = start_worker("trading", name="trading-db")
    with held((LOCK_SIGNAL, [signals_b[-1].pk])):
        app.send_task(PROCESS_SIGNALS, args=[ids])
        blocked = wait_for(
            lambda: other_sessions(waiting_on_lock=True), timeout=60,
            what="the worker inside account B's transaction",
        )  # fmt: skip
        assert terminate(blocked) == 1
        # B's transaction died with its connection: none of its rows exist, A's stand.
        assert not TradeDecision.objects.filter(trader__account=account_b).exists()
        assert Order.objects.filter(trader__account=account_a).count() == 60
    expected = len(ids) * TRADERS_PER_ACCOUNT
    wait_for(
        lambda: not Signal.objects.filter(pk__in=ids).exclude(status="EXECUTED").exists(),
        timeout=60, what="the retried batch done",
    )  # fmt: skip
    retries = _retries_logged(worker, PROCESS_SIGNALS)
    assert len(retries) == 1, retries
    assert "terminating connection due to administrator command" in retries[0]
    counts = every_signal_has_exactly_its_orders(two_books)
    assert counts == {"lost": 0, "duplicates": 0}
    assert Order.objects.count() == expected

    figures.append(
        {"fault": "PostgreSQL drops the trading worker's connection mid-transaction",
         "signals": len(ids), "orders": expected, "retries": len(retries), **counts}
    )  # fmt: skip


@needs_postgresql
def test_gpu_batch_connection_dropped_then_retried(
    gpu_batch, tiny_checkpoint, start_worker, figures
):
    markets, previous, run, newest = gpu_batch
    worker = start_worker("gpu", name="gpu-db", MODEL_PATH=tiny_checkpoint, ML_TORCH_THREADS=1)
    with held(("LOCK TABLE signals_app_signal IN SHARE MODE", [])):
        predict_batch.delay([m.pk for m in markets], newest.isoformat(), run.pk, 0)
        blocked = wait_for(
            lambda: other_sessions(waiting_on_lock=True), timeout=90, what="signals insert"
        )
        assert [q.startswith('INSERT INTO "signals_app_signal"') for q in blocked.values()] == [
            True
        ]
        assert terminate(blocked) == 1
    run = wait_for(
        lambda: CycleRun.objects.filter(pk=run.pk, finished_at__isnull=False).first(),
        timeout=90, what="the retried batch finished",
    )  # fmt: skip
    retries = _retries_logged(worker, "signals_app.tasks.predict_batch")
    assert len(retries) == 1, retries
    assert (run.status, run.batches_done) == ("OK", [0])
    fresh = Prediction.objects.exclude(pk=previous.prediction_id)
    new = Signal.objects.exclude(pk=previous.pk)
    assert (fresh.count(), new.count()) == (GPU_MARKETS, GPU_MARKETS)
    accepted = sorted(new.filter(status="ACCEPTED").values_list("pk", flat=True))
    assert queued_tasks("trading") == [(PROCESS_SIGNALS, [accepted])]
    figures.append(
        {"fault": "PostgreSQL drops the gpu worker's connection mid-batch",
         "markets": GPU_MARKETS, "retries": len(retries), "predictions": fresh.count(),
         "signals": new.count(), "lost": 0, "duplicates": 0}
    )  # fmt: skip


def test_paper_balance_is_never_half_applied(two_books):
    """The ledger check the tests above rely on fails on a half-applied batch (it can fail)."""
    from trading_app.services.engine import signals_process

    (account_a, _, signals_a), _ = two_books
    signals_process(signal_ids=[s.pk for s in signals_a])
    ledger_holds(account_a)
    Balance.objects.filter(account=account_a).update(used=Decimal(0))
    with pytest.raises(AssertionError):
        ledger_holds(account_a)
