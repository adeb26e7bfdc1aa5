"""What every market-data source shares: the market it is asked about, its errors, and the rule
that only closed candles leave a source."""

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from mlcore.candles import COLUMNS, timeframe_delta

logger = logging.getLogger(__name__)

# Our clock and the exchange's may differ by seconds: at a candle boundary the exchange's newest
# candle can open "after" our now. Beyond this it is a candle from the future.
FUTURE_TOLERANCE = pd.Timedelta(minutes=1)


class SourceError(Exception):
    """A source could not deliver candles for one market; the message names the market."""


class TemporarySourceError(SourceError):
    """Network trouble, a rate limit, a timeout or maintenance: the next minute may succeed."""


class PermanentSourceError(SourceError):
    """An unknown symbol, a missing replay file, a rejected request: retrying will not help."""


@dataclass(frozen=True)
class SourceMarket:
    """A Market as a source sees it, with the newest candle already stored (if any)."""

    exchange: str
    symbol: str
    ccxt_symbol: str
    timeframe: str
    last_open_time: pd.Timestamp | None = None
    last_close: float | None = None

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol}"


class CandleSource(Protocol):
    name: str

    def fetch(
        self, market: SourceMarket, *, since: pd.Timestamp, now: pd.Timestamp
    ) -> pd.DataFrame:
        """Closed candles of `market` opening at or after `since`, as an mlcore candle frame."""
        ...


def closed_until(now: pd.Timestamp, timeframe: str) -> pd.Timestamp:
    """Open time of the newest candle that has closed at `now` (its close <= now)."""
    delta = timeframe_delta(timeframe)
    return now.floor(delta) - delta


def candle_frame(times_ms, rows) -> pd.DataFrame:
    """An mlcore candle frame from epoch-millisecond open times and [open, high, low, close, volume]
    rows (duplicates and order are left as given: validation is the caller's job)."""
    index = pd.DatetimeIndex(
        pd.to_datetime(np.asarray(times_ms, dtype=np.int64), unit="ms", utc=True), name="time"
    )
    values = np.asarray(rows, dtype=np.float64).reshape(len(index), len(COLUMNS))
    return pd.DataFrame(values, index=index, columns=list(COLUMNS))


def only_closed(frame: pd.DataFrame, *, market: SourceMarket, now: pd.Timestamp) -> pd.DataFrame:
    """The candles closed at `now`. The one still open is left out quietly; one opening after
    `now` (beyond FUTURE_TOLERANCE of clock skew) cannot exist yet: it is a data error, logged
    with its market and time and left out."""
    for at in frame.index[frame.index > now + FUTURE_TOLERANCE]:
        logger.warning("%s: candle from the future at %s (now %s) not stored", market, at, now)
    return frame[frame.index <= closed_until(now, market.timeframe)]
