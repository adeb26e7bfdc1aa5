"""One gpu batch: stored candles -> ONE batched forward pass -> Predictions -> Signals -> trading.

Idempotent: a market whose newest closed candle already has a Prediction from the serving model
is a cache hit (no inference); Predictions and Signals are inserted with ignore_conflicts on their
unique (market, candle, model) constraints and read back, so a redelivered or double-fired batch
adds nothing. Inference runs outside any transaction.
"""

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from celery import current_app
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from mlcore.candles import COLUMNS, timeframe_delta
from mlcore.errors import ModelError
from signals_app.models import Candle, Market, MLConfig, Prediction, Signal
from signals_app.predictor import loaded_predictor, serving_model_version
from signals_app.services.signals import signals_from_predictions, signals_supersede

logger = logging.getLogger(__name__)

PROCESS_SIGNALS_TASK = "trading_app.tasks.process_signals"
HAND_OVER_GRACE = timedelta(minutes=1)


@dataclass
class BatchReport:
    markets: int = 0
    predicted: int = 0
    cache_hits: int = 0
    signals: dict[str, int] = field(default_factory=dict)  # type -> count created this batch
    accepted_ids: list[int] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {market, stage, error}
    stage_seconds: dict[str, float] = field(default_factory=dict)
    model_version: int | None = None
    device: str = ""
    reason: str = ""  # set when the whole batch could not run (no model, bad model)

    def as_dict(self) -> dict:
        return self.__dict__.copy()


class _Stopwatch:
    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds

    def lap(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - started
        return now


def candle_frames(
    markets: list[Market], *, candle_time: datetime, history: int
) -> dict[int, pd.DataFrame]:
    """Each market's last `history` stored candles up to candle_time, in one query.

    Each market's window ends at its own newest candle (one index probe each), so a market a few
    candles behind (a source outage) is still read in full; a gap inside the window leaves it
    short and the model says so."""
    newest = dict(
        Market.objects.filter(pk__in=[m.pk for m in markets])
        .annotate(
            newest=Subquery(
                Candle.objects.filter(market=OuterRef("pk"), open_time__lte=candle_time)
                .order_by("-open_time")
                .values("open_time")[:1]
            )
        )
        .values_list("pk", "newest")
    )
    windows = Q()
    for market in markets:
        if newest.get(market.pk) is not None:
            span = (history - 1) * timeframe_delta(market.timeframe)
            end = newest[market.pk]
            windows |= Q(market_id=market.pk, open_time__gte=end - span, open_time__lte=end)
    rows = (
        list(Candle.objects.filter(windows).values_list("market_id", "open_time", *COLUMNS))
        if windows
        else []
    )
    grouped: dict[int, list] = {m.pk: [] for m in markets}
    for row in rows:
        grouped[row[0]].append(row[1:])
    frames = {}
    for market_id, mine in grouped.items():
        mine.sort(key=lambda row: row[0])
        index = pd.DatetimeIndex(pd.to_datetime([row[0] for row in mine], utc=True), name="time")
        values = np.array([row[1:] for row in mine], dtype=np.float64).reshape(len(mine), 5)
        frames[market_id] = pd.DataFrame(values, index=index, columns=list(COLUMNS))
    return frames


def predictions_run(*, market_ids: list[int], candle_time: datetime) -> BatchReport:
    """Predict the newest closed candle of each market (up to candle_time), persist the
    Predictions and their Signals, expire superseded signals and hand the accepted ones to
    trading in one task."""
    report = BatchReport()
    watch = _Stopwatch(report.stage_seconds)
    started = time.perf_counter()
    config = MLConfig.load()
    try:
        predictor = loaded_predictor(config)
    except ModelError as exc:
        report.reason = f"{type(exc).__name__}: {exc}"
        logger.error("batch not predicted: %s", report.reason)
        return report
    version = serving_model_version(predictor)
    report.model_version, report.device = version.pk, str(predictor.device)
    started = batch_started = watch.lap("model", started)

    markets = {m.pk: m for m in Market.objects.filter(pk__in=market_ids)}
    report.markets = len(markets)
    wrong_timeframe = [m for m in markets.values() if m.timeframe != predictor.timeframe]
    for market in wrong_timeframe:
        report.errors.append(
            {
                "market": str(market),
                "stage": "predict",
                "error": f"model reads {predictor.timeframe}, market is {market.timeframe}",
            }
        )
        del markets[market.pk]
    frames = candle_frames(
        list(markets.values()), candle_time=candle_time, history=predictor.min_history
    )
    newest = {m: f.index[-1].to_pydatetime() for m, f in frames.items() if len(f)}
    done = {
        (p.market_id, p.candle_time): p
        for p in Prediction.objects.filter(
            model_version=version, market_id__in=newest, candle_time__in=set(newest.values())
        ).select_related("signal")
        if newest.get(p.market_id) == p.candle_time
    }
    todo = {}
    for market_id, frame in frames.items():
        if len(frame) and (market_id, newest[market_id]) in done:
            report.cache_hits += 1
        else:
            todo[market_id] = frame
    # A prediction stored by a run that died before its signal: finish it without inference.
    unfinished = [p for p in done.values() if not hasattr(p, "signal")]
    started = watch.lap("candles", started)
    if not todo and not unfinished:
        _hand_over(report, Signal.objects.filter(prediction__in=done.values()))
        return report

    labels = {
        market_id: f"{markets[market_id].exchange}:{markets[market_id].symbol}"
        for market_id in todo
    }
    results = predictor.predict({labels[m]: frame for m, frame in todo.items()})
    started = watch.lap("inference", started)
    generation_ms = (time.perf_counter() - batch_started) * 1000

    rows = []
    for market_id, frame in todo.items():
        result = results[labels[market_id]]
        if isinstance(result, ModelError):
            report.errors.append(
                {"market": labels[market_id], "stage": "predict", "error": str(result)}
            )
            continue
        rows.append(
            Prediction(
                market_id=market_id,
                candle_time=result.candle_time.to_pydatetime(),
                model_version=version,
                close=float(frame["close"].iloc[-1]),
                returns={str(h): v for h, v in result.returns.items()},
                probabilities={str(h): list(p) for h, p in result.probabilities.items()},
                risk=dict(result.risk),
                direction=result.direction,
                confidence=result.confidence,
                strength=result.strength,
                latency_ms=generation_ms,
            )
        )
    Prediction.objects.bulk_create(rows, ignore_conflicts=True)
    wanted = {(p.market_id, p.candle_time) for p in rows}
    stored = [
        p
        for p in Prediction.objects.filter(
            model_version=version,
            market_id__in={m for m, _ in wanted},
            candle_time__in={t for _, t in wanted},
        )
        if (p.market_id, p.candle_time) in wanted
    ]
    report.predicted = len(stored)
    stored.extend(unfinished)
    started = watch.lap("persist", started)

    signals = signals_from_predictions(predictions=stored, config=config, markets=markets)
    signals_supersede(newest={s.market_id: s.candle_time for s in signals})
    report.signals = dict(Counter(s.type for s in signals))
    _hand_over(
        report,
        Signal.objects.filter(Q(pk__in=[s.pk for s in signals]) | Q(prediction__in=done.values())),
    )
    watch.lap("signals", started)
    return report


def signals_hand_over_stranded(*, now: datetime) -> list[int]:
    """Hand over the ACCEPTED signals a batch stored but never handed to trading (it died between
    the two and its message was not redelivered, e.g. lost with a broker that kept no data).
    Only signals older than HAND_OVER_GRACE (their batch had time) and not yet expired; trading
    absorbs a repeat, so a batch still handing over at the same moment does no harm."""
    report = BatchReport()
    stranded = Signal.objects.filter(
        status=Signal.Status.ACCEPTED,
        handed_at__isnull=True,
        created_at__lt=timezone.now() - HAND_OVER_GRACE,
        expires_at__gt=now,
    )
    _hand_over(report, stranded)
    if report.accepted_ids:
        logger.warning("handed over %d stranded signals: %s", len(report.accepted_ids),
                       report.accepted_ids)  # fmt: skip
    return report.accepted_ids


def _hand_over(report: BatchReport, signals) -> None:
    """Send the ACCEPTED signals not yet handed over to trading, in ONE task, by name
    (signals_app never imports trading_app). Sent first, marked after: a crash in between
    re-sends on the next run, and trading's unique client order ids absorb the repeat."""
    ids = sorted(
        s.pk for s in signals if s.status == Signal.Status.ACCEPTED and s.handed_at is None
    )
    if not ids:
        return
    current_app.send_task(PROCESS_SIGNALS_TASK, args=[ids])
    Signal.objects.filter(pk__in=ids, handed_at__isnull=True).update(handed_at=timezone.now())
    report.accepted_ids = ids
