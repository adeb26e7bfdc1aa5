"""Replay a directory of candle CSVs (the ../shared format) against the wall clock.

Wall-clock slot s (a candle open time on the timeframe grid) plays file row
(s - first_open) / timeframe  modulo  len(file), stamped with time s. Rows are played as
consecutive candles, so inside a gap-free file's own period this is exactly the recorded candle
at its recorded time; past the end the file loops, so a replayed market never runs dry. The
mapping depends on the clock alone: every process (and every restart) replays the same candle
for the same minute.
"""

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from mlcore.candles import CandleError, load_csv, timeframe_delta
from signals_app.sources.base import PermanentSourceError, SourceMarket, candle_frame, closed_until


def replay_file_name(ccxt_symbol: str, timeframe: str) -> str:
    """BTC/USDT -> BTC_USDT-15m.csv; a settled swap (BTC/USDT:USDT) -> BTC_USDT_USDT-15m.csv."""
    return f"{ccxt_symbol.replace('/', '_').replace(':', '_')}-{timeframe}.csv"


@lru_cache(maxsize=64)
def _load(path: Path, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(open times in ms, OHLCV rows) of one file; cached per file version."""
    frame = load_csv(path)
    return frame.index.as_unit("ms").asi8.copy(), frame.to_numpy(dtype=np.float64)


class ReplaySource:
    name = "replay"

    def __init__(self, *, directory: str | Path):
        self.directory = Path(directory)

    def fetch(
        self, market: SourceMarket, *, since: pd.Timestamp, now: pd.Timestamp
    ) -> pd.DataFrame:
        path = self.directory / replay_file_name(market.ccxt_symbol, market.timeframe)
        if not path.is_file():
            raise PermanentSourceError(f"{market}: no replay file {path}")
        try:
            times, rows = _load(path, path.stat().st_mtime_ns)
        except CandleError as exc:
            raise PermanentSourceError(f"{market}: {exc}") from exc
        step = timeframe_delta(market.timeframe).value // 1_000_000  # ms
        first = int(since.ceil(timeframe_delta(market.timeframe)).value // 1_000_000)
        last = int(closed_until(now, market.timeframe).value // 1_000_000)
        if last < first or len(times) == 0:
            return candle_frame([], np.empty((0, 5)))
        slots = np.arange(first, last + step, step, dtype=np.int64)
        positions = ((slots - times[0]) // step) % len(times)
        return candle_frame(slots, rows[positions])
