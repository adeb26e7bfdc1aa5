"""Benchmarks: `.venv/bin/python -m bench.<name>`.

The benches that start Celery workers purge their broker's queues, so they must never share a
Redis db with a test run (tests.backend picks TEST_REDIS_DB, 15 unless set): they default to
db 7, the benches' own.
"""

import os
import subprocess
import sys
from pathlib import Path

REDIS_URL = "redis://127.0.0.1:6379/7"
ROOT = Path(__file__).resolve().parents[1]


def benchmark_checkpoint(
    path: str | None, *, name: str, epochs: int, train_args: list[str]
) -> Path:
    """`path` when given, else data/bench/<name>.pt, trained once by mlcore.train (default)."""
    if path:
        return Path(path)
    out = ROOT / "data" / "bench" / f"{name}.pt"
    if not out.exists():
        print(f"training the benchmark checkpoint (preset default, {epochs} epochs) into {out}")
        subprocess.run(
            [sys.executable, "-m", "mlcore.train", "--preset", "default", "--epochs", str(epochs),
             *train_args, "--out", str(out)],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return out


def fresh_database(url: str) -> None:
    """Drop and recreate the bench's own PostgreSQL database so every run starts empty."""
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def django_on_fresh_database(
    *, database_url: str, redis_url: str | None = None, **settings: str
) -> dict[str, str]:
    """Recreate the bench database, set this process up as Django on it (migrated) and, with
    redis_url, as a Celery client of a purged broker there. Returns the environment, which the
    workers the bench starts get too; `settings` are further environment variables."""
    fresh_database(database_url)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "botai.settings",
        **settings,
    }
    if redis_url:
        for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            env[name] = redis_url
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if redis_url:
        from botai.celery import app

        app.control.purge()
    return env
