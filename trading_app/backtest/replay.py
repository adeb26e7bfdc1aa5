"""Replay a trader over past candles through the services live trading uses.

    run = backtest_run(trader=trader, start=start, end=end, data_dir=None)  # -> BacktestRun

One candle time t, on the clock t + timeframe (the moment candle t closed, when the live cycle
would act on it):

    Predictor                mlcore Predictor.iter_series: every step's prediction, many time
                             steps per forward pass, features cached per gap-free run (equal to
                             the live step-by-step predict() within float32 noise, see
                             tests/mlcore/test_predict_series.py), streamed from a model process
                             that runs a little ahead of the replay (backtest.forecast)
    ML signal processor      signals_app.services.signals.signal_verdict (the decision of
                             signal_build) on that prediction in memory: does step t produce
                             an ACCEPTED signal?
    -- steps with an ACCEPTED signal, and steps the sync has work on, go on to the services --
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
the report needs has been read out of it (backtest.session: how the connection serves such a
transaction); the BacktestRun row (created before, completed after) and the report files are
all that stays. Inside the transaction the replay trades a copy of the
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

Skipped steps: the live sync runs every minute, but on most candles it changes nothing a later
decision reads. The replay tracks the trader's open positions, realised PnL and peak as the
services left them (Book) and calls the sync only on a step where it could matter: the first
step; a candle that reaches an open position's stop loss or take profit; the step before an
ACCEPTED signal while positions are open (the engine sizes on equity marked at that close); and
a step whose equity could set a new peak or reach the drawdown limit (after a trade, or with
positions open). Float estimates are compared with a margin that errs towards calling. What is
skipped is an equity snapshot and a re-mark that the next call overwrites. every_step=True
sends every step; tests show both give the same orders and equity, and the parity test matches
a live-path session that syncs every minute.

No look-ahead: the database holds only candles closed by the clock (stored as time advances, as
the live candle sync stores them), the engine is also bounded by as_of=t, and the prediction at t
reads candles up to t only (the truncation tests show it).
"""

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from tqdm import tqdm

from mlcore.candles import COLUMNS, timeframe_delta
from mlcore.predictor import PredictionResult
from signals_app.models import Candle, Market, MLConfig, ModelVersion, Prediction, Signal
from signals_app.predictor import (
    checkpoint_path,
    loaded_predictor,
    model_version_register,
    predictor_settings,
)
from signals_app.services.signals import (
    signal_verdict,
    signals_from_predictions,
    signals_supersede,
)
from trading_app import risk
from trading_app.backtest.candles import backtest_frames
from trading_app.backtest.forecast import DONE, Forecast
from trading_app.backtest.session import replan, replay_session
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
    sync_reasons: dict[str, int] = field(default_factory=dict)  # why the sync ran, per step
    stage_seconds: dict[str, float] = field(default_factory=dict)


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


@dataclass
class Book:
    """The run's trader as the services left it after their last call: what decides whether
    a skipped step would have changed anything."""

    initial: Decimal
    max_drawdown: float
    realized: Decimal = Decimal(0)
    peak: Decimal | None = None
    positions: list[tuple] = field(default_factory=list)  # (tape index, direction, amount,
    # entry, fees, stop loss, take profit) as floats, for the open positions


class Replay:
    """The loop inside the transaction."""

    # Comparisons of float estimates against the services' Decimal arithmetic keep this margin,
    # on the side of calling the services once too often.
    MARGIN = 1e-9
    MARKS = "marks before a signal"

    def __init__(self, *, run: BacktestRun, trader: Trader, config: MLConfig, tapes: list[Tape],
                 version: ModelVersion, steps: list[pd.Timestamp], forecast: Forecast,
                 every_step: bool):  # fmt: skip
        self.run, self.trader, self.config, self.tapes = run, trader, config, tapes
        self.version, self.steps, self.forecast = version, steps, forecast
        self.every_step = every_step
        self.copy: Trader | None = None
        # predictions_run writes a batch in Market order (exchange, symbol)
        self.batch_order = sorted(
            range(len(tapes)), key=lambda k: (tapes[k].market.exchange, tapes[k].market.symbol)
        )
        index = pd.DatetimeIndex(steps)
        self.high, self.low, self.close = (
            [tape.candles[name].reindex(index).to_numpy() for tape in tapes]
            for name in ("high", "low", "close")
        )
        self.close = [pd.Series(c).ffill().to_numpy() for c in self.close]  # a gap keeps its last
        # each tape's candles as plain rows (open time, *COLUMNS), sliced out as time advances
        self.rows = [
            list(zip(tape.candles.index.to_pydatetime(),
                     *tape.candles[list(COLUMNS)].to_numpy().T.tolist(), strict=True))
            for tape in tapes
        ]  # fmt: skip
        self.book = Book(
            initial=trader.initial_capital, max_drawdown=trader.max_drawdown_percentage
        )
        self._accepted: dict[int, bool] = {}
        self._predictions: dict[int, list[Prediction]] = {}  # of the steps at hand
        self.service_steps = self.signals_accepted = 0
        self.sync_reasons: Counter[str] = Counter()

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

    # ------------------------------------------------------------------ the services
    def _store_candles(self, until: pd.Timestamp) -> None:
        candles = []
        for tape, rows in zip(self.tapes, self.rows, strict=True):
            stop = int(tape.candles.index.searchsorted(until, side="right"))
            candles += [
                Candle(market_id=tape.copy.pk, open_time=t, open=o, high=h, low=lo, close=c,
                       volume=v)
                for t, o, h, lo, c, v in rows[tape.stored_until : stop]
            ]  # fmt: skip
            tape.stored_until = max(tape.stored_until, stop)
        if candles:
            Candle.objects.bulk_create(candles, batch_size=5000)

    def _step_predictions(self, i: int) -> list[Prediction]:
        """The Prediction rows of step i (unsaved) as predictions_run builds them, in its order."""
        if i not in self._predictions:
            t = self.steps[i]
            self._predictions[i] = [
                _prediction(
                    self.tapes[k].predictions[t],
                    market_id=self.tapes[k].copy.pk,
                    version_id=self.version.pk,
                    close=float(self.close[k][i]),  # the candle at t: nothing carried over
                )  # fmt: skip
                for k in self.batch_order
                if t in self.tapes[k].predictions
            ]
        return self._predictions[i]

    def _signals(self, i: int) -> list[int]:
        """Predictions and Signals of step i, stored as predictions_run stores them; the ids of
        the ACCEPTED signals, the batch handed to trading."""
        rows = self._step_predictions(i)
        # predictions_run skips the rows a retried batch already stored and reads them back;
        # the run's own market copies hold no prediction yet, so the rows come back with pks.
        Prediction.objects.bulk_create(rows)
        markets = {tape.copy.pk: tape.copy for tape in self.tapes}
        signals = signals_from_predictions(predictions=rows, config=self.config, markets=markets)
        signals_supersede(newest={s.market_id: s.candle_time for s in signals})
        return sorted(s.pk for s in signals if s.status == Signal.Status.ACCEPTED)

    def _reload(self, *, positions: bool) -> None:
        """Read the trader's PnL and peak back, and its open positions when they changed."""
        self.book.realized, self.book.peak = Trader.objects.values_list(
            "realized_pnl", "peak_equity"
        ).get(pk=self.copy.pk)
        if not positions:
            return
        tape_of = {tape.copy.pk: k for k, tape in enumerate(self.tapes)}
        self.book.positions = [
            (
                tape_of[market_id],
                1.0 if side == Position.Side.LONG else -1.0,
                float(amount),
                float(entry),
                float(fees),
                stop_loss and float(stop_loss),
                take_profit and float(take_profit),
            )  # fmt: skip
            for market_id, side, amount, entry, fees, stop_loss, take_profit in (
                Position.objects.filter(trader=self.copy, status__in=Position.ACTIVE).values_list(
                    "market_id",
                    "side",
                    "amount",
                    "entry_price",
                    "fees",
                    "stop_loss",
                    "take_profit",
                )  # fmt: skip
            )
        ]

    # ------------------------------------------------------------------ what to skip
    def accepted(self, i: int) -> bool:
        """Does step i produce an ACCEPTED signal? The ML signal processor on the in-memory
        predictions (the services run it again on the stored ones)."""
        if i not in self._accepted:
            self._accepted[i] = any(
                signal_verdict(row, config=self.config).status == Signal.Status.ACCEPTED
                for row in self._step_predictions(i)
            )
        return self._accepted[i]

    def _stop_or_take_profit(self, i: int) -> bool:
        """Could an open position's stop loss or take profit trigger on candle i?"""
        up, down = 1 + self.MARGIN, 1 - self.MARGIN
        for k, direction, _, _, _, stop, take in self.book.positions:
            high, low = self.high[k][i], self.low[k][i]
            if np.isnan(high):
                continue
            high, low = float(high), float(low)
            if direction > 0 and ((stop and low <= stop * up) or (take and high >= take * down)):
                return True
            if direction < 0 and ((stop and high >= stop * down) or (take and low <= take * up)):
                return True
        return False

    def _equity_moves_the_books(self, i: int) -> bool:
        """Would the sync at step i raise the trader's peak or halt it on drawdown?"""
        book = self.book
        peak = book.peak or book.initial
        if not book.positions:  # equity is exact here: capital + realised PnL
            equity = book.initial + book.realized
            drawdown = risk.drawdown_percentage(equity=equity, peak=peak)
            return equity > peak or drawdown >= book.max_drawdown
        equity = float(book.initial + book.realized) + sum(
            direction * (self.close[k][i] - entry) * amount - fees
            for k, direction, amount, entry, fees, _, _ in book.positions
        )
        peak = float(peak)
        drawdown = 100 * (peak - equity) / peak
        return bool(
            equity >= peak * (1 - self.MARGIN) or drawdown >= book.max_drawdown - self.MARGIN
        )

    def _sync_reason(self, i: int, *, traded: bool) -> str:
        """Why the sync must run at step i ("" when the live sync would change nothing a later
        step reads): steps without an open position and without a trade keep equity flat; open
        positions need the sync when the candle reaches a stop loss or take profit, when the
        next step's engine sizes on equity marked at this close (then marking them is all it
        takes: MARKS), and when equity could set a new peak or reach the drawdown limit."""
        if self.every_step:
            return "every step"
        if i == 0:
            return "first step"
        if self.book.positions:
            if self._stop_or_take_profit(i):
                return "stop loss or take profit"
            if self._equity_moves_the_books(i):
                return "peak or drawdown"
            if i + 1 < len(self.steps) and self.accepted(i + 1):
                return self.MARKS
            return ""
        return "peak or drawdown" if traded and self._equity_moves_the_books(i) else ""

    # ------------------------------------------------------------------ the loop
    def play(self, *, progress: bool) -> Outcome:
        self.setup()
        first = self.steps[0]
        delta = timeframe_delta(self.tapes[0].market.timeframe)
        self._store_candles(first - delta)  # the history before the first step
        self._reload(positions=True)
        last = len(self.steps) - 1
        for i, t in enumerate(tqdm(self.steps, desc="replay", unit="candle", disable=not progress)):
            self.forecast.wait(self.steps[min(i + 1, last)])
            replan(i)
            clock = (t + delta).to_pydatetime()
            traded = self.accepted(i)
            if traded:
                self._store_candles(t)
                ids = self._signals(i)
                self.signals_accepted += len(ids)
                done = signals_process(signal_ids=ids, as_of=t.to_pydatetime(), now=clock)
                if done.orders:
                    self._reload(positions=True)
            due = self._sync_reason(i, traded=traded)
            if due:
                self.sync_reasons[due] += 1
                self._store_candles(t)
                marks = due == self.MARKS
                synced = positions_sync(now=clock, trader_ids=[self.copy.pk], mark_only=marks)
                if not marks:
                    self._reload(positions=bool(synced.stops or synced.take_profits))
            self.service_steps += int(traded or bool(due))
            self._predictions.pop(i, None)
        return self._outcome()

    def _outcome(self) -> Outcome:
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
            steps=self.steps, service_steps=self.service_steps, orders=orders,
            positions=positions, snapshots=snapshots, decisions=decisions,
            halted_reason=self.copy.halted_reason, signals_accepted=self.signals_accepted,
            sync_reasons=dict(self.sync_reasons),
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
    lap = _Laps()
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
    lap("candles")
    tapes = [Tape(market=m, candles=frames[m.pk], predictions={}) for m in markets]
    steps = _run_steps(tapes, start=start, end=end)
    if not steps:
        raise BacktestError(f"no candle between {start} and {end}")
    wanted = predictor_settings(config)
    forecast = Forecast(
        path=str(wanted.path), device=wanted.device, threads=wanted.threads or 1,
        fingerprint=predictor.fingerprint, since=steps[0],
        markets=[(f"{t.market.exchange}:{t.market.symbol}", t.candles) for t in tapes],
    )  # fmt: skip
    for tape, predictions in zip(tapes, forecast.predictions, strict=True):
        tape.predictions = predictions  # filled as the model process streams them in
    forecast.start()
    try:
        with transaction.atomic():
            version = model_version_register(
                name=predictor.version, checkpoint_path=str(checkpoint_path(config)),
                fingerprint=predictor.fingerprint, feature_set=predictor.feature_set,
                metrics=predictor.checkpoint.metrics, activate=False,
            )  # fmt: skip
            replay = Replay(
                run=run, trader=trader, config=config, tapes=tapes, version=version,
                steps=steps, forecast=forecast, every_step=every_step,
            )  # fmt: skip
            with replay_session():
                outcome = replay.play(progress=progress)
            transaction.set_rollback(True)
        forecast.wait(DONE)  # its timing
    finally:
        forecast.stop()
    lap("replay")
    for tape, missing in zip(tapes, forecast.missing, strict=True):
        if missing:
            logger.warning(
                "%s: %d steps without a prediction (%s)", tape.market, len(missing), missing[0]
            )
    outcome.stage_seconds = lap.seconds | {
        "model_busy": round(forecast.busy_seconds, 3),  # in parallel with the replay
        "replay_waiting_for_model": round(forecast.wait_seconds, 3),
    }
    return outcome, tapes


class _Laps:
    """Seconds per stage of a run, for the report."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now


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
        run.start, run.end = outcome.steps[0], outcome.steps[-1]  # the candles replayed
        reported = time.perf_counter()
        report = backtest_report(outcome=outcome, tapes=tapes, trader=trader, run=run)
        run.model_name, run.model_fingerprint = predictor.version, predictor.fingerprint
        run.steps, run.service_steps = len(outcome.steps), outcome.service_steps
        run.orders = len(outcome.orders)
        run.metrics = report["metrics"]
        run.report_path = str(report_write(run=run, report=report, root=report_root))
        outcome.stage_seconds["report"] = round(time.perf_counter() - reported, 3)
        run.status, run.finished_at = BacktestRun.Status.DONE, timezone.now()
        run.seconds = time.perf_counter() - started
        with transaction.atomic():  # a failing save leaves the except clause a usable connection
            run.save()
    except Exception as exc:
        run.status, run.error = BacktestRun.Status.FAILED, f"{type(exc).__name__}: {exc}"
        run.seconds, run.finished_at = time.perf_counter() - started, timezone.now()
        run.save(update_fields=["status", "error", "seconds", "finished_at"])
        raise
    logger.info("backtest %s done in %.1f s, %d orders", run.pk, run.seconds, run.orders)
    return run
