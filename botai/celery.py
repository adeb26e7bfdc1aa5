"""Celery wiring, the one place: queues, routes, task defaults and the periodic schedule.

Settings import the queue and route tables from here; the beat entries below are written to the
database by a data migration (signals_app 0001) so they stay editable in the admin.
"""

import gc
import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botai.settings")

QUEUE_DEFAULT, QUEUE_GPU, QUEUE_TRADING = "default", "gpu", "trading"
QUEUES = (QUEUE_DEFAULT, QUEUE_GPU, QUEUE_TRADING)

CELERY_TASK_QUEUES = tuple(Queue(name, routing_key=name) for name in QUEUES)
CELERY_TASK_ROUTES = {
    "signals_app.tasks.predict_batch": {"queue": QUEUE_GPU},
    "signals_app.tasks.generate_signal": {"queue": QUEUE_GPU},
    "signals_app.tasks.model_status": {"queue": QUEUE_GPU},
    "trading_app.tasks.*": {"queue": QUEUE_TRADING},
}

# A stalled queue drops a stale minute rather than piling them up: each run expires before the next.
PER_MINUTE_EXPIRES = 55
BEAT_ENTRIES = {
    "signal-cycle": {"task": "signals_app.tasks.run_cycle", "every_seconds": 60},
    "position-sync": {"task": "trading_app.tasks.sync_positions", "every_seconds": 60},
}

app = Celery("botai", include=["botai.health"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect  # solo and thread pools run tasks in this process
@worker_process_init.connect  # each prefork pool process
def _freeze_startup_heap(**_kwargs) -> None:
    """What a worker holds after start-up (Django, Celery, pandas, ...) lives as long as it does:
    frozen, it is left out of the full collections a batch's thousands of objects trigger, which
    otherwise rescanned it every time (trading: ~60 ms of GC per 2,000 signals, ~15 frozen)."""
    gc.freeze()
