"""The full per-minute cycle for 9, 100 and 500 markets on PostgreSQL, through real gpu workers.

For each size, on a fresh database: a first minute backfills every market from the simulated
(local) source and predicts it (reported, not a target); then the measured minute brings ONE new
closed candle per market: candle sync -> select -> dispatch -> features + inference on the gpu
workers -> Predictions and Signals persisted; then a cache-hit minute (no new candle).

Stage seconds: sync/select/dispatch run in the cycle process; model/candles/inference/persist/
signals are summed over the gpu batches (two workers run batches in parallel, so their sum can
exceed the wall time). "end to end" is the wall time from the cycle's start until its last batch
has reported.

    .venv/bin/python -m bench.bench_cycle [--sizes 9 100 500] [--workers 2] [--model PATH]
        [--database-url postgres://postgres@127.0.0.1:5432/botai_bench_cycle]
        [--redis-url redis://127.0.0.1:6379/7]

Without --model a checkpoint of the production architecture (mlcore.train preset "default",
1 epoch on synthetic candles: inference cost depends on the architecture, not on the training)
is trained once into data/bench/ and reused.
"""

import argparse
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from bench import REDIS_URL, benchmark_checkpoint, django_on_fresh_database

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"new_9": 2.0, "new_500": 60.0, "hit_9": 0.2}
CLOCK = datetime(2026, 1, 5, 0, 1, tzinfo=UTC)  # the cycles run on this clock, 15 min apart


def _start_workers(n: int, env: dict) -> list[subprocess.Popen]:
    log_dir = ROOT / "data" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = []
    for i in range(n):
        name = f"bench-gpu-{i}@{socket.gethostname()}"
        log = (log_dir / f"bench-gpu-{i}.log").open("wb")
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "botai",
                    "worker",
                    "-Q",
                    "gpu",
                    "-n",
                    name,
                    "--pool=solo",
                    "--prefetch-multiplier=1",
                    "--without-mingle",
                    "--without-gossip",
                    "--loglevel=WARNING",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )  # fmt: skip
        )
    return workers


def _warm(app, n_workers: int) -> None:
    """Every gpu worker process loads the model before anything is timed."""
    from signals_app.tasks import model_status

    pids: set[int] = set()
    deadline = time.monotonic() + 120
    while len(pids) < n_workers and time.monotonic() < deadline:
        results = [model_status.delay() for _ in range(2 * n_workers)]
        for result in results:
            report = result.get(timeout=120)
            if not report.get("loaded"):
                raise SystemExit(f"the gpu worker cannot load the model: {report}")
            pids.add(report["pid"])
    if len(pids) < n_workers:
        raise SystemExit(f"only {len(pids)} of {n_workers} gpu workers answered")


def _cycle(now: datetime):
    from signals_app.models import CycleRun
    from signals_app.services.cycle import cycle_run
    from signals_app.tasks import predict_batch

    def dispatch(market_ids, candle_time, run_id, index):
        predict_batch.delay(market_ids, candle_time.isoformat(), run_id, index)

    started = datetime.now(UTC)
    run = cycle_run(now=now, dispatch=dispatch)
    while run.finished_at is None:
        time.sleep(0.02)
        run = CycleRun.objects.get(pk=run.pk)
    # finished_at is stamped by whichever process closed the run (same host clock).
    return run, (run.finished_at - started).total_seconds()


def _markets(n: int) -> None:
    from signals_app.models import Candle, CycleRun, Market, Prediction, Signal

    for model in (Signal, Prediction, Candle, CycleRun, Market):
        model.objects.all().delete()
    Market.objects.bulk_create(
        Market(exchange="bybit", symbol=f"S{i:03d}USDT", ccxt_symbol=f"S{i:03d}/USDT")
        for i in range(n)
    )


def _line(label: str, run, seconds: float) -> str:
    stages = " ".join(f"{k}={v:.3f}" for k, v in run.stage_seconds.items())
    return (
        f"  {label:<22} end-to-end {seconds:7.3f} s | {run.status:<7} new={run.markets_new:<4} "
        f"predictions={run.predictions:<4} hits={run.cache_hits:<4} batches={run.batches:<3} "
        f"errors={len(run.errors)} | {stages}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[9, 100, 500])
    parser.add_argument("--workers", type=int, default=2, help="gpu worker processes")
    parser.add_argument("--model", help="checkpoint to serve (default: see the module doc)")
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/botai_bench_cycle"
    )
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args(argv)

    model = benchmark_checkpoint(
        args.model, name="cycle-default-1epoch", epochs=1, train_args=["--threads", "2"]
    )
    env = django_on_fresh_database(
        database_url=args.database_url,
        redis_url=args.redis_url,
        MODEL_PATH=str(model),
        ML_TORCH_THREADS="1",  # two solo workers on two cores: one thread each
        MARKET_DATA_SOURCE="simulated",
    )
    from botai.celery import app
    from signals_app.models import MLConfig

    config = MLConfig.load()
    config.device, config.model_path = "cpu", ""
    config.save()
    workers = _start_workers(args.workers, env)
    try:
        _warm(app, args.workers)
        print(
            f"model {model.name}, {args.workers} gpu workers (solo, 1 torch thread each), "
            f"batch_size {config.batch_size}, PostgreSQL {urlparse(args.database_url).path[1:]}"
        )
        results = {}
        for n in args.sizes:
            _markets(n)
            print(f"{n} markets")
            run, seconds = _cycle(CLOCK)
            print(_line("first minute (backfill)", run, seconds))
            run, seconds = _cycle(CLOCK + timedelta(minutes=15))
            print(_line("new candle", run, seconds))
            results[f"new_{n}"] = seconds
            run, seconds = _cycle(CLOCK + timedelta(minutes=16))
            print(_line("cache hit", run, seconds))
            results[f"hit_{n}"] = seconds
        for key, target in TARGETS.items():
            if key in results:
                verdict = "ok" if results[key] <= target else "MISSED"
                print(f"target {key}: {results[key]:.3f} s <= {target} s: {verdict}")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        app.control.purge()
    return 0


if __name__ == "__main__":
    sys.exit(main())
