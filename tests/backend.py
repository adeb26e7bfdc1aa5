"""`make test`: pick the services the suite talks to, say which on the first line, run pytest.

PostgreSQL and Redis on 127.0.0.1 when they answer (this machine and CI); elsewhere SQLite and the
embedded Redis, started here for the run.
"""

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_TEST_URL = "redis://127.0.0.1:6379/{db}"
FALLBACK_REDIS_PORT = 6391


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    redis_process = None
    redis_db = os.environ.get("TEST_REDIS_DB", "15")
    if "DATABASE_URL" not in os.environ and _answers(5432):
        os.environ["DATABASE_URL"] = POSTGRES_URL
    if "CELERY_BROKER_URL" not in os.environ and _answers(6379):
        os.environ["REDIS_URL"] = REDIS_TEST_URL.format(db=redis_db)
    if "REDIS_URL" not in os.environ and "CELERY_BROKER_URL" not in os.environ:
        from botai import embedded_redis

        os.environ["EMBEDDED_REDIS_PORT"] = str(FALLBACK_REDIS_PORT)
        redis_process = embedded_redis.start(
            port=FALLBACK_REDIS_PORT, directory=ROOT / "data" / "test-redis"
        )
    database = "PostgreSQL" if "postgres" in os.environ.get("DATABASE_URL", "") else "SQLite"
    broker = os.environ.get("REDIS_URL") or f"embedded Redis :{FALLBACK_REDIS_PORT}"
    print(f"test backend: {database} + {broker}", flush=True)
    try:
        return pytest.main(argv)
    finally:
        if redis_process is not None:
            embedded_redis.stop(redis_process)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
