"""Fixtures shared by the whole suite."""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data sits beside the checkout in CI and on the dev machine; a user's clone lacks it.
SHARED_DATA = Path(os.environ.get("BOTAI_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data directory, or skip when this machine does not have it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA} (set BOTAI_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(shared_data, tmp_path_factory) -> Path:
    """A real tiny model trained on BTC and ETH 15m candles before 2025-05 (the period the
    end-to-end tests replay comes after)."""
    from dataclasses import replace

    from mlcore.train import PRESETS, load_frames, train

    ohlcv = shared_data / "ohlcv"
    frames = load_frames(
        [ohlcv / "BTC_USDT-15m.csv", ohlcv / "ETH_USDT-15m.csv"],
        timeframe="15m",
        until=pd.Timestamp("2025-05-01", tz="UTC"),
    )
    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    train(frames=frames, config=replace(PRESETS["tiny"], num_threads=1), out=out, progress=False)
    return out


def queued_tasks(queue: str) -> list[tuple[str, list]]:
    """(task name, args) of the messages waiting in a queue of the test's Redis broker."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    messages = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        messages.append((message["headers"]["task"], args))
    return messages


class WorkerProcess:
    """A real `celery -A botai worker` subprocess on the test database and broker."""

    def __init__(
        self, *, queues: str, name: str, env: dict, pool: str = "solo", concurrency: int = 1
    ):
        self.name = f"{name}@{socket.gethostname()}"
        self.log = ROOT / "data" / "logs" / f"test-worker-{name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "celery", "-A", "botai", "worker", "-Q", queues, "-n", self.name,
            f"--pool={pool}", f"--concurrency={concurrency}", "--prefetch-multiplier=1",
            "--without-mingle", "--without-gossip", "--loglevel=INFO",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)

    def wait_ready(self, timeout: float = 60) -> None:
        from botai.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: {self.log.read_text()[-2000:]}")
            if app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise TimeoutError(
            f"worker {self.name} not ready in {timeout}s: {self.log.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def _database_url(settings_dict: dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    credentials = settings_dict["USER"] + (
        f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else ""
    )
    return (
        f"postgres://{credentials}@{settings_dict['HOST'] or '127.0.0.1'}:"
        f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
    )


@pytest.fixture
def start_worker(transactional_db, tmp_path):
    """Start real worker subprocesses: `start_worker("gpu")`.

    Workers see committed data only, hence transactional_db. Queues are purged first so no stale
    task from an earlier run is consumed."""
    from django.db import connection

    from botai.celery import app

    app.control.purge()
    env = {**os.environ, "DATABASE_URL": _database_url(connection.settings_dict)}
    workers: list[WorkerProcess] = []

    def start(
        queues: str,
        *,
        name: str | None = None,
        pool: str = "solo",
        concurrency: int = 1,
        **extra_env,
    ):
        worker = WorkerProcess(
            queues=queues,
            name=name or f"test-{queues.replace(',', '-')}-{len(workers)}",
            env={**env, **{key: str(value) for key, value in extra_env.items()}},
            pool=pool,
            concurrency=concurrency,
        )
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()
    app.control.purge()
