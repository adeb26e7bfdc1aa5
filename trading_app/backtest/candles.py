"""The candles a backtest replays: from the database (the markets' stored candles) or from a
directory of CSV files in the ../shared format (named as the replay source names them)."""

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mlcore.candles import COLUMNS, CandleError, load_csv
from signals_app.models import Candle, Market
from signals_app.sources.replay import replay_file_name


class CandleDataError(ValueError):
    """The requested candles are missing or unreadable; the message names market and source."""


def _frame(rows: list[tuple]) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime([r[0] for r in rows], utc=True), name="time")
    values = np.array([r[1:] for r in rows], dtype=np.float64).reshape(len(rows), len(COLUMNS))
    return pd.DataFrame(values, index=index, columns=list(COLUMNS))


def _stored(market: Market, *, start: datetime, end: datetime, history: int) -> pd.DataFrame:
    before = list(
        Candle.objects.filter(market=market, open_time__lt=start)
        .order_by("-open_time")
        .values_list("open_time", *COLUMNS)[:history]
    )
    during = list(
        Candle.objects.filter(market=market, open_time__gte=start, open_time__lte=end)
        .order_by("open_time")
        .values_list("open_time", *COLUMNS)
    )
    return _frame(before[::-1] + during)


def _from_csv(
    market: Market, *, start: datetime, end: datetime, history: int, directory: Path
) -> pd.DataFrame:
    path = directory / replay_file_name(market.ccxt_symbol, market.timeframe)
    if not path.is_file():
        raise CandleDataError(f"{market.exchange}:{market.symbol}: no candle file {path}")
    try:
        frame = load_csv(path)
    except CandleError as exc:
        raise CandleDataError(f"{market.exchange}:{market.symbol}: {exc}") from exc
    first = int(frame.index.searchsorted(pd.Timestamp(start)))
    return frame.iloc[max(0, first - history) :].loc[: pd.Timestamp(end)]


def backtest_frames(
    *,
    markets: list[Market],
    start: datetime,
    end: datetime,
    history: int,
    data_dir: Path | None = None,
) -> dict[int, pd.DataFrame]:
    """market id -> its candles from `history` candles before `start` through `end` (open
    times, inclusive). A market without a candle in [start, end] is refused."""
    frames = {}
    for market in markets:
        if data_dir is None:
            frame = _stored(market, start=start, end=end, history=history)
        else:
            frame = _from_csv(market, start=start, end=end, history=history, directory=data_dir)
        inside = frame.loc[pd.Timestamp(start) :]
        source = "the database" if data_dir is None else str(data_dir)
        if inside.empty:
            raise CandleDataError(
                f"{market.exchange}:{market.symbol}: no {market.timeframe} candle between "
                f"{start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} in {source}"
            )
        frames[market.pk] = frame
    return frames
