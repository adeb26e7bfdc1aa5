"""Market-data sources, chosen by settings.MARKET_DATA_SOURCE: simulated (offline default),
replay (a directory of candle CSVs against the clock) or ccxt (an exchange's public OHLCV).

Each source is imported only when chosen, so ccxt loads only in processes that use it."""

from django.conf import settings

from signals_app.sources.base import (
    CandleSource,
    PermanentSourceError,
    SourceError,
    SourceMarket,
    TemporarySourceError,
    closed_until,
)

SOURCES = ("simulated", "replay", "ccxt")

__all__ = [
    "SOURCES",
    "CandleSource",
    "PermanentSourceError",
    "SourceError",
    "SourceMarket",
    "TemporarySourceError",
    "candle_source",
    "closed_until",
]


def candle_source(name: str | None = None) -> CandleSource:
    name = name or settings.MARKET_DATA_SOURCE
    if name == "simulated":
        from signals_app.sources.simulated import SimulatedSource

        return SimulatedSource()
    if name == "replay":
        if not settings.REPLAY_DIR:
            raise PermanentSourceError(
                "MARKET_DATA_SOURCE=replay needs REPLAY_DIR (a CSV directory)"
            )
        from signals_app.sources.replay import ReplaySource

        return ReplaySource(directory=settings.REPLAY_DIR)
    if name == "ccxt":
        from signals_app.sources.ccxt import CcxtSource

        return CcxtSource()
    raise PermanentSourceError(f"unknown MARKET_DATA_SOURCE {name!r}: choose one of {SOURCES}")
