"""Item 1: a worker SIGKILLed in the middle of a batch, a new one started: every signal ends with
exactly its orders, every market with exactly one prediction and signal per candle.

The kill lands at a chosen point of the batch: the test holds a row lock the worker needs next,
waits until PostgreSQL shows the worker blocked on it, and kills the process there. Nothing is
slowed down or stubbed; the batch is real work on real rows."""

import signal
import time
from decimal import Decimal

import psutil
import pytest

from botai.celery import app
from signals_app.models import CycleRun, Prediction, Signal
from signals_app.tasks import predict_batch
from tests.conftest import queued_tasks
from tests.reliability.conftest import (
    FAST_REDELIVERY,
    GPU_MARKETS,
    LOCK_SIGNAL,
    PROCESS_SIGNALS,
    REDELIVERY_SECONDS,
    TRADERS_PER_ACCOUNT,
    every_signal_has_exactly_its_orders,
    held,
    ledger_holds,
    needs_postgresql,
    other_sessions,
    terminate,
    wait_for,
)
from tests.trading_app import factories as f
from trading_app.models import Balance, Order, TradeDecision

pytestmark = [pytest.mark.e2e, pytest.mark.slow, needs_postgresql]


def test_trading_worker_killed_mid_batch(two_books, start_worker, figures):
    """One message, 40 signals x 3 traders per account. Account A's transaction commits; B's has
    written all its positions, orders, decisions and balance and waits for the last statement
    (the signals' counters, row-locked here) when the worker is SIGKILLed."""
    (account_a, traders_a, signals_a), (account_b, traders_b, signals_b) = two_books
    ids = [s.pk for s in signals_a + signals_b]
    first = start_worker("trading", name="trading-doomed")

    with held((LOCK_SIGNAL, [signals_b[-1].pk])):
        app.send_task(PROCESS_SIGNALS, args=[ids])
        wait_for(
            lambda: other_sessions(waiting_on_lock=True), timeout=60,
            what="the worker blocked inside account B's transaction",
        )  # fmt: skip
        first.kill()
    # PostgreSQL rolled B's transaction back with the dead session; A's commit stands.
    orders_a = Order.objects.filter(trader__account=account_a).count()
    assert orders_a == len(signals_a) * len(traders_a)
    assert not Order.objects.filter(trader__account=account_b).exists()
    assert not TradeDecision.objects.filter(trader__account=account_b).exists()
    assert not Balance.objects.filter(account=account_b).exists()
    ledger_holds(account_a)

    # The message was never acknowledged: the replacement gets it once it is due again.
    start_worker("trading", name="trading-replacement", **FAST_REDELIVERY)
    expected = len(ids) * TRADERS_PER_ACCOUNT
    wait_for(
        lambda: Order.objects.count() >= expected
        and not Signal.objects.filter(pk__in=ids).exclude(status="EXECUTED").exists(),
        timeout=REDELIVERY_SECONDS + 60, what="the redelivered batch done",
    )  # fmt: skip
    counts = every_signal_has_exactly_its_orders(two_books)
    assert counts == {"lost": 0, "duplicates": 0}
    assert Order.objects.count() == expected
    figures.append(
        {"fault": "trading worker SIGKILL mid-batch (one account committed, one mid-transaction)",
         "signals": len(ids), "orders": expected, **counts}
    )  # fmt: skip


def test_trading_pool_process_killed_mid_batch_is_redone_at_once(two_books, start_worker, figures):
    """The Procfile's trading worker is a prefork pool: when the OOM killer (here SIGKILL) takes
    the pool process running a batch, the worker's main process sees it lost and puts the
    message back at once (task_reject_on_worker_lost), without waiting for Redis to redeliver."""
    ids = [s.pk for _, _, signals in two_books for s in signals]
    worker = start_worker("trading", name="trading-prefork", pool="prefork", concurrency=1)
    main = psutil.Process(worker.process.pid)
    with held((LOCK_SIGNAL, [two_books[1][2][-1].pk])):
        app.send_task(PROCESS_SIGNALS, args=[ids])
        blocked = wait_for(
            lambda: other_sessions(waiting_on_lock=True), timeout=60,
            what="the pool process blocked inside account B's transaction",
        )  # fmt: skip
        [child] = main.children()
        child.send_signal(signal.SIGKILL)
        terminate(blocked)  # the dead process's session, as PostgreSQL ends it once it notices
    started = time.monotonic()
    expected = len(ids) * TRADERS_PER_ACCOUNT
    wait_for(
        lambda: Order.objects.count() >= expected
        and not Signal.objects.filter(pk__in=ids).exclude(status="EXECUTED").exists(),
        timeout=30, what="the batch redone by a new pool process",
    )  # fmt: skip
    redone_in = time.monotonic() - started
    assert main.is_running()
    assert worker.process.poll() is None
    assert "WorkerLostError" in worker.log.read_text()
    counts = every_signal_has_exactly_its_orders(two_books)
    assert counts == {"lost": 0, "duplicates": 0}
    figures.append(
        {"fault": "trading pool process SIGKILLed mid-batch (prefork, reject on worker lost)",
         "signals": len(ids), "orders": expected, "redone_in_seconds": round(redone_in, 1),
         **counts}
    )  # fmt: skip


def _killed_when_blocked(start, blocked_at: str, *statements) -> None:
    """Take the locks, start a worker, SIGKILL it once its session waits for them at the
    statement `blocked_at`, and end that session as PostgreSQL does once it sees the client gone
    (else the orphaned statement would run on when the lock is released). A solo worker busy with
    a task cannot answer a ping: the blocked session is its sign of life."""
    with held(*statements):
        worker = start()
        blocked = wait_for(
            lambda: other_sessions(waiting_on_lock=True), timeout=90,
            what=f"{worker.name} blocked at {blocked_at}",
        )  # fmt: skip
        worker.kill()
        assert [query.startswith(blocked_at) for query in blocked.values()] == [True], blocked
        assert terminate(blocked) == 1


def test_gpu_worker_killed_at_each_step_of_a_batch(
    gpu_batch, tiny_checkpoint, spawn_worker, start_worker, figures
):
    """One predict_batch message, four workers killed one after the other, each at a later step:
    (1) inference done, predictions not written; (2) predictions committed, signals not;
    (3) signals committed, not handed to trading; (4) handed to trading, not marked as handed.
    The fifth worker finishes the batch; a trading worker then takes what was handed over."""
    markets, previous, run, newest = gpu_batch
    env = {"MODEL_PATH": tiny_checkpoint, "ML_TORCH_THREADS": 1}
    predict_batch.delay([m.pk for m in markets], newest.isoformat(), run.pk, 0)

    def gpu(n: int, **extra):
        return lambda: spawn_worker("gpu", name=f"gpu-{n}", **env, **extra)

    fresh = Prediction.objects.exclude(pk=previous.prediction_id)
    _killed_when_blocked(
        gpu(1), 'INSERT INTO "signals_app_prediction"',
        ("LOCK TABLE signals_app_prediction IN SHARE MODE", []),
    )  # fmt: skip
    assert not fresh.exists()

    _killed_when_blocked(
        gpu(2, **FAST_REDELIVERY), 'INSERT INTO "signals_app_signal"',
        ("LOCK TABLE signals_app_signal IN SHARE MODE", []),
    )  # fmt: skip
    assert fresh.count() == GPU_MARKETS
    assert not Signal.objects.exclude(pk=previous.pk).exists()

    # The new signals supersede the previous candle's open one: that update waits for its row.
    _killed_when_blocked(
        gpu(3, **FAST_REDELIVERY), 'UPDATE "signals_app_signal" SET "status"',
        (LOCK_SIGNAL, [previous.pk]),
    )  # fmt: skip
    new = Signal.objects.exclude(pk=previous.pk)
    assert new.count() == GPU_MARKETS
    accepted = sorted(new.filter(status="ACCEPTED").values_list("pk", flat=True))
    assert accepted, "the replayed afternoon should hold LONG/SHORT calls"
    assert queued_tasks("trading") == []

    # Handed over (sent), then marked: the mark waits for the row, the message is already out.
    _killed_when_blocked(
        gpu(4, **FAST_REDELIVERY), 'UPDATE "signals_app_signal" SET "handed_at"',
        (LOCK_SIGNAL, [accepted[0]]),
    )  # fmt: skip
    assert queued_tasks("trading") == [(PROCESS_SIGNALS, [accepted])]
    assert not new.filter(handed_at__isnull=False).exists()

    gpu(5, **FAST_REDELIVERY)()
    run = wait_for(
        lambda: CycleRun.objects.filter(pk=run.pk, finished_at__isnull=False).first(),
        timeout=REDELIVERY_SECONDS + 90, what="the batch finished",
    )  # fmt: skip
    assert (run.status, run.batches_done, run.reason) == ("OK", [0], "")
    assert fresh.count() == GPU_MARKETS
    assert sorted(fresh.values_list("market_id", flat=True)) == [m.pk for m in markets]
    assert new.count() == GPU_MARKETS
    assert not new.filter(status="ACCEPTED", handed_at__isnull=True).exists()
    # Sent before it was marked, the hand-over went out twice: trading absorbs the repeat.
    handed = queued_tasks("trading")
    assert handed == [(PROCESS_SIGNALS, [accepted])] * 2

    trader = f.trader(f.paper_account(paper_initial_balance=Decimal(100_000)), markets,
                      max_positions=100)  # fmt: skip
    start_worker("trading", name="trading-after-gpu")
    wait_for(
        lambda: not queued_tasks("trading") and TradeDecision.objects.count() == len(accepted),
        timeout=60, what="trading decided every handed signal",
    )  # fmt: skip
    orders = {s: Order.objects.filter(signal_id=s, trader=trader).count() for s in accepted}
    ordered = set(
        TradeDecision.objects.filter(outcome="ORDERED").values_list("signal_id", flat=True)
    )
    lost = sum(1 for s in ordered if orders[s] == 0)
    duplicates = sum(max(0, n - 1) for n in orders.values())
    assert (lost, duplicates) == (0, 0)
    assert all(orders[s] == 0 for s in set(accepted) - ordered)
    figures.append(
        {"fault": "gpu worker SIGKILL at each of 4 steps of one batch",
         "markets": GPU_MARKETS, "kills": 4, "predictions": fresh.count(),
         "signals": new.count(), "accepted": len(accepted), "hand_over_messages": len(handed),
         "lost": lost, "duplicates": duplicates}
    )  # fmt: skip
