"""Read-side queries of trading_app, shaped for batches: one query per kind of data."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import pandas as pd
from django.db.models import F, Window
from django.db.models.functions import RowNumber

from signals_app.models import Candle, Market
from trading_app.models import Position, Trader

# Candles fetched per market for the indicators: enough for EMA/RSI/ATR to settle.
MIN_LOOKBACK = 100
# The time bound that keeps the candle query on the index allows this many missing candles.
GAP_ALLOWANCE = 3


@dataclass(frozen=True)
class CandleFrames:
    """Wide frames, one column per market id, aligned on the last row (see indicators)."""

    open: pd.DataFrame
    high: pd.DataFrame
    low: pd.DataFrame
    close: pd.DataFrame
    latest_time: dict[int, datetime]

    def latest_price(self, market_id: int) -> Decimal | None:
        if market_id not in self.close.columns:
            return None
        return Decimal(repr(float(self.close[market_id].iloc[-1])))


def candle_frames(*, markets: Iterable[Market], lookback: int, until: datetime) -> CandleFrames:
    """The last `lookback` closed candles of each market up to `until`, in one query."""
    markets = list(markets)
    if not markets:
        empty = pd.DataFrame()
        return CandleFrames(empty, empty, empty, empty, {})
    step = max(pd.Timedelta(m.timeframe) for m in markets)
    since = until - step * lookback * GAP_ALLOWANCE
    rows = (
        Candle.objects.filter(market__in=markets, open_time__gte=since, open_time__lte=until)
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("market_id")], order_by=F("open_time").desc())
        )
        .filter(rank__lte=lookback)
        .values_list("market_id", "rank", "open_time", "open", "high", "low", "close")
    )
    by_column: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    latest_time: dict[int, datetime] = {}
    for market_id, rank, open_time, open_, high, low, close in rows:
        position = lookback - rank  # last row = newest candle
        by_column["open"][market_id][position] = open_
        by_column["high"][market_id][position] = high
        by_column["low"][market_id][position] = low
        by_column["close"][market_id][position] = close
        if rank == 1:
            latest_time[market_id] = open_time
    index = pd.RangeIndex(lookback)
    frames = {
        name: pd.DataFrame(columns, index=index, dtype="float64")
        for name, columns in ((name, by_column[name]) for name in ("open", "high", "low", "close"))
    }
    return CandleFrames(**frames, latest_time=latest_time)


def active_positions(*, trader_ids: Iterable[int]) -> list[Position]:
    return list(Position.objects.filter(trader_id__in=trader_ids, status__in=Position.ACTIVE))


def trader_equity(*, trader: Trader, positions: Iterable[Position]) -> Decimal:
    """Capital + realised PnL + the open positions' unrealised PnL net of their paid fees."""
    open_value = sum(
        (p.unrealized_pnl - p.fees for p in positions if p.status == Position.Status.OPEN),
        Decimal(0),
    )
    return trader.initial_capital + trader.realized_pnl + open_value
