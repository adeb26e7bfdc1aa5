"""Candles in: the per-minute sync from the configured source, and CSV imports.

Only closed, valid candles are stored. From a source (the per-minute sync), each rule below is
applied and every dropped or repaired candle is logged with its market and open time:

- duplicated open time: the last one received is kept (a source re-sending a corrected candle);
- out of order: sorted by open time;
- NaN or infinite value, zero or negative price, high < low, high below open/close, low above
  open/close, negative volume, time off the timeframe grid: the candle is not stored;
- from the future (opening after now, beyond clock skew): not stored (the one still open is
  left out quietly: it is not closed yet);
- a gap (missing candles) is stored as it is, never filled with invented prices: the model needs
  its window of consecutive candles, so a market is not predicted (the cycle records why) until
  it has that many candles after the gap.

The model reads candles only through mlcore.Predictor, which validates its window again
(InvalidCandles), so a bad row written to the database by any other path is not fed to it either.
A bad row in an imported file fails the whole import with its file and line.
"""

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone
from tqdm import tqdm

from mlcore.candles import CandleError, load_csv, timeframe_delta, validate_candles
from signals_app.models import Candle, Market
from signals_app.sources import CandleSource, SourceError, SourceMarket, candle_source, closed_until
from signals_app.sources.base import only_closed

logger = logging.getLogger(__name__)

# A market seen for the first time gets this much history (~10 days of 15m candles): enough for
# the model's features and window, small enough for the first minute of 500 markets.
BACKFILL_CANDLES = 1000
INSERT_BATCH = 5000
_FILE_NAME = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)-(?P<timeframe>\d+[mhd])\.csv$")


@dataclass
class SyncReport:
    markets: int = 0
    candles_stored: int = 0
    candles_rejected: int = 0
    errors: list[dict] = field(default_factory=list)  # {market, stage, error}
    seconds: float = 0.0


def with_last_candle(markets: QuerySet[Market]) -> QuerySet[Market]:
    """Annotate each market with its newest stored candle (one index probe per market)."""
    newest = Candle.objects.filter(market=OuterRef("pk")).order_by("-open_time")
    return markets.annotate(
        last_open_time=Subquery(newest.values("open_time")[:1]),
        last_close=Subquery(newest.values("close")[:1]),
    )


def _source_market(market: Market) -> SourceMarket:
    last = market.last_open_time
    return SourceMarket(
        exchange=market.exchange,
        symbol=market.symbol,
        ccxt_symbol=market.ccxt_symbol,
        timeframe=market.timeframe,
        last_open_time=pd.Timestamp(last) if last is not None else None,
        last_close=market.last_close,
    )


def fetch_window_start(market: SourceMarket, *, now: pd.Timestamp) -> pd.Timestamp:
    """First candle to ask for: the one after the newest stored, at most BACKFILL_CANDLES back."""
    delta = timeframe_delta(market.timeframe)
    earliest = closed_until(now, market.timeframe) - (BACKFILL_CANDLES - 1) * delta
    if market.last_open_time is None:
        return earliest
    return max(market.last_open_time + delta, earliest)


def valid_candles(frame: pd.DataFrame, *, market: SourceMarket) -> tuple[pd.DataFrame, int]:
    """The frame repaired and cleaned by the rules above (each case logged), and how many rows
    were dropped."""
    duplicated = frame.index.duplicated(keep="last")
    for at in frame.index[duplicated]:
        logger.warning("%s: duplicate candle at %s: the last one received is kept", market, at)
    frame = frame[~duplicated]
    if not frame.index.is_monotonic_increasing:
        back = frame.index[1:][frame.index[1:] < frame.index[:-1]]
        logger.warning("%s: candles out of order (%s first): sorted by time", market, back[0])
        frame = frame.sort_index()
    dropped = int(duplicated.sum())
    try:
        validate_candles(frame, timeframe=market.timeframe)
        return frame, dropped
    except CandleError:
        pass  # find every bad row, not just the first
    keep = np.ones(len(frame), dtype=bool)
    for i in range(len(frame)):
        try:
            validate_candles(frame.iloc[i : i + 1], timeframe=market.timeframe)
        except CandleError as exc:
            keep[i] = False
            logger.warning(
                "%s: bad candle at %s not stored: %s",
                market,
                frame.index[i],
                str(exc).split(": ", 1)[-1],
            )
    return frame[keep], dropped + int((~keep).sum())


def _log_gaps(frame: pd.DataFrame, *, market: SourceMarket, since: pd.Timestamp) -> None:
    """Log each run of missing candles from `since` on (stored as they are: never invented)."""
    if not len(frame):
        return
    delta = timeframe_delta(market.timeframe)
    previous = frame.index[:-1].insert(0, since - delta)
    for before, after in zip(previous, frame.index, strict=True):
        if after - before > delta:
            missing = (after - before) // delta - 1
            logger.warning("%s: gap: %d candles missing after %s", market, missing, before)


def _rows(market_id: int, frame: pd.DataFrame) -> list[Candle]:
    values = frame.to_numpy(dtype=np.float64)
    return [
        Candle(market_id=market_id, open_time=t, open=o, high=h, low=lo, close=c, volume=v)
        for t, (o, h, lo, c, v) in zip(frame.index.to_pydatetime(), values.tolist(), strict=True)
    ]


def candles_sync(
    *,
    markets: QuerySet[Market],
    source: CandleSource | None = None,
    now: datetime | None = None,
) -> SyncReport:
    """Fetch every market's newly closed candles from the source and store them.

    A market already holding its newest closed candle costs no source call. One market's source
    error is recorded in the report and the others go on."""
    started = time.perf_counter()
    now = pd.Timestamp(now or timezone.now())
    report = SyncReport()
    try:
        source = source or candle_source()
    except SourceError as exc:  # a misconfigured source: every market fails the same way
        report.errors.append({"market": "*", "stage": "sync", "error": str(exc)})
        return report
    rows: list[Candle] = []
    for market in with_last_candle(markets):
        report.markets += 1
        target = _source_market(market)
        since = fetch_window_start(target, now=now)
        if since > closed_until(now, market.timeframe):
            continue
        try:
            frame = source.fetch(target, since=since, now=now)
        except SourceError as exc:
            report.errors.append({"market": str(target), "stage": "sync", "error": str(exc)})
            logger.warning("candle sync: %s", exc)
            continue
        except Exception as exc:  # a source bug must not stop the other markets
            logger.exception("candle sync failed for %s", target)
            report.errors.append(
                {"market": str(target), "stage": "sync", "error": f"{type(exc).__name__}: {exc}"}
            )
            continue
        frame = only_closed(frame[frame.index >= since], market=target, now=now)
        frame, rejected = valid_candles(frame, market=target)
        report.candles_rejected += rejected
        _log_gaps(frame, market=target, since=since)
        rows.extend(_rows(market.pk, frame))
    Candle.objects.bulk_create(rows, batch_size=INSERT_BATCH, ignore_conflicts=True)
    report.candles_stored = len(rows)
    report.seconds = time.perf_counter() - started
    return report


def candles_backfill(
    *,
    exchange: str,
    symbols: list[str] | None,
    since: pd.Timestamp,
    now: pd.Timestamp,
    timeframe: str = "15m",
    source=None,
    on_page=None,
) -> SyncReport:
    """History from the exchange (ccxt) for `symbols` (default: the enabled markets there), from
    `since` or the newest stored candle; markets missing here are created disabled, and every
    market's lot / tick / minimum-size limits are refreshed from the exchange's market list."""
    from signals_app.services.config import ccxt_symbol

    started = time.perf_counter()
    source = source or candle_source("ccxt")
    if symbols:
        for symbol in symbols:
            Market.objects.get_or_create(
                exchange=exchange,
                symbol=symbol.upper(),
                defaults={"ccxt_symbol": ccxt_symbol(symbol.upper()), "timeframe": timeframe,
                          "enabled": False},
            )  # fmt: skip
        markets = Market.objects.filter(exchange=exchange, symbol__in=[s.upper() for s in symbols])
    else:
        markets = Market.objects.filter(exchange=exchange, enabled=True)
    report = SyncReport()
    for market in with_last_candle(markets):
        report.markets += 1
        target = _source_market(market)
        start = since
        if target.last_open_time is not None:
            start = max(since, target.last_open_time + timeframe_delta(market.timeframe))
        try:
            limits = source.limits(target)
            frame = source.fetch(target, since=start, now=now, on_page=on_page)
        except SourceError as exc:
            report.errors.append({"market": str(target), "stage": "backfill", "error": str(exc)})
            continue
        Market.objects.filter(pk=market.pk).update(**limits.__dict__)
        frame, rejected = valid_candles(frame[frame.index >= start], market=target)
        report.candles_rejected += rejected
        rows = _rows(market.pk, frame)
        Candle.objects.bulk_create(rows, batch_size=INSERT_BATCH, ignore_conflicts=True)
        report.candles_stored += len(rows)
    report.seconds = time.perf_counter() - started
    return report


# ------------------------------------------------------------------------------------- import


@dataclass
class ImportReport:
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # other timeframes
    markets_created: list[str] = field(default_factory=list)
    candles: int = 0


def _csv_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files.extend(sorted(path.glob("*.csv")))
        elif path.is_file():
            files.append(path)
        else:
            raise CandleError(f"{path}: no such file or directory")
    if not files:
        raise CandleError(f"no .csv files in {', '.join(map(str, paths))}")
    return files


def _read_import_file(path: Path, *, timeframe: str, until: pd.Timestamp | None) -> pd.DataFrame:
    frame = load_csv(path)  # CandleError names file and line for every row rule
    step = timeframe_delta(timeframe).value
    misaligned = np.flatnonzero(frame.index.as_unit("ns").asi8 % step)
    if len(misaligned):
        row = int(misaligned[0])
        raise CandleError(
            f"{path}: line {row + 2} ({frame.index[row]}): timestamp not on the {timeframe} grid"
        )
    unclosed = np.flatnonzero(frame.index > closed_until(pd.Timestamp.now(tz="UTC"), timeframe))
    if len(unclosed):
        row = int(unclosed[0])
        raise CandleError(
            f"{path}: line {row + 2} ({frame.index[row]}): candle from the future (not closed yet)"
        )
    validate_candles(frame, timeframe=timeframe)
    if until is not None:
        frame = frame[frame.index < until]
    return frame


def candles_import(
    *,
    paths: Iterable[Path],
    exchange: str,
    timeframe: str = "15m",
    until: datetime | None = None,
    progress: bool = False,
) -> ImportReport:
    """Import candle CSVs (BASE_QUOTE-TIMEFRAME.csv, the ../shared format): all or nothing.

    Every file is read and checked before anything is written; a bad row raises CandleError with
    its file and line and nothing is stored. Candles already stored are kept as they are. A market
    missing from the database is created disabled (enable it in the admin or via load_config)."""
    if until is not None:
        until = pd.Timestamp(until)
        until = until.tz_localize("UTC") if until.tz is None else until  # naive means UTC
    report = ImportReport()
    frames: list[tuple[str, str, pd.DataFrame]] = []
    for path in tqdm(_csv_files(paths), desc="reading", disable=not progress):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise CandleError(
                f"{path}: cannot tell the market from the name: expected BASE_QUOTE-TF.csv"
            )
        if match["timeframe"] != timeframe:
            report.skipped.append(str(path))
            continue
        frame = _read_import_file(path, timeframe=timeframe, until=until)
        frames.append((match["base"], match["quote"], frame))
        report.files.append(str(path))

    with transaction.atomic():
        for base, quote, frame in frames:
            market, created = Market.objects.get_or_create(
                exchange=exchange,
                symbol=f"{base}{quote}",
                defaults={
                    "ccxt_symbol": f"{base}/{quote}",
                    "timeframe": timeframe,
                    "enabled": False,
                },
            )
            if created:
                report.markets_created.append(str(market))
            elif market.timeframe != timeframe:
                raise CandleError(
                    f"{market} has timeframe {market.timeframe}, the files are {timeframe}"
                )
            rows = _rows(market.pk, frame)
            for start in tqdm(
                range(0, len(rows), INSERT_BATCH), desc=market.symbol, disable=not progress
            ):
                Candle.objects.bulk_create(
                    rows[start : start + INSERT_BATCH], ignore_conflicts=True
                )
            report.candles += len(rows)
    return report
