"""Benchmarks: `.venv/bin/python -m bench.<name>`.

The benches that start Celery workers purge their broker's queues, so they must never share a
Redis db with a test run (tests.backend picks TEST_REDIS_DB, 15 unless set): they default to
db 7, the benches' own.
"""

REDIS_URL = "redis://127.0.0.1:6379/7"
