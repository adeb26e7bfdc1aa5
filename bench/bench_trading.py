"""Accepted signals -> persisted paper orders, through a real trading worker on PostgreSQL.

On a fresh database: M markets with `--candles` synthetic 15m candles each (mlcore.synthetic),
paper accounts, T paper traders each subscribed to its share of the markets, and a real
`celery -A botai worker -Q trading` process. Each round stores one signal per market on the
newest candle (as the gpu batches do) and hands the ids over by task name in batches of
`--batch` (as signals_app does), then waits until every task has finished; the clock runs from
the first send to the last result. Round 1 is all LONG (one entry order per signal); each
further round, one candle later, flips the direction (each signal closes the position and opens
the opposite one: two orders).

Reported: signals/s, persisted orders/s and the worker's CPU seconds per round, the entry rate
and the median reversal rate. The target on 2 CPU cores is >= 2,000 signals/s.

    .venv/bin/python -m bench.bench_trading [--markets 2000] [--traders 4] [--accounts 1]
        [--batch 500] [--candles 120] [--concurrency 1] [--rounds 5]
        [--database-url postgres://postgres@127.0.0.1:5432/botai_bench_trading]
        [--redis-url redis://127.0.0.1:6379/7]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from bench import REDIS_URL, django_on_fresh_database

ROOT = Path(__file__).resolve().parents[1]
TARGET_SIGNALS_PER_SECOND = 2_000
START = datetime(2026, 1, 5, tzinfo=UTC)
STEP = timedelta(minutes=15)


def _start_worker(env: dict, concurrency: int) -> subprocess.Popen:
    log = (ROOT / "data" / "logs" / "bench-trading.log").open("wb")
    pool = ["--pool=solo"] if concurrency == 1 else ["--pool=prefork", f"-c{concurrency}"]
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "botai", "worker", "-Q", "trading",
         "-n", f"bench-trading@{socket.gethostname()}", *pool, "--prefetch-multiplier=1",
         "--without-mingle", "--without-gossip", "--loglevel=WARNING"],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip


def _wait_ready(app, worker: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit("the trading worker exited: see data/logs/bench-trading.log")
        if app.control.ping(timeout=0.5):
            return
    raise SystemExit("the trading worker did not answer in 60 s")


def _setup(*, markets: int, traders: int, n_accounts: int, candles: int) -> list:
    """Markets with candles, paper accounts, traders sharing the markets; returns markets."""
    import numpy as np

    from mlcore.synthetic import generate_candles
    from signals_app.models import Candle, Market, ModelVersion
    from trading_app.models import ExchangeAccount, Trader

    rows = Market.objects.bulk_create(
        Market(
            exchange="bybit", symbol=f"S{i:04d}USDT", ccxt_symbol=f"S{i:04d}/USDT",
            amount_step=Decimal("0.000001"), price_step=Decimal("0.0001"),
            min_amount=Decimal("0.000001"), min_notional=Decimal("1"),
        )
        for i in range(markets)
    )  # fmt: skip
    prices = np.geomspace(0.5, 50_000.0, markets)
    pairs = list(zip(rows, prices, strict=True))
    for market, price in tqdm(pairs, desc="candles", unit="market", mininterval=2):
        frame = generate_candles(candles, seed=market.pk, start=START, start_price=float(price))
        Candle.objects.bulk_create(
            Candle(market=market, open_time=t, open=r.open, high=r.high, low=r.low,
                   close=r.close, volume=r.volume)
            for t, r in zip(frame.index, frame.itertuples(), strict=True)
        )  # fmt: skip
    ModelVersion.objects.create(name="bench", checkpoint_path="-", fingerprint="bench")
    accounts = [
        ExchangeAccount.objects.create(
            name=f"paper-bench-{i}", exchange="bybit", paper_initial_balance=Decimal(10) ** 12
        )
        for i in range(n_accounts)
    ]
    for i in range(traders):
        trader = Trader.objects.create(
            name=f"bench_{i}", account=accounts[i % n_accounts], initial_capital=Decimal(10) ** 9,
            per_trade_percentage=0.01, max_positions=markets,
        )  # fmt: skip
        trader.markets.set(rows[i::traders])
    return rows


def _signals(markets: list, *, kind: str) -> list[int]:
    """One ACCEPTED signal per market on its newest candle, written as the gpu batch writes them."""
    from signals_app.models import Candle, ModelVersion, Prediction, Signal

    version = ModelVersion.objects.get(fingerprint="bench")
    latest = {
        c.market_id: c
        for c in Candle.objects.filter(market__in=markets).order_by("market_id", "-open_time")
        .distinct("market_id")
    }  # fmt: skip
    predictions = Prediction.objects.bulk_create(
        Prediction(
            market_id=m.pk, candle_time=latest[m.pk].open_time, model_version=version,
            close=latest[m.pk].close, returns={"4": 0.004 if kind == "LONG" else -0.004},
            probabilities={"4": [0.05, 0.05, 0.9] if kind == "LONG" else [0.9, 0.05, 0.05]},
            risk={"max_drawdown_1h": 0.004, "max_rally_1h": 0.004}, direction=kind,
            confidence=0.95, strength=0.95, latency_ms=1.0,
        )
        for m in markets
    )  # fmt: skip
    signals = Signal.objects.bulk_create(
        Signal(
            market_id=p.market_id, prediction=p, candle_time=p.candle_time, model_version=version,
            type=kind, confidence=0.95, strength=0.95, entry_price=Decimal(repr(p.close)),
            expires_at=p.candle_time + 2 * STEP, status=Signal.Status.ACCEPTED,
        )
        for p in predictions
    )  # fmt: skip
    return [s.pk for s in signals]


def _next_candle(markets: list) -> None:
    from signals_app.models import Candle

    latest = Candle.objects.filter(market__in=markets).order_by("market_id", "-open_time")
    Candle.objects.bulk_create(
        Candle(market_id=c.market_id, open_time=c.open_time + STEP, open=c.close,
               high=c.close * 1.001, low=c.close * 0.999, close=c.close, volume=1.0)
        for c in latest.distinct("market_id")
    )  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (Linux /proc)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return total + sum(_cpu_seconds(int(child)) for child in children)


def _postgres_cpu_seconds() -> float:
    """CPU of every local postgres process so far: the database's share of a round."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        name, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if name.startswith("postgres"):
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _round(app, ids: list[int], *, batch: int) -> float:
    chunks = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    start = time.perf_counter()
    results = [app.send_task("trading_app.tasks.process_signals", args=[c]) for c in chunks]
    for result in results:
        result.get(timeout=600)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markets", type=int, default=2000)
    parser.add_argument("--traders", type=int, default=4)
    parser.add_argument("--accounts", type=int, default=1, help="paper accounts (traders share)")
    parser.add_argument("--batch", type=int, default=500, help="signal ids per task")
    parser.add_argument("--candles", type=int, default=120, help="stored candles per market")
    parser.add_argument("--concurrency", type=int, default=1, help="trading worker processes")
    parser.add_argument("--rounds", type=int, default=5, help="round 1 enters, the rest reverse")
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/botai_bench_trading"
    )
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args(argv)

    env = django_on_fresh_database(database_url=args.database_url, redis_url=args.redis_url)
    from django.db import connection

    from botai.celery import app
    from trading_app.models import Order, Position, TradeDecision

    markets = _setup(
        markets=args.markets, traders=args.traders, n_accounts=args.accounts, candles=args.candles
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # planner statistics, as autovacuum keeps them in production
    worker = _start_worker(env, args.concurrency)
    try:
        _wait_ready(app, worker)
        # The worker imports the engine and opens its connection on its first task: not timed.
        app.send_task("trading_app.tasks.process_signals", args=[[]]).get(timeout=60)
        print(
            f"{args.markets} markets x {args.candles} candles, {args.traders} paper traders on "
            f"{args.accounts} paper account(s), "
            f"batches of {args.batch}, trading worker concurrency {args.concurrency}, "
            f"PostgreSQL {urlparse(args.database_url).path[1:]}"
        )
        rates: dict[str, list[float]] = {"entries": [], "reversals": []}
        kinds = (
            ["LONG"]
            + ["SHORT", "LONG"] * ((args.rounds - 1) // 2)
            + ["SHORT"] * ((args.rounds - 1) % 2)
        )
        for number, kind in enumerate(kinds, start=1):
            if number > 1:
                _next_candle(markets)
            ids = _signals(markets, kind=kind)
            orders_before = Order.objects.count()
            cpu_before, db_before = _cpu_seconds(worker.pid), _postgres_cpu_seconds()
            seconds = _round(app, ids, batch=args.batch)
            cpu = _cpu_seconds(worker.pid) - cpu_before
            db_cpu = _postgres_cpu_seconds() - db_before
            orders = Order.objects.count() - orders_before
            label = "entries" if number == 1 else "reversals"
            rates[label].append(len(ids) / seconds)
            print(
                f"  round {number} {label:<9} {kind:<5} {len(ids)} signals in {seconds:.3f} s: "
                f"{len(ids) / seconds:,.0f} signals/s, {orders / seconds:,.0f} orders/s "
                f"({orders} orders; CPU s: worker {cpu:.2f}, PostgreSQL {db_cpu:.2f})"
            )
        decisions = TradeDecision.objects.values_list("outcome", flat=True)
        print(
            f"persisted: {Order.objects.filter(status='FILLED').count()} filled orders, "
            f"{Position.objects.filter(status='OPEN').count()} open positions, "
            f"{Position.objects.filter(status='CLOSED').count()} closed, decisions "
            f"{ {o: list(decisions).count(o) for o in set(decisions)} }"
        )
        entries = rates["entries"][0]
        reversals = statistics.median(rates["reversals"]) if rates["reversals"] else entries
        print(f"entries: {entries:,.0f} signals/s; reversals (median): {reversals:,.0f} signals/s")
        worst = min(entries, reversals)
        verdict = "ok" if worst >= TARGET_SIGNALS_PER_SECOND else "MISSED"
        print(f"target >= {TARGET_SIGNALS_PER_SECOND:,} signals/s: {worst:,.0f} ({verdict})")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        app.control.purge()
    return 0


if __name__ == "__main__":
    sys.exit(main())
