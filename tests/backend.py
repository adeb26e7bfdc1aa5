"""`make test`: pick the services the suite talks to, say which on the first line, run pytest.

PostgreSQL and Redis on 127.0.0.1 when they answer (this machine and CI); elsewhere SQLite and the
embedded Redis, started here for the run.
"""

import os
import socket
import sys
from pathlib import Path

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


def select() -> str:
    """Point the environment at the services this run uses and describe them in one line."""
    redis_db = os.environ.get("TEST_REDIS_DB", "15")
    if "DATABASE_URL" not in os.environ and _answers(5432):
        os.environ["DATABASE_URL"] = POSTGRES_URL
    if "CELERY_BROKER_URL" not in os.environ and "REDIS_URL" not in os.environ:
        if _answers(6379):
            os.environ["REDIS_URL"] = REDIS_TEST_URL.format(db=redis_db)
        else:
            os.environ["EMBEDDED_REDIS_PORT"] = str(FALLBACK_REDIS_PORT)
    database = "PostgreSQL" if "postgres" in os.environ.get("DATABASE_URL", "") else "SQLite"
    broker = os.environ.get("REDIS_URL") or os.environ.get("CELERY_BROKER_URL")
    return f"test backend: {database} + {broker or f'embedded Redis :{FALLBACK_REDIS_PORT}'}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--which"]:
        print(select(), flush=True)
        return 0
    description = select()
    redis_process = None
    if "EMBEDDED_REDIS_PORT" in os.environ and "REDIS_URL" not in os.environ:
        from botai import embedded_redis

        redis_process = embedded_redis.start(
            port=FALLBACK_REDIS_PORT, directory=ROOT / "data" / "test-redis"
        )
    print(description, flush=True)
    import pytest

    try:
        return pytest.main(argv)
    finally:
        if redis_process is not None:
            embedded_redis.stop(redis_process)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
