"""Fault injection against the real services: PostgreSQL sessions held and terminated, worker
processes killed, a private Redis stopped and started. Helpers shared by tests/reliability."""

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection

from tests.conftest import ROOT, WorkerProcess, _database_url
from tests.signals_app.test_cycle import tiny_checkpoint  # noqa: F401 (a fixture, used by name)

FIGURES_FILE = ROOT / "data" / "logs" / "reliability.json"
# A replacement worker takes over what a killed one left unacknowledged: Redis hands such a task
# out again once it has been unacknowledged this long (settings: CELERY_VISIBILITY_TIMEOUT), and
# the worker looks for them at start and every CELERY_UNACKED_RESTORE_INTERVAL seconds.
REDELIVERY_SECONDS = 5
FAST_REDELIVERY = {
    "CELERY_VISIBILITY_TIMEOUT": REDELIVERY_SECONDS,
    "CELERY_UNACKED_RESTORE_INTERVAL": 1,
}


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, every: float = 0.1):
    """Poll until condition() is truthy and return its value; TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout}s: {what}")
        time.sleep(every)


def other_sessions(*, waiting_on_lock: bool = False) -> dict[int, str]:
    """{backend pid: current statement} of the other sessions on the test database (the
    workers'), optionally only those blocked on a lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND (NOT %s OR wait_event_type = 'Lock')",
            [waiting_on_lock],
        )
        return dict(cursor.fetchall())


def terminate(pids) -> int:
    """pg_terminate_backend each pid (what a database restart or a network cut does to a
    session); returns how many were terminated."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(p)) FROM unnest(%s) p",
            [list(pids)],
        )
        return cursor.fetchone()[0]


@contextmanager
def held(*statements: tuple[str, list]) -> Iterator[None]:
    """Run `statements` in a separate session's transaction and keep it open (its locks, its
    uncommitted rows) until the block ends, then roll back. A worker that needs one of those rows
    waits at that statement: a deterministic 'mid-work' point to inject a fault at."""
    settings = connection.settings_dict
    session = psycopg.connect(
        dbname=settings["NAME"], user=settings["USER"], password=settings["PASSWORD"] or None,
        host=settings["HOST"] or "127.0.0.1", port=settings["PORT"] or 5432,
    )  # fmt: skip
    try:
        with session.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)
                assert cursor.rowcount, f"the statement touched nothing: {sql} {params}"
        yield
    finally:
        session.rollback()
        session.close()


@pytest.fixture
def spawn_worker(start_worker, transactional_db):
    """Like start_worker, without waiting for a ping: a solo worker that takes a task at once
    cannot answer one while the task waits on a lock. Stopped (if still alive) at teardown."""
    env = {**os.environ, "DATABASE_URL": _database_url(connection.settings_dict)}
    workers: list[WorkerProcess] = []

    def spawn(queues: str, *, name: str, **extra_env) -> WorkerProcess:
        extra = {key: str(value) for key, value in extra_env.items()}
        worker = WorkerProcess(queues=queues, name=name, env={**env, **extra})
        workers.append(worker)
        return worker

    yield spawn
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="session")
def figures() -> Iterator[list[dict]]:
    """What each fault test measured (the fault, cases tried, duplicates, losses): merged into
    data/logs/reliability.json by fault name at the end of the session. RELIABILITY.md quotes it."""
    rows: list[dict] = []
    yield rows
    if not rows:
        return
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    known.update({row["fault"]: {**row, "measured": stamp} for row in rows})
    FIGURES_FILE.write_text(json.dumps(known, indent=2, default=str) + "\n")
