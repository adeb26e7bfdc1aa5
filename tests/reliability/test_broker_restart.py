"""Item 2: Redis (broker and result backend) stopped and started again while a cycle is being
worked on. A private Redis on its own port (the embedded server `make up` runs, append-only file
on) serves real default, gpu and trading workers and celery beat, which fires the cycle every few
seconds. The workers and beat must reconnect by themselves, the interrupted cycle must complete,
the next cycles run, and no signal is traded twice."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal

import pytest
from celery import Celery
from django.db import connection
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from botai import embedded_redis
from signals_app.models import CycleRun, Market, MLConfig, Prediction, Signal
from signals_app.services.predictions import HAND_OVER_GRACE
from tests.conftest import ROOT, SHARED_DATA, WorkerProcess, _database_url
from tests.reliability.conftest import (
    FAST_REDELIVERY,
    REDELIVERY_SECONDS,
    held,
    needs_postgresql,
    other_sessions,
    wait_for,
)
from tests.trading_app import factories as f
from trading_app.models import Order, TradeDecision

pytestmark = [pytest.mark.e2e, pytest.mark.slow, needs_postgresql]
BEAT_SECONDS = 3
# Markets enabled at the start, then before each outage (the last outage's batch is the larger
# one: it must hold signals that pass the thresholds).
STEP_MARKETS = (4, 4, 4, 8)
OUTAGE_SECONDS = 5
CANDLE_SECONDS = 15 * 60  # the markets' timeframe
# From enabling the last markets to checking their stranded signals (9 s here), with margin.
LAST_STEP_SECONDS = 45


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _replay_files(directory, count: int) -> None:
    """K00_USDT-15m.csv ... : the real BTC and ETH files, each starting a different number of
    rows in, so at one wall-clock minute every market replays a different real candle."""
    for k in range(count):
        lines = (SHARED_DATA / "ohlcv" / f"{('BTC', 'ETH')[k % 2]}_USDT-15m.csv").read_text()
        lines = lines.splitlines(keepends=True)
        (directory / f"K{k:02d}_USDT-15m.csv").write_text(lines[0] + "".join(lines[1 + 97 * k :]))


@pytest.fixture
def system(shared_data, tiny_checkpoint, tmp_path, transactional_db):
    """A private Redis, the three workers and beat on it; markets replayed from real candles."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis_dir = tmp_path / "redis"
    redis_process = embedded_redis.start(port=port, directory=redis_dir)
    replay = tmp_path / "replay"
    replay.mkdir()
    _replay_files(replay, sum(STEP_MARKETS))
    markets, k = [], 0
    for step, count in enumerate(STEP_MARKETS):
        markets.append([f.market(f"K{i:02d}USDT", enabled=step == 0) for i in range(k, k + count)])
        k += count
    config = MLConfig.load()
    config.min_confidence = config.min_signal_strength = 0.0  # every LONG/SHORT goes to trading
    config.save()
    trader = f.trader(
        f.paper_account(paper_initial_balance=Decimal(100_000)), list(Market.objects.all()),
        max_positions=100,
    )  # fmt: skip
    # The beat entries (the migration's, when this test runs first) fire every few seconds.
    every, _ = IntervalSchedule.objects.get_or_create(every=BEAT_SECONDS, period="seconds")
    for name, task in (
        ("signal-cycle", "signals_app.tasks.run_cycle"),
        ("position-sync", "trading_app.tasks.sync_positions"),
    ):
        PeriodicTask.objects.update_or_create(
            name=name, defaults={"task": task, "interval": every, "expire_seconds": 10}
        )

    env = {
        **os.environ, "DATABASE_URL": _database_url(connection.settings_dict),
        "REDIS_URL": url, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url,
        "MODEL_PATH": str(tiny_checkpoint), "ML_TORCH_THREADS": "1",
        "MARKET_DATA_SOURCE": "replay", "REPLAY_DIR": str(replay),
        **{key: str(value) for key, value in FAST_REDELIVERY.items()},
    }  # fmt: skip
    workers = [
        WorkerProcess(queues=queue, name=f"restart-{queue}", env=env)
        for queue in ("default", "gpu", "trading")
    ]
    probe = Celery("probe", broker=url, backend=url, set_as_current=False)
    for worker in workers:
        wait_for(
            lambda w=worker: w.process.poll() is None
            and probe.control.ping(destination=[w.name], timeout=0.5),
            timeout=60, what=f"{worker.name} ready",
        )  # fmt: skip
    beat_log = ROOT / "data" / "logs" / "test-beat-restart.log"
    with beat_log.open("wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "botai", "beat", "--loglevel=INFO",
             "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
             "--max-interval", "1", "--pidfile="],
            cwd=ROOT, env=env, stdout=log, stderr=log,
        )  # fmt: skip
    state = {
        "port": port, "redis_dir": redis_dir, "redis": redis_process, "workers": workers,
        "beat": beat, "beat_log": beat_log, "trader": trader, "markets": markets,
    }  # fmt: skip
    yield state
    beat.terminate()
    for worker in workers:
        worker.process.terminate()
    for process in (beat, *(w.process for w in workers)):
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    probe.close()
    embedded_redis.stop(state["redis"])  # the restarted one


def _clear_of_candle_close(*, seconds: float) -> None:
    """Return once the next 15m candle close (on the wall clock the replay follows) is at least
    `seconds` away: a close during the data-losing outage makes the cycle predict every market
    again, and the new signals supersede the stranded ones the test checks."""
    left = CANDLE_SECONDS - time.time() % CANDLE_SECONDS
    if left < seconds:
        time.sleep(left + 2)


def _cycle_done(since, *, predictions: int | None = None) -> CycleRun | None:
    runs = CycleRun.objects.filter(started_at__gte=since, finished_at__isnull=False)
    if predictions is not None:
        runs = runs.filter(predictions=predictions)
    return runs.order_by("started_at").first()


def _trading_caught_up() -> bool:
    """Every signal that passed the thresholds was handed to trading and decided on."""
    passed = Signal.objects.filter(status__in=["ACCEPTED", "EXECUTED"])
    return (
        passed.exists()
        and not passed.filter(handed_at__isnull=True).exists()
        and not passed.filter(trade_decisions__isnull=True).exists()
    )


def _snapshot() -> tuple[int, ...]:
    return (
        Prediction.objects.count(), Signal.objects.count(), TradeDecision.objects.count(),
        Order.objects.count(),
    )  # fmt: skip


def _deliveries(worker, task: str) -> int:
    return len(re.findall(rf"Task {re.escape(task)}\[[^\]]+\] received", worker.log.read_text()))


def test_workers_and_beat_reconnect_after_a_broker_restart(system, figures):
    """Three outages, each while the gpu worker holds a batch for newly enabled markets (its
    predictions insert waits for a lock the test holds; the cycle itself only reads predictions):
    (1) the batch resumes after Redis is back; (2) it resumes during the outage, so its hand-over
    to trading meets a dead broker; (3) the same, and Redis comes back without its data (no
    append-only file): the failed batch's message is gone, its signals stranded until the cycle
    hands them over."""
    start = timezone.now()
    wait_for(
        lambda: _cycle_done(start, predictions=STEP_MARKETS[0]), timeout=90,
        what="a first cycle predicting the first markets",
    )  # fmt: skip
    outages, stranded = [], []
    for step, resume_during_outage, lose_data in ((1, False, False), (2, True, False),
                                                   (3, True, True)):  # fmt: skip
        if lose_data:
            _clear_of_candle_close(seconds=LAST_STEP_SECONDS)
        Market.objects.filter(pk__in=[m.pk for m in system["markets"][step]]).update(enabled=True)
        with held(("LOCK TABLE signals_app_prediction IN SHARE MODE", [])) as release:
            wait_for(
                lambda: any(
                    q.startswith('INSERT INTO "signals_app_prediction"')
                    for q in other_sessions(waiting_on_lock=True).values()
                ),
                timeout=60, what=f"the gpu worker in the middle of batch {step}",
            )  # fmt: skip
            embedded_redis.stop(system["redis"])
            stopped = time.monotonic()
            if resume_during_outage:
                release()
            time.sleep(OUTAGE_SECONDS)  # beat fires into the void; the consumers lose their link
            if lose_data:
                for path in system["redis_dir"].iterdir():
                    if path.name != "redis.log":
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
            system["redis"] = embedded_redis.start(
                port=system["port"], directory=system["redis_dir"]
            )
            outages.append(round(time.monotonic() - stopped, 1))
        restarted = timezone.now()
        wait_for(
            lambda since=restarted: _cycle_done(since), timeout=90,
            what=f"a cycle started after restart {step}",
        )  # fmt: skip
        wait_for(
            lambda n=step: Market.objects.filter(enabled=True, predictions__isnull=False)
            .distinct().count() == sum(STEP_MARKETS[: n + 1]),
            timeout=90, what=f"batch {step} predicted",
        )  # fmt: skip
        if lose_data:
            # The cycle hands over signals left unhanded for HAND_OVER_GRACE: let that time pass.
            left = Signal.objects.filter(status="ACCEPTED", handed_at__isnull=True)
            stranded = list(left.values_list("pk", flat=True))
            assert stranded, "the lost batch should have left accepted signals unhanded"
            left.update(created_at=F("created_at") - HAND_OVER_GRACE)
        wait_for(_trading_caught_up, timeout=90, what=f"trading caught up after outage {step}")

    # A message whose acknowledgement was lost with the connection comes back once due: it must
    # add nothing.
    settled = _snapshot()
    time.sleep(REDELIVERY_SECONDS + 2)
    assert _snapshot() == settled
    assert _trading_caught_up()

    for worker in system["workers"]:
        assert worker.process.poll() is None, f"{worker.name} died"
    assert system["beat"].poll() is None, "beat died"
    reconnects = {
        w.name: len(re.findall(r"Connection to broker lost", w.log.read_text()))
        for w in system["workers"]
    }
    assert all(n >= 2 for n in reconnects.values()), reconnects
    assert _cycle_done(restarted)
    gpu = system["workers"][1]
    passed = Signal.objects.filter(status__in=["ACCEPTED", "EXECUTED"])
    decisions = TradeDecision.objects.filter(trader=system["trader"])
    per_signal = Counter(decisions.values_list("signal", flat=True))
    duplicates = sum(n - 1 for n in per_signal.values())
    lost = passed.exclude(pk__in=list(per_signal)).count()
    assert (duplicates, lost) == (0, 0)
    ordered = decisions.filter(outcome="ORDERED").count()
    orders = Order.objects.filter(trader=system["trader"]).count()
    assert orders == ordered
    figures.append(
        {"fault": "Redis (broker) restarted during a batch: 3 outages, 1 losing its data",
         "outages": len(outages), "outage_seconds": outages, "data_lost_once": True,
         "stranded_signals_handed_over": len(stranded),
         "workers_reconnected": len(reconnects), "beat_survived": True,
         "predict_batch_deliveries": _deliveries(gpu, "signals_app.tasks.predict_batch"),
         "cycles": CycleRun.objects.count(), "signals_traded": passed.count(),
         "orders": orders, "duplicates": duplicates, "lost": lost}
    )  # fmt: skip
