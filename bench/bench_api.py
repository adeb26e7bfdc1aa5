"""API latency under load: gunicorn (the Procfile's web process) on 127.0.0.1 against PostgreSQL
with demo rows, driven at a fixed rate by an open-loop asyncio client; p50/p99 per endpoint.

    .venv/bin/python -m bench.bench_api [--rate 200] [--seconds 15] [--workers 2 --threads 4]

Four rows, each judged against the target: the status, a predictions page as a polling dashboard
asks for it (served from the 2-second page cache after the first request), and two where every
request is a distinct URL, so each one builds its page as users with varied queries get it: one
without filters, one with a time range and a model version (the FilterSet and its validation).

The client sends request i at start + i/rate whatever the server does (no coordinated omission)
and measures each latency from that scheduled instant to the last byte of the response. Bounded
in count (rate x seconds per endpoint) and time (each request times out after 5 s). It needs
PostgreSQL and Redis on 127.0.0.1 (BENCH_DATABASE_URL, BENCH_REDIS_URL) and uses a database of its
own, `botai_bench`, which it recreates.
"""

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from tqdm import tqdm

import bench

ROOT = Path(__file__).resolve().parents[1]
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/botai_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", bench.REDIS_URL)
PREDICTIONS = "/api/v1/ml/predictions/BTCUSDT"
# name -> URL; {i} is the request's index, {since} and {until} a day's window ending i minutes
# before the newest candle (distinct for every request), {version} the seeded model version.
ENDPOINTS = {
    "status": "/api/v1/ml/status",
    "predictions, cached page": PREDICTIONS,
    "predictions, page built per request": PREDICTIONS + "?request={i}",
    "predictions, filtered, built per request": (
        PREDICTIONS + "?since={since}&until={until}&model_version={version}"
    ),
}
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "DOTUSDT",
           "LINKUSDT")  # fmt: skip
DAYS_OF_HISTORY = 30  # 15m predictions per market: 2880 rows each, ~26k in all
TARGET_P99_MS = 15.0
REQUEST_TIMEOUT = 5.0


def server_env() -> dict[str, str]:
    # Production-like: DEBUG off (no query log), plain HTTP on the loopback.
    return {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DJANGO_SESSION_COOKIE_SECURE": "false",
        "DJANGO_CSRF_COOKIE_SECURE": "false",
    }


def seed() -> dict:
    """Migrate the bench database and write a month of demo rows through the Django models."""
    os.environ.update(server_env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botai.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from signals_app.models import CycleRun, Market, MLConfig, ModelVersion, Prediction

    call_command("migrate", verbosity=0)
    MLConfig.load()
    version = ModelVersion.objects.create(
        name="bench", checkpoint_path="models/bench.pt", fingerprint="b" * 64, active=True,
        metrics={"val_accuracy": 0.5},
    )  # fmt: skip
    markets = [
        Market.objects.create(exchange="bybit", symbol=s, ccxt_symbol=f"{s[:-4]}/USDT")
        for s in SYMBOLS
    ]
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    steps = DAYS_OF_HISTORY * 96
    rows = [
        Prediction(
            market=market,
            candle_time=end - timedelta(minutes=15 * i),
            model_version=version,
            close=100.0 + i % 7,
            returns={"1": 0.001, "4": 0.002, "16": -0.001, "48": 0.003},
            probabilities={h: [0.3, 0.3, 0.4] for h in ("1", "4", "16", "48")},
            risk={"drawdown_1h": 0.01, "rally_1h": 0.012, "drawdown_4h": 0.02, "rally_4h": 0.03},
            direction="LONG",
            confidence=0.4,
            strength=0.3,
            latency_ms=40.0,
        )  # fmt: skip
        for market in markets
        for i in range(steps)
    ]
    for start in tqdm(range(0, len(rows), 5000), desc="seed predictions", unit="batch"):
        Prediction.objects.bulk_create(rows[start : start + 5000])
    CycleRun.objects.bulk_create(
        CycleRun(
            started_at=end - timedelta(minutes=i),
            finished_at=end - timedelta(minutes=i) + timedelta(seconds=3),
            status="OK",
            markets=9,
            markets_new=9 if i % 15 == 0 else 0,
            predictions=9 if i % 15 == 0 else 0,
            cache_hits=0 if i % 15 == 0 else 9,
            stage_seconds={"sync": 0.4, "inference": 1.9},
        )  # fmt: skip
        for i in range(24 * 60)
    )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # what autovacuum does soon after a bulk load
    return {
        "predictions": len(rows), "cycle_runs": 24 * 60, "newest": end, "version": version.pk,
    }  # fmt: skip


def url(template: str, index: int, *, newest: datetime, version: int) -> str:
    until = newest - timedelta(minutes=index)
    since = until - timedelta(days=1)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return template.format(
        i=index, since=since.strftime(iso), until=until.strftime(iso), version=version
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(*, port: int, workers: int, threads: int) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "gunicorn", "botai.wsgi", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--threads", str(threads),
        "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=server_env(), start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("gunicorn exited before listening") from None
            time.sleep(0.2)
    stop(process)
    raise TimeoutError("gunicorn did not listen within 60 s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def cpu_seconds(master: int) -> float:
    """User + system CPU of gunicorn's master and workers (its children), from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a process that just exited
        pid, ppid = int(stat.parent.name), int(fields[1])
        if master in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Connection:
    """One keep-alive HTTP/1.1 connection; tiny on purpose so the client costs little CPU."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        for attempt in (1, 2):  # a keep-alive connection the server closed is reopened once
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n"
                .encode()
            )  # fmt: skip
            try:
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
                continue
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
            await self.reader.readexactly(int(headers.get("content-length", 0)))
            if headers.get("connection") == "close":
                self.close()
            return int(lines[0].split()[1])
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Result:
    name: str
    sent: int
    latencies_ms: list[float]
    errors: int
    achieved_rate: float
    server_cpu_ms: float  # gunicorn CPU per request, whatever else the machine runs

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(*, port: int, master: int, name: str, paths, rate: float, seconds: float) -> Result:
    """Open loop: request i, to paths(i), starts at t0 + i/rate on a free pooled connection."""
    total = int(rate * seconds)
    pool: list[Connection] = []
    latencies: list[float] = []
    errors = 0

    async def one(scheduled: float, index: int) -> None:
        nonlocal errors
        connection = pool.pop() if pool else Connection(port)
        try:
            code = await asyncio.wait_for(connection.get(paths(index)), REQUEST_TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            connection.close()
            errors += 1
            return
        latencies.append((time.perf_counter() - scheduled) * 1000)
        if code != 200:
            errors += 1
        pool.append(connection)

    tasks = []
    cpu = cpu_seconds(master)
    start = time.perf_counter()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for connection in pool:
        connection.close()
    server_cpu_ms = (cpu_seconds(master) - cpu) / total * 1000
    return Result(name, total, latencies, errors, total / elapsed, server_cpu_ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="per endpoint")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (Procfile: 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads each (Procfile: 4)")
    args = parser.parse_args()

    bench.fresh_database(DATABASE_URL)
    counts = seed()
    port = free_port()
    server = start_gunicorn(port=port, workers=args.workers, threads=args.threads)
    paths = {
        name: partial(url, template, newest=counts["newest"], version=counts["version"])
        for name, template in ENDPOINTS.items()
    }
    try:
        # Warm up: imports, connections, the cached worker probe of each gunicorn worker; with
        # negative indexes, so that no measured URL was asked for before.
        for name, path in paths.items():
            warm = partial(lambda i, path: path(-1 - i), path=path)
            asyncio.run(
                drive(port=port, master=server.pid, name=name, paths=warm, rate=20, seconds=2)
            )
        results = [
            asyncio.run(
                drive(
                    port=port,
                    master=server.pid,
                    name=name,
                    paths=paths[name],
                    rate=args.rate,
                    seconds=args.seconds,
                )
            )
            for name in tqdm(ENDPOINTS, desc="endpoints", unit="endpoint")
        ]
    finally:
        stop(server)

    print(
        f"\ngunicorn {args.workers} workers x {args.threads} threads, PostgreSQL "
        f"({counts['predictions']} predictions, {counts['cycle_runs']} cycle runs), "
        f"{os.cpu_count()} CPUs, {args.rate:.0f} req/s for {args.seconds:.0f} s per endpoint"
    )
    print(f"{'endpoint':41} {'sent':>6} {'rate/s':>7} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'cpu ms/req':>10}  p99 <= {TARGET_P99_MS:.0f} ms")  # fmt: skip
    ok = True
    for result in results:
        if not result.latencies_ms:
            print(f"{result.name:41} {result.sent:6d}: every request failed  NOT met")
            ok = False
            continue
        p50, p99 = result.percentile(0.50), result.percentile(0.99)
        met = not result.errors and p99 <= TARGET_P99_MS
        ok = ok and met
        print(
            f"{result.name:41} {result.sent:6d} {result.achieved_rate:7.1f} {result.errors:6d} "
            f"{p50:7.2f} {p99:7.2f} {max(result.latencies_ms):7.2f} {result.server_cpu_ms:10.2f}"
            f"  {'met' if met else 'NOT met'}"
        )
    for name, template in ENDPOINTS.items():
        print(f"  {name}: GET {template}")
    print(
        f"target p99 <= {TARGET_P99_MS} ms without errors, every row: {'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
