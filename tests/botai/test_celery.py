"""Queues, routes, beat rows, and a real worker round trip through Redis."""

import pytest
from django_celery_beat.models import PeriodicTask

from botai.celery import BEAT_ENTRIES, PER_MINUTE_EXPIRES, QUEUES, app
from botai.health import probe


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("signals_app.tasks.run_cycle", "default"),
        ("signals_app.tasks.predict_batch", "gpu"),
        ("signals_app.tasks.generate_signal", "gpu"),
        ("trading_app.tasks.process_signals", "trading"),
        ("trading_app.tasks.sync_positions", "trading"),
        ("botai.health.probe", "default"),
    ],
)
def test_each_task_is_routed_to_its_queue(task, queue):
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue


def test_the_three_queues_are_declared():
    assert {q.name for q in app.conf.task_queues} == set(QUEUES) == {"default", "gpu", "trading"}


@pytest.mark.django_db
def test_beat_rows_exist_after_migrate():
    rows = {row.name: row for row in PeriodicTask.objects.filter(name__in=BEAT_ENTRIES)}
    assert set(rows) == {"signal-cycle", "position-sync"}
    for name, row in rows.items():
        assert row.task == BEAT_ENTRIES[name]["task"]
        assert row.interval.every == 60
        assert row.expire_seconds == PER_MINUTE_EXPIRES
        assert row.enabled


@pytest.mark.e2e
def test_a_real_gpu_worker_runs_a_task_and_returns_through_redis(start_worker):
    worker = start_worker("gpu")
    result = probe.apply_async(queue="gpu").get(timeout=30)
    assert result["pid"] == worker.process.pid


@pytest.mark.e2e
def test_task_log_lines_carry_the_task_id(start_worker):
    worker = start_worker("default")
    result = probe.apply_async(queue="default")
    result.get(timeout=30)
    assert f"[botai.health.probe {result.id}] probe answered" in worker.log.read_text()
