"""End-to-end backtest speed: `manage.py backtest` over BTC/USDT and ETH/USDT 15m candles.

The candles are ../shared/data/ohlcv/{BTC,ETH}_USDT-15m.csv (read with --data): 2025-01-01 to
2025-10-31, 29,184 candles per market, i.e. ten months, not the year the target names. No full
year of 15m candles can be had from ../shared either: the 5m files (which would resample to 15m)
start only a day earlier, on 2024-12-31, and the 1h files, from 2024-09-14, are coarser than 15m.
The figure is printed for those ten months and scaled to a year linearly.
The first ~450 candles of each file have too little history for the model (its warm-up and
window) and produce no prediction, as they would live.

Everything runs as `manage.py backtest` runs it, on a fresh PostgreSQL database: candles from
CSV, Predictor.predict_series, the ML signal processor on every step, the trading services on
the steps with an accepted signal or an open position, the report (JSON, HTML with its chart).
MLConfig keeps its defaults (min_confidence 0.45, min_signal_strength 0.2, MEDIUM); the trader
has the traders.yaml defaults. How much goes through the trading services depends on how often
the model trades, so the counts are printed next to the time.

Without --model the production architecture (mlcore.train preset "default") is trained for
3 epochs on the same BTC/ETH candles before 2025-03-01 and cached in data/bench/: the first two
months of the backtest are therefore in-sample; this measures speed, not skill.

    .venv/bin/python -m bench.bench_backtest [--model PATH] [--from 2025-01-01] [--to 2025-10-31]
        [--threads 1]
        [--database-url postgres://postgres@127.0.0.1:5432/botai_bench_backtest]
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path

from bench import benchmark_checkpoint, django_on_fresh_database

ROOT = Path(__file__).resolve().parents[1]
OHLCV = Path(os.environ.get("BOTAI_SHARED_DATA", ROOT.parent / "shared" / "data")) / "ohlcv"
TARGET_SECONDS_PER_YEAR = 120.0


def _database_cpu() -> float:
    """CPU seconds so far of this process's PostgreSQL backend (same host)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _trader():
    from decimal import Decimal

    from signals_app.models import Market
    from trading_app.models import ExchangeAccount, Trader

    markets = [
        Market.objects.create(
            exchange="bybit",
            symbol=f"{base}USDT",
            ccxt_symbol=f"{base}/USDT",
            timeframe="15m",
            amount_step=Decimal("0.00001"),
            price_step=Decimal("0.01"),
            min_notional=Decimal("5"),
        )  # fmt: skip
        for base in ("BTC", "ETH")
    ]
    account = ExchangeAccount.objects.create(name="paper", mode=ExchangeAccount.Mode.PAPER)
    trader = Trader.objects.create(name="multi_crypto_10", account=account)
    trader.markets.set(markets)
    return trader


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint (default: see the module doc)")
    parser.add_argument("--from", dest="start", default="2025-01-01")
    parser.add_argument("--to", dest="end", default="2025-10-31")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads of the model thread (ML_TORCH_THREADS; the replay uses the other core)",
    )  # fmt: skip
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/botai_bench_backtest"
    )
    args = parser.parse_args(argv)

    model = benchmark_checkpoint(
        args.model, name="backtest-default-3epochs", epochs=3,
        train_args=["--csv", str(OHLCV / "BTC_USDT-15m.csv"), "--csv",
                    str(OHLCV / "ETH_USDT-15m.csv"), "--until", "2025-03-01"],
    )  # fmt: skip
    django_on_fresh_database(
        database_url=args.database_url, MODEL_PATH=str(model), ML_TORCH_THREADS=str(args.threads)
    )
    import torch
    from django.core.management import call_command

    from signals_app.models import MLConfig
    from trading_app.models import BacktestRun

    config = MLConfig.load()
    config.device, config.model_path = "cpu", ""
    config.save()
    trader = _trader()

    load = os.getloadavg()[0]
    database_cpu = _database_cpu()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    cpu_started = time.process_time()
    call_command(
        "backtest", "--trader", trader.name, "--from", args.start, "--to", args.end,
        "--data", str(OHLCV),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    database_cpu = _database_cpu() - database_cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    model_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    run = BacktestRun.objects.get()
    replay = run.metrics["replay"]
    days = (run.end - run.start).total_seconds() / 86400
    per_year = seconds * 365.25 / days
    stages = " ".join(f"{k}={v:.1f}s" for k, v in replay["stage_seconds"].items())
    print(
        f"model {model.name}; {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"load average before the run {load:.1f}"
    )
    print(
        f"{args.start} .. {args.end} ({days:.0f} days), 2 markets: {run.steps} candle times, "
        f"{replay['service_steps']} through the trading services, "
        f"{replay['signals_accepted']} accepted signals, {run.orders} orders, "
        f"{run.metrics['strategy']['trades']} trades"
    )
    print(f"stages: {stages}; position sync calls by reason: {replay['sync_reasons']}")
    # The replay and its PostgreSQL backend take turns (each query waits for its answer) while
    # the model process runs beside them: on two cores nobody else uses, the run would take
    # about max(model, replay + PostgreSQL).
    idle = max(model_cpu, cpu + database_cpu)
    print(
        f"CPU seconds: replay process {cpu:.1f}, model process {model_cpu:.1f}, PostgreSQL "
        f"backend {database_cpu:.1f} -> on two idle cores about {idle:.1f} s "
        f"({idle * 365.25 / days:.1f} s per year)"
    )
    print(
        f"end to end {seconds:.1f} s wall; "
        f"scaled to a year {per_year:.1f} s (target <= {TARGET_SECONDS_PER_YEAR:.0f} s: "
        f"{'met' if per_year <= TARGET_SECONDS_PER_YEAR else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
