"""Flower (the Procfile's `flower` process) monitors the real gpu, trading and default workers: its
API lists each with the queue it consumes."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.db import connection

from tests.conftest import ROOT, _database_url

pytestmark = pytest.mark.e2e
QUEUES = ("gpu", "trading", "default")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def flower(transactional_db, tmp_path):
    """`celery -A botai flower` on a free port, the test's broker and database; yields its URL."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(connection.settings_dict),
        # The API is closed unless Flower has auth configured or is told to open it.
        "FLOWER_UNAUTHENTICATED_API": "true",
    }
    command = [
        sys.executable, "-m", "celery", "-A", "botai", "flower", "--address=127.0.0.1",
        f"--port={port}",
    ]  # fmt: skip
    log = tmp_path / "flower.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    yield f"http://127.0.0.1:{port}", process, log
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _workers(url: str) -> dict:
    """Flower's /api/workers after it has asked the workers again (refresh=1); {} while down."""
    try:
        with urllib.request.urlopen(f"{url}/api/workers?refresh=1", timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError):
        return {}


def test_flower_lists_the_three_workers_with_their_queues(flower, start_worker):
    url, process, log = flower  # booting while the workers start
    workers = {queue: start_worker(queue).name for queue in QUEUES}

    deadline = time.monotonic() + 20
    listed: dict = {}
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        listed = _workers(url)
        if all(listed.get(name, {}).get("active_queues") for name in workers.values()):
            break
        time.sleep(0.5)

    for queue, name in workers.items():
        assert name in listed, f"{name} not in Flower's workers {sorted(listed)}"
        assert [q["name"] for q in listed[name]["active_queues"]] == [queue]
        assert listed[name]["stats"]["pid"] > 0
