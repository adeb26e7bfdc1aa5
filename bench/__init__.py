"""Benchmarks: `.venv/bin/python -m bench.<name>`.

The benches that start Celery workers purge their broker's queues, so they must never share a
Redis db with a test run (tests.backend picks TEST_REDIS_DB, 15 unless set): they default to
db 7, the benches' own.
"""

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
