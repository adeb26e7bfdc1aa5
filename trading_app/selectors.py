"""Read-side queries of trading_app, shaped for batches: one query per kind of data."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import psycopg
from django.db import connection
from django.db.models import Count, F, OuterRef, Q, Subquery, Window
from django.db.models.functions import RowNumber

from botai.money import MoneySum
from signals_app.models import Candle, Market
from trading_app.models import Position, Trader

# Candles fetched per market for the indicators: enough for EMA/RSI/ATR to settle.
MIN_LOOKBACK = 100
# The time bound that keeps the portable candle query on the index allows this many missing ones.
GAP_ALLOWANCE = 1.5
PRICE_COLUMNS = ("high", "low", "close")
# PostgreSQL: one index scan per market (LIMIT n, no sort of a whole range), each market's
# candles as one bytea of big-endian float8 (high, low, close) triples, newest first: one ordered
# aggregate instead of one per column, and numpy reads it without a Python float per price
# (500 markets x 100 candles: 31 -> 19.5 ms, of which CPU 6.5 -> 2 ms, against three float8[]).
LATEST_CANDLES_SQL = """
SELECT m.id, c.prices
FROM unnest(%s::bigint[]) AS m(id)
CROSS JOIN LATERAL (
    SELECT string_agg(float8send(high) || float8send(low) || float8send(close), ''::bytea
                      ORDER BY open_time DESC) AS prices
    FROM (
        SELECT open_time, high, low, close FROM signals_app_candle
        WHERE market_id = m.id AND open_time <= %s
        ORDER BY open_time DESC
        LIMIT %s
    ) AS newest
) AS c
"""


@dataclass(frozen=True)
class CandleFrames:
    """Wide frames, one column per market id, aligned on the last row (see indicators)."""

    high: pd.DataFrame
    low: pd.DataFrame
    close: pd.DataFrame

    def latest_closes(self) -> dict[int, float]:
        return {k: v for k, v in self.close.iloc[-1].items() if not np.isnan(v)}


def _fill_postgresql(grids: list[np.ndarray], market_ids: list[int], *, until: datetime) -> None:
    lookback = grids[0].shape[0]
    connection.ensure_connection()
    # A plain (server-binding) psycopg cursor on Django's connection, binary results.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(LATEST_CANDLES_SQL, [market_ids, until, lookback], binary=True)
        for column, (_, prices) in enumerate(cursor.fetchall()):
            if not prices:
                continue
            newest_last = np.frombuffer(prices, dtype=">f8").reshape(-1, len(grids))[::-1]
            for k, grid in enumerate(grids):
                grid[lookback - len(newest_last) :, column] = newest_last[:, k]


def _fill_portable(
    grids: list[np.ndarray], market_ids: list[int], *, until: datetime, step: pd.Timedelta
) -> None:
    lookback = grids[0].shape[0]
    since = until - step * int(lookback * GAP_ALLOWANCE)
    ranked = (
        Candle.objects.filter(market_id__in=market_ids, open_time__gte=since, open_time__lte=until)
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("market_id")], order_by=F("open_time").desc())
        )
        .filter(rank__lte=lookback)
        .values_list("market_id", "rank", *PRICE_COLUMNS)
    )
    table = np.array(list(ranked), dtype="float64").reshape(-1, 2 + len(PRICE_COLUMNS))
    column = np.searchsorted(market_ids, table[:, 0].astype(np.int64))
    row = lookback - table[:, 1].astype(np.int64)  # rank 1 (newest) -> last row
    for k, grid in enumerate(grids):
        grid[row, column] = table[:, 2 + k]


def candle_frames(*, markets: Iterable[Market], lookback: int, until: datetime) -> CandleFrames:
    """The last `lookback` closed candles of each market up to `until`, in one query, straight
    into numpy (through ORM rows a batch of 500 markets x 100 candles took most of its time)."""
    markets = list(markets)
    market_ids = sorted(m.pk for m in markets)
    grids = [np.full((lookback, len(market_ids)), np.nan) for _ in PRICE_COLUMNS]
    if market_ids and connection.vendor == "postgresql":
        _fill_postgresql(grids, market_ids, until=until)
    elif market_ids:
        step = max(pd.Timedelta(m.timeframe) for m in markets)
        _fill_portable(grids, market_ids, until=until, step=step)
    return CandleFrames(*(pd.DataFrame(grid, columns=market_ids) for grid in grids))


def latest_closes(*, market_ids: Iterable[int]) -> dict[int, Decimal]:
    """market id -> close of its newest stored candle (markets without candles left out)."""
    latest = Candle.objects.filter(market=OuterRef("pk")).order_by("-open_time")
    rows = (
        Market.objects.filter(pk__in=market_ids)
        .annotate(close=Subquery(latest.values("close")[:1]))
        .values_list("pk", "close")
    )
    return {pk: Decimal(repr(close)) for pk, close in rows if close is not None}


# What the engine's books read of an active position and what closing it writes (fill_apply,
# then update_rows): its SL/TP and timestamps stay unread (40% of this read's CPU).
BOOK_POSITION_FIELDS = (
    "trader_id", "market_id", "side", "status", "amount", "entry_price", "fees", "unrealized_pnl",
)  # fmt: skip


def active_positions(*, trader_ids: Iterable[int], market_ids: Iterable[int]) -> list[Position]:
    """The PENDING/OPEN positions, with BOOK_POSITION_FIELDS only."""
    return list(
        Position.objects.filter(
            trader_id__in=trader_ids, market_id__in=market_ids, status__in=Position.ACTIVE
        ).only(*BOOK_POSITION_FIELDS)
    )


@dataclass(frozen=True)
class PositionTotals:
    active: int = 0  # PENDING + OPEN positions
    open_value: Decimal = Decimal(0)  # unrealised PnL net of paid fees of the OPEN ones


def position_totals(*, trader_ids: Iterable[int]) -> dict[int, PositionTotals]:
    """Per trader, in one aggregate query (not one row object per position)."""
    rows = (
        Position.objects.filter(trader_id__in=trader_ids, status__in=Position.ACTIVE)
        .values("trader_id")
        .annotate(
            active=Count("id"),
            # Two exact sums, subtracted here: SQL arithmetic on SQLite is floating point.
            open_unrealized=MoneySum("unrealized_pnl", filter=Q(status=Position.Status.OPEN)),
            open_fees=MoneySum("fees", filter=Q(status=Position.Status.OPEN)),
        )
    )
    return {
        row["trader_id"]: PositionTotals(
            row["active"], (row["open_unrealized"] or Decimal(0)) - (row["open_fees"] or Decimal(0))
        )
        for row in rows
    }


def trader_equity(*, trader: Trader, positions: Iterable[Position]) -> Decimal:
    """Capital + realised PnL + the open positions' unrealised PnL net of their paid fees."""
    open_value = sum(
        (p.unrealized_pnl - p.fees for p in positions if p.status == Position.Status.OPEN),
        Decimal(0),
    )
    return trader.initial_capital + trader.realized_pnl + open_value
