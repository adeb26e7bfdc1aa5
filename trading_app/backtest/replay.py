"""Replay a trader over past candles through the services live trading uses.

    run = backtest_run(trader=trader, start=start, end=end, data_dir=None)  # -> BacktestRun

One candle time t, on the clock t + timeframe (the moment candle t closed, when the live cycle
would act on it):

    Predictor                mlcore Predictor.predict_series: every step's prediction, computed
                             before the replay, many time steps per forward pass and features
                             cached per gap-free run (equal to the live step-by-step predict()
                             within float32 noise, tests/mlcore/test_predict_series.py)
    ML signal processor      signals_app.services.signals.signal_build on that prediction in
                             memory: does step t produce an ACCEPTED signal?
    -- only steps with an ACCEPTED signal or an open position go on to the services --
    candles                  the run's markets receive their candles up to t (never a later one)
    predictions, signals     stored the way predictions_run stores them (signals_from_predictions,
                             signals_supersede); the ACCEPTED ids are handed over in one batch
    trading engine           trading_app.services.engine.signals_process: AI signal generator,
                             risk manager, order manager, paper exchange
    position sync            trading_app.services.sync.positions_sync: SL/TP hit by candle t,
                             mark to market, equity snapshot, peak and drawdown halt

The order inside a step is the live minute's (cycle -> process_signals -> sync_positions), and no
Celery is involved: the services are called directly, as the tasks call them.

Isolation: the whole replay runs inside ONE database transaction that is rolled back once what
the report needs has been read out of it; the BacktestRun row (created before, completed after)
and the report files are all that stays. Inside the transaction the replay trades a copy of the
trader (its settings, none of its state) on a new paper account holding the trader's initial
capital, subscribed to copies of its markets (exchange "bt<run id>", same symbols and lot rules)
that receive the replayed candles. The engine routes the run's signals to the copy alone and the
sync is scoped to it, so no live row is read for update, locked or changed, and a live process
never sees an uncommitted backtest row. Chosen over rows tagged with a run id on a cloned trader
because tagged rows would stay in the live tables (the API, the metrics, the dashboard and the
exchange sync would all have to learn to skip them), and over a separate database because that
would need its own migrations and a second connection routed through every service. The cost:
on SQLite the one transaction holds the database's write lock for the whole run, so run
backtests there while the live processes are stopped; PostgreSQL has no such limit.

Skipped steps: a step with no ACCEPTED signal and no open position would only have the sync
write an equity snapshot equal to the previous one (equity moves with open positions alone), so
it is not sent. every_step=True sends every step; a test shows both give the same orders.

No look-ahead: the database holds only candles closed by the clock (stored as time advances, as
the live candle sync stores them), the engine is also bounded by as_of=t, and the prediction at t
reads candles up to t only (the truncation tests show it).
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from tqdm import tqdm

from mlcore.candles import COLUMNS, timeframe_delta
from mlcore.predictor import PredictionResult
from signals_app.models import Candle, Market, MLConfig, ModelVersion, Prediction, Signal
from signals_app.predictor import checkpoint_path, loaded_predictor, model_version_register
from signals_app.services.signals import signal_build, signals_from_predictions, signals_supersede
from trading_app.backtest.candles import backtest_frames
from trading_app.models import (
    TRADER_SETTING_FIELDS,
    BacktestRun,
    EquitySnapshot,
    ExchangeAccount,
    Order,
    Position,
    TradeDecision,
    Trader,
)
from trading_app.selectors import MIN_LOOKBACK
from trading_app.services.engine import ATR_PERIOD, signals_process
from trading_app.services.sync import positions_sync

logger = logging.getLogger(__name__)


class BacktestError(ValueError):
    """The backtest cannot run as asked (no markets, wrong timeframe, empty period)."""


@dataclass
class Tape:
    """One market over the run: its candles (history included) and every step's prediction."""

    market: Market  # the live market, read only
    candles: pd.DataFrame
    predictions: dict[pd.Timestamp, PredictionResult]
    accepted: set[pd.Timestamp] = field(default_factory=set)  # steps with an ACCEPTED signal
    copy: Market | None = None  # the run's market, inside the transaction
    stored_until: int = 0  # candles[:stored_until] are in the database


@dataclass
class Outcome:
    """What the replay leaves behind, read out of the transaction before it is rolled back."""

    steps: list[pd.Timestamp]
    service_steps: int
    orders: list[dict]
    positions: list[dict]
    snapshots: list[tuple[datetime, float]]
    decisions: dict[str, int]
    halted_reason: str
    signals_accepted: int


def history_needed(*, trader: Trader, min_history: int) -> int:
    """Candles before the first step: the model's input and the engine's indicator window."""
    engine = max(MIN_LOOKBACK, 4 * max(trader.rsi_period, trader.ema_long, ATR_PERIOD))
    return max(min_history, engine)


def _prediction(result: PredictionResult, *, market_id: int, version_id: int, close: float):
    """The Prediction row predictions_run writes for this result (unsaved)."""
    return Prediction(
        market_id=market_id,
        candle_time=result.candle_time.to_pydatetime(),
        model_version_id=version_id,
        close=close,
        returns={str(h): v for h, v in result.returns.items()},
        probabilities={str(h): list(p) for h, p in result.probabilities.items()},
        risk=dict(result.risk),
        direction=result.direction,
        confidence=result.confidence,
        strength=result.strength,
        latency_ms=result.latency_ms,
    )


def _screen(tape: Tape, *, config: MLConfig, version_id: int, steps_from: pd.Timestamp) -> None:
    """Run the ML signal processor over every prediction in memory; keep the ACCEPTED steps."""
    close = dict(zip(tape.candles.index, tape.candles["close"].tolist(), strict=True))
    for t, result in tape.predictions.items():
        if t < steps_from:
            continue
        row = _prediction(result, market_id=0, version_id=version_id, close=close[t])
        signal = signal_build(row, config=config, timeframe=tape.market.timeframe)
        if signal.status == Signal.Status.ACCEPTED:
            tape.accepted.add(t)


class Replay:
    """The loop inside the transaction."""

    def __init__(self, *, run: BacktestRun, trader: Trader, config: MLConfig, tapes: list[Tape],
                 version: ModelVersion, steps: list[pd.Timestamp], every_step: bool):  # fmt: skip
        self.run, self.trader, self.config, self.tapes = run, trader, config, tapes
        self.version, self.steps, self.every_step = version, steps, every_step
        self.copy: Trader | None = None
        # predictions_run writes a batch in Market order (exchange, symbol)
        self.batch_order = sorted(
            tapes, key=lambda tape: (tape.market.exchange, tape.market.symbol)
        )

    def setup(self) -> None:
        """The paper account, the markets and the trader the run trades on."""
        live = self.trader.account
        tag = f"bt{self.run.pk}"
        account = ExchangeAccount.objects.create(
            name=f"backtest-{self.run.pk}", exchange=tag, mode=ExchangeAccount.Mode.PAPER,
            quote_currency=live.quote_currency, paper_initial_balance=self.trader.initial_capital,
            paper_slippage_percentage=live.paper_slippage_percentage,
            paper_fee_percentage=live.paper_fee_percentage,
        )  # fmt: skip
        for tape in sorted(self.tapes, key=lambda tape: tape.market.pk):  # keep the pk order
            m = tape.market
            tape.copy = Market.objects.create(
                exchange=tag, symbol=m.symbol, ccxt_symbol=m.ccxt_symbol, timeframe=m.timeframe,
                enabled=False, amount_step=m.amount_step, price_step=m.price_step,
                min_amount=m.min_amount, min_notional=m.min_notional,
            )  # fmt: skip
        settings = {name: getattr(self.trader, name) for name in TRADER_SETTING_FIELDS}
        self.copy = Trader.objects.create(
            name=f"{self.trader.name[:50]}-{tag}", type=self.trader.type,
            strategy=self.trader.strategy, account=account, enabled=True, **settings,
        )  # fmt: skip
        self.copy.markets.set([tape.copy for tape in self.tapes])

    def _store_candles(self, until: pd.Timestamp) -> None:
        rows = []
        for tape in self.tapes:
            stop = int(tape.candles.index.searchsorted(until, side="right"))
            if stop <= tape.stored_until:
                continue
            chunk = tape.candles.iloc[tape.stored_until : stop]
            values = chunk[list(COLUMNS)].to_numpy().tolist()
            rows += [
                Candle(market=tape.copy, open_time=t, open=o, high=h, low=lo, close=c, volume=v)
                for t, (o, h, lo, c, v) in zip(chunk.index.to_pydatetime(), values, strict=True)
            ]
            tape.stored_until = stop
        Candle.objects.bulk_create(rows, batch_size=5000)

    def _signals(self, t: pd.Timestamp) -> list[int]:
        """Predictions and Signals of step t, stored as predictions_run stores them; the ids of
        the ACCEPTED signals, the batch handed to trading."""
        rows = [
            _prediction(
                tape.predictions[t],
                market_id=tape.copy.pk,
                version_id=self.version.pk,
                close=float(tape.candles.at[t, "close"]),
            )  # fmt: skip
            for tape in self.batch_order
            if t in tape.predictions
        ]
        Prediction.objects.bulk_create(rows, ignore_conflicts=True)
        stored = list(
            Prediction.objects.filter(
                model_version=self.version, market_id__in=[r.market_id for r in rows], candle_time=t
            )
        )
        markets = {tape.copy.pk: tape.copy for tape in self.tapes}
        signals = signals_from_predictions(predictions=stored, config=self.config, markets=markets)
        signals_supersede(newest={s.market_id: s.candle_time for s in signals})
        return sorted(s.pk for s in signals if s.status == Signal.Status.ACCEPTED)

    def play(self, *, progress: bool) -> Outcome:
        self.setup()
        first = self.steps[0]
        delta = timeframe_delta(self.tapes[0].market.timeframe)
        self._store_candles(first - delta)  # the history before the first step
        accepted_steps = set().union(*(tape.accepted for tape in self.tapes))
        active = Position.objects.filter(trader=self.copy, status__in=Position.ACTIVE)
        holding, service_steps, accepted = False, 0, 0
        for t in tqdm(self.steps, desc="replay", unit="candle", disable=not progress):
            trade = t in accepted_steps
            if not (trade or holding or self.every_step or t == first):
                continue
            service_steps += 1
            clock = (t + delta).to_pydatetime()
            self._store_candles(t)
            if trade:
                ids = self._signals(t)
                accepted += len(ids)
                if ids:
                    signals_process(signal_ids=ids, as_of=t.to_pydatetime(), now=clock)
            positions_sync(now=clock, trader_ids=[self.copy.pk])
            holding = active.exists()
        return self._outcome(service_steps=service_steps, accepted=accepted)

    def _outcome(self, *, service_steps: int, accepted: int) -> Outcome:
        symbols = {tape.copy.pk: tape.market.symbol for tape in self.tapes}
        orders = [
            {**row, "market": symbols[row.pop("market_id")]}
            for row in Order.objects.filter(trader=self.copy)
            .order_by("filled_at", "pk")
            .values(
                "id",
                "market_id",
                "position_id",
                "purpose",
                "side",
                "amount",
                "price",
                "average_price",
                "fee",
                "status",
                "filled_at",
                "signal__candle_time",
            )  # fmt: skip
        ]
        positions = [
            {**row, "market": symbols[row.pop("market_id")]}
            for row in Position.objects.filter(trader=self.copy)
            .order_by("opened_at", "pk")
            .values(
                "id",
                "market_id",
                "side",
                "status",
                "amount",
                "entry_price",
                "exit_price",
                "stop_loss",
                "take_profit",
                "fees",
                "realized_pnl",
                "close_reason",
                "opened_at",
                "closed_at",
            )  # fmt: skip
        ]
        snapshots = [
            (time_, float(equity))
            for time_, equity in EquitySnapshot.objects.filter(trader=self.copy)
            .order_by("time")
            .values_list("time", "equity")
        ]
        decisions = dict(
            TradeDecision.objects.filter(trader=self.copy)
            .values_list("outcome")
            .annotate(n=Count("id"))
            .values_list("outcome", "n")
        )
        self.copy.refresh_from_db()
        return Outcome(
            steps=self.steps, service_steps=service_steps, orders=orders, positions=positions,
            snapshots=snapshots, decisions=decisions, halted_reason=self.copy.halted_reason,
            signals_accepted=accepted,
        )  # fmt: skip


def _run_steps(tapes: list[Tape], *, start: datetime, end: datetime) -> list[pd.Timestamp]:
    times = set()
    for tape in tapes:
        times.update(tape.candles.loc[pd.Timestamp(start) : pd.Timestamp(end)].index)
    return sorted(times)


def backtest_replay(
    *,
    run: BacktestRun,
    trader: Trader,
    start: datetime,
    end: datetime,
    data_dir: Path | None = None,
    progress: bool = True,
    every_step: bool = False,
) -> tuple[Outcome, list[Tape]]:
    """Predict, then replay inside a transaction that is rolled back; returns what it left."""
    config = MLConfig.load()
    predictor = loaded_predictor(config)
    markets = list(trader.markets.order_by("pk"))
    if not markets:
        raise BacktestError(f"trader {trader.name} has no markets")
    wrong = [m for m in markets if m.timeframe != predictor.timeframe]
    if wrong:
        raise BacktestError(
            f"the model reads {predictor.timeframe} candles; {', '.join(map(str, wrong))} "
            f"trade{'s' if len(wrong) == 1 else ''} {wrong[0].timeframe}"
        )
    frames = backtest_frames(
        markets=markets, start=start, end=end, data_dir=data_dir,
        history=history_needed(trader=trader, min_history=predictor.min_history),
    )  # fmt: skip
    tapes = []
    for market in tqdm(markets, desc="model", unit="market", disable=not progress):
        frame = frames[market.pk]
        results = predictor.predict_series(
            frame, symbol=f"{market.exchange}:{market.symbol}", since=pd.Timestamp(start)
        )
        predictions = {t: r for t, r in results.items() if isinstance(r, PredictionResult)}
        if len(predictions) < len(results):
            first_error = next(r for r in results.values() if not isinstance(r, PredictionResult))
            logger.warning(
                "%s: %d of %d steps without a prediction (%s)", market,
                len(results) - len(predictions), len(results), first_error,
            )  # fmt: skip
        tapes.append(Tape(market=market, candles=frame, predictions=predictions))
    steps = _run_steps(tapes, start=start, end=end)
    if not steps:
        raise BacktestError(f"no candle between {start} and {end}")

    with transaction.atomic():
        version = model_version_register(
            name=predictor.version, checkpoint_path=str(checkpoint_path(config)),
            fingerprint=predictor.fingerprint, feature_set=predictor.feature_set,
            metrics=predictor.checkpoint.metrics, activate=False,
        )  # fmt: skip
        for tape in tapes:
            _screen(tape, config=config, version_id=version.pk, steps_from=steps[0])
        replay = Replay(
            run=run, trader=trader, config=config, tapes=tapes, version=version, steps=steps,
            every_step=every_step,
        )  # fmt: skip
        outcome = replay.play(progress=progress)
        transaction.set_rollback(True)
    return outcome, tapes


def run_settings(*, trader: Trader, config: MLConfig) -> dict:
    account = trader.account
    return {
        "trader": {name: _plain(getattr(trader, name)) for name in TRADER_SETTING_FIELDS},
        "markets": [f"{m.exchange}:{m.symbol}" for m in trader.markets.order_by("pk")],
        "ml": {
            "min_confidence": config.min_confidence,
            "min_signal_strength": config.min_signal_strength,
            "risk_tolerance": config.risk_tolerance,
        },
        "paper": {
            "initial_balance": _plain(trader.initial_capital),
            "fee_percentage": account.paper_fee_percentage,
            "slippage_percentage": account.paper_slippage_percentage,
        },
    }


def _plain(value):
    return float(value) if hasattr(value, "is_finite") else value


def backtest_run(
    *,
    trader: Trader,
    start: datetime,
    end: datetime,
    data_dir: Path | None = None,
    progress: bool = True,
    every_step: bool = False,
    report_root: Path | None = None,
) -> BacktestRun:
    """Replay, score and report; the BacktestRun is FAILED (and the error re-raised) when the
    run cannot complete."""
    from trading_app.backtest.metrics import backtest_report
    from trading_app.backtest.page import report_write

    started = time.perf_counter()
    config = MLConfig.load()
    run = BacktestRun.objects.create(
        trader=trader, trader_name=trader.name, start=start, end=end,
        data_source="database" if data_dir is None else str(data_dir),
        settings=run_settings(trader=trader, config=config),
    )  # fmt: skip
    try:
        outcome, tapes = backtest_replay(
            run=run, trader=trader, start=start, end=end, data_dir=data_dir,
            progress=progress, every_step=every_step,
        )  # fmt: skip
        predictor = loaded_predictor(config)
        report = backtest_report(outcome=outcome, tapes=tapes, trader=trader, run=run)
        run.model_name, run.model_fingerprint = predictor.version, predictor.fingerprint
        run.steps, run.service_steps = len(outcome.steps), outcome.service_steps
        run.orders = len(outcome.orders)
        run.metrics = report["metrics"]
        run.report_path = str(report_write(run=run, report=report, root=report_root))
        run.status, run.finished_at = BacktestRun.Status.DONE, timezone.now()
        run.seconds = time.perf_counter() - started
        run.save()
    except Exception as exc:
        run.status, run.error = BacktestRun.Status.FAILED, f"{type(exc).__name__}: {exc}"
        run.seconds, run.finished_at = time.perf_counter() - started, timezone.now()
        run.save(update_fields=["status", "error", "seconds", "finished_at"])
        raise
    logger.info("backtest %s done in %.1f s, %d orders", run.pk, run.seconds, run.orders)
    return run
