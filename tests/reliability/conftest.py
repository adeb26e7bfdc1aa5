"""Fault injection against the real services: PostgreSQL sessions held and terminated, worker
processes killed, a private Redis stopped and started. Helpers shared by tests/reliability."""

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from signals_app.models import CycleRun, MLConfig, Signal
from tests.conftest import ROOT, WorkerProcess, _database_url
from tests.trading_app import factories as f
from trading_app.models import Balance, Order, Position, TradeDecision

FIGURES_FILE = ROOT / "data" / "logs" / "reliability.json"
# A replacement worker takes over what a killed one left unacknowledged: Redis hands such a task
# out again once it has been unacknowledged this long (settings: CELERY_VISIBILITY_TIMEOUT), and
# the worker looks for them at start and every CELERY_UNACKED_RESTORE_INTERVAL seconds.
REDELIVERY_SECONDS = 5
FAST_REDELIVERY = {
    "CELERY_VISIBILITY_TIMEOUT": REDELIVERY_SECONDS,
    "CELERY_UNACKED_RESTORE_INTERVAL": 1,
}
PROCESS_SIGNALS = "trading_app.tasks.process_signals"
MARKETS_PER_ACCOUNT, TRADERS_PER_ACCOUNT = 20, 3
# Blocks an UPDATE of the signal's row (not inserts referring to it: those take KEY SHARE).
LOCK_SIGNAL = "SELECT 1 FROM signals_app_signal WHERE id = %s FOR NO KEY UPDATE"


# Tests that catch a worker mid-work or cut its connection with PostgreSQL's own machinery (a
# second session holding locks, pg_stat_activity, pg_terminate_backend), which SQLite has no
# counterpart of: a single-file database has no sessions to drop, and its writers queue on one
# file lock.
needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="catches the worker mid-work through PostgreSQL sessions (locks, pg_terminate_backend)",
)


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, every: float = 0.1):
    """Poll until condition() is truthy and return its value; TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout}s: {what}")
        time.sleep(every)


def other_sessions(*, waiting_on_lock: bool = False) -> dict[int, str]:
    """{backend pid: current statement} of the other sessions on the test database (the
    workers'), optionally only those blocked on a lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND (NOT %s OR wait_event_type = 'Lock')",
            [waiting_on_lock],
        )
        return dict(cursor.fetchall())


def terminate(pids) -> int:
    """pg_terminate_backend each pid (what a database restart or a network cut does to a
    session); returns how many were terminated."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(p)) FROM unnest(%s) p",
            [list(pids)],
        )
        return cursor.fetchone()[0]


@contextmanager
def held(*statements: tuple[str, list]) -> Iterator[Callable[[], None]]:
    """Run `statements` in a separate session's transaction and keep it open (its locks, its
    uncommitted rows) until the block ends or the yielded release() is called, then roll back. A
    worker that needs one of those rows waits at that statement: a deterministic 'mid-work' point
    to inject a fault at."""
    settings = connection.settings_dict
    session = psycopg.connect(
        dbname=settings["NAME"], user=settings["USER"], password=settings["PASSWORD"] or None,
        host=settings["HOST"] or "127.0.0.1", port=settings["PORT"] or 5432,
    )  # fmt: skip

    def release() -> None:
        if not session.closed:
            session.rollback()
            session.close()

    try:
        with session.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)
                assert cursor.rowcount, f"the statement touched nothing: {sql} {params}"
        yield release
    finally:
        release()


@pytest.fixture
def spawn_worker(start_worker, transactional_db):
    """Like start_worker, without waiting for a ping: a solo worker that takes a task at once
    cannot answer one while the task waits on a lock. Stopped (if still alive) at teardown."""
    env = {**os.environ, "DATABASE_URL": _database_url(connection.settings_dict)}
    workers: list[WorkerProcess] = []

    def spawn(queues: str, *, name: str, **extra_env) -> WorkerProcess:
        extra = {key: str(value) for key, value in extra_env.items()}
        worker = WorkerProcess(queues=queues, name=name, env={**env, **extra})
        workers.append(worker)
        return worker

    yield spawn
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="session")
def figures() -> Iterator[list[dict]]:
    """What each fault test measured (the fault, cases tried, duplicates, losses): merged into
    data/logs/reliability.json by fault name at the end of the session. RELIABILITY.md quotes it."""
    rows: list[dict] = []
    yield rows
    if not rows:
        return
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    known.update({row["fault"]: {**row, "measured": stamp} for row in rows})
    FIGURES_FILE.write_text(json.dumps(known, indent=2, default=str) + "\n")


# ------------------------------------------------------------------ shared books and batches


@pytest.fixture
def two_books(transactional_db):
    """Two paper accounts, each with its own traders on its own markets (calm real-looking price
    paths on which every LONG signal is traded), and one accepted LONG signal per market."""
    books = []
    for book in ("a", "b"):
        account = f.paper_account(name=f"paper-{book}", paper_initial_balance=Decimal(100_000))
        markets = []
        for i in range(MARKETS_PER_ACCOUNT):
            market = f.market(f"{book.upper()}{i:02d}USDT")
            f.store_candles(market, f.calm_candles(n=120, price=100.0 + i))
            markets.append(market)
        traders = [
            f.trader(account, markets, name=f"{book}-{t}", max_positions=100)
            for t in range(TRADERS_PER_ACCOUNT)
        ]
        signals = [f.signal(m) for m in markets]
        books.append((account, traders, signals))
    return books


def ledger_holds(account) -> None:
    """The paper balance agrees with the orders filled on it: nothing half-applied."""
    filled = Order.objects.filter(trader__account=account, status=Order.Status.FILLED)
    notional = sum((o.filled_amount * o.average_price for o in filled), Decimal(0))
    fees = sum((o.fee for o in filled), Decimal(0))
    balance = Balance.objects.get(account=account)
    # Amounts are stored with 12 decimals, each row rounded on its own.
    rounding = Decimal("1e-12") * 2 * filled.count()
    assert abs(balance.used - notional) <= rounding
    assert abs(balance.free + balance.used - (account.paper_initial_balance - fees)) <= rounding


def every_signal_has_exactly_its_orders(books) -> dict:
    lost = duplicates = 0
    for account, traders, signals in books:
        for s in signals:
            for trader in traders:
                n = Order.objects.filter(signal=s, trader=trader).count()
                lost += n == 0
                duplicates += max(0, n - 1)
                decision = TradeDecision.objects.get(signal=s, trader=trader)
                assert decision.outcome == TradeDecision.Outcome.ORDERED, decision.reasons
            s.refresh_from_db()
            assert (s.status, s.orders_attempted, s.orders_created) == (
                Signal.Status.EXECUTED, len(traders), len(traders),
            )  # fmt: skip
        assert Position.objects.filter(trader__account=account, status="OPEN").count() == len(
            traders
        ) * len(signals)
        ledger_holds(account)
    return {"lost": lost, "duplicates": duplicates}


# The tiny checkpoint calls ETH LONG with conviction on this afternoon (see tests/trading_app/
# test_worker.py): market k's newest candle is REPLAY_FROM + k candles, so the batch holds a mix.
REPLAY_FROM = datetime(2025, 6, 18, 15, 0, tzinfo=UTC)
GPU_MARKETS = 24


@pytest.fixture
def gpu_batch(shared_data, tiny_checkpoint, settings, transactional_db):
    """24 markets, each with its own window of real BTC or ETH candles (enough for the model),
    one of them with the previous candle's signal still open; a cycle run expecting one batch."""
    settings.MODEL_PATH = tiny_checkpoint
    config = MLConfig.load()
    config.min_confidence = config.min_signal_strength = 0.0  # every LONG/SHORT goes to trading
    config.save()
    history = {}
    for symbol in ("BTC_USDT", "ETH_USDT"):
        frame = pd.read_csv(shared_data / "ohlcv" / f"{symbol}-15m.csv")
        frame["time"] = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
        history[symbol] = frame
    markets = []
    for k in range(GPU_MARKETS):
        frame = history[("ETH_USDT", "BTC_USDT")[k % 2]]
        end = int(frame.index[frame["time"] == REPLAY_FROM + k // 2 * f.STEP][0])
        market = f.market(f"M{k:02d}USDT")
        f.store_candles(market, frame.iloc[end - 400 : end + 1])
        markets.append(market)
    previous = f.signal(markets[0], candle_time=REPLAY_FROM - f.STEP, model="previous")
    Signal.objects.filter(pk=previous.pk).update(handed_at=REPLAY_FROM)
    newest = REPLAY_FROM + (GPU_MARKETS - 1) // 2 * f.STEP
    run = CycleRun.objects.create(
        started_at=timezone.now(), candle_time=newest, markets=GPU_MARKETS,
        markets_new=GPU_MARKETS, batches=1,
    )  # fmt: skip
    return markets, previous, run, newest
