"""What is up and what is down: database, broker, each queue's workers, beat, model, cycle.

Used by `manage.py botai_status` (the seed's `unified_launcher.py --status`) and the status API.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from botai.celery import BEAT_ENTRIES, QUEUES, app


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


@dataclass
class SystemStatus:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks if check.required)

    @property
    def problems(self) -> list[Check]:
        return [check for check in self.checks if check.required and not check.ok]


def _database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "down", with its message
        return Check("database", False, f"{connection.vendor}: {exc}")
    return Check("database", True, f"{connection.vendor} {connection.settings_dict['NAME']}")


def _broker() -> Check:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001
        return Check("broker", False, f"{settings.CELERY_BROKER_URL}: {exc}")
    return Check("broker", True, _redact(settings.CELERY_BROKER_URL))


def _redact(url: str) -> str:
    """Broker URLs may carry a password; never print it."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def queue_workers(*, timeout: float = 1.5) -> dict[str, list[str]]:
    """Map each declared queue to the workers consuming it right now (celery inspect)."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    workers: dict[str, list[str]] = {queue: [] for queue in QUEUES}
    for worker, queues in replies.items():
        for queue in queues:
            workers.setdefault(queue["name"], []).append(worker)
    return workers


def _queues(broker_ok: bool) -> list[Check]:
    if not broker_ok:
        return [Check(f"queue {q}", False, "broker unreachable") for q in QUEUES]
    workers = queue_workers()
    return [
        Check(f"queue {q}", bool(workers[q]), ", ".join(workers[q]) or "no worker consumes it")
        for q in QUEUES
    ]


def _beat() -> list[Check]:
    checks = []
    tasks = {task.name: task for task in PeriodicTask.objects.filter(name__in=BEAT_ENTRIES)}
    for name in BEAT_ENTRIES:
        task = tasks.get(name)
        if task is None:
            checks.append(Check(f"beat {name}", False, "entry missing: run manage.py migrate"))
            continue
        if not task.enabled:
            checks.append(Check(f"beat {name}", True, "disabled in the admin", required=False))
            continue
        if task.last_run_at is None:
            detail = "never run yet"
            fresh = False
        else:
            age = timezone.now() - task.last_run_at
            detail = f"last run {int(age.total_seconds())} s ago"
            fresh = age < timedelta(seconds=3 * BEAT_ENTRIES[name]["every_seconds"])
        # Beat cannot be pinged; a stale last run is reported but only the workers are required.
        checks.append(Check(f"beat {name}", fresh, detail, required=False))
    return checks


def system_status() -> SystemStatus:
    status = SystemStatus()
    status.checks.append(_database())
    broker = _broker()
    status.checks.append(broker)
    status.checks.extend(_queues(broker.ok))
    if status.checks[0].ok:
        status.checks.extend(_beat())
        status.checks.extend(_ml_checks())
    return status


def _ml_checks() -> list[Check]:
    # Imported here: the status of the model and the cycle is signals_app's to tell.
    from signals_app.selectors import ml_status_checks

    return [Check(**check) for check in ml_status_checks()]
