"""Live candles from an exchange's public OHLCV endpoint through ccxt (the only module that
imports ccxt on the signals side).

ccxt errors become ours: network trouble, timeouts, rate limits and maintenance are temporary
(the next minute retries); an unknown symbol or a rejected request is permanent. ccxt's own
rate limiter (enableRateLimit) spaces the requests of one client; one client per exchange id is
kept per process so that spacing holds across markets.
"""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import ccxt
import pandas as pd

from mlcore.candles import timeframe_delta
from signals_app.sources.base import (
    PermanentSourceError,
    SourceMarket,
    TemporarySourceError,
    candle_frame,
    only_closed,
)

PAGE_LIMIT = 1000  # Bybit's maximum candles per request


@dataclass(frozen=True)
class MarketLimits:
    """What trading's risk manager needs to size an order (None = the exchange states none)."""

    amount_step: Decimal | None
    price_step: Decimal | None
    min_amount: Decimal | None
    min_notional: Decimal | None


def _decimal(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _step(precision, mode: int) -> Decimal | None:
    """ccxt states precision as a step (TICK_SIZE, e.g. Bybit) or as decimal places."""
    if precision is None:
        return None
    if mode == ccxt.DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(precision))
    return _decimal(precision)


def _exchange(exchange_id: str) -> ccxt.Exchange:
    try:
        cls = getattr(ccxt, exchange_id)
    except AttributeError:
        raise PermanentSourceError(f"ccxt has no exchange {exchange_id!r}") from None
    return cls({"enableRateLimit": True, "timeout": 10_000})


class CcxtSource:
    name = "ccxt"

    def __init__(self, *, client_factory: Callable[[str], ccxt.Exchange] = _exchange):
        self._client_factory = client_factory
        self._clients: dict[str, ccxt.Exchange] = {}

    def client(self, exchange_id: str) -> ccxt.Exchange:
        if exchange_id not in self._clients:
            self._clients[exchange_id] = self._client_factory(exchange_id)
        return self._clients[exchange_id]

    def fetch(
        self,
        market: SourceMarket,
        *,
        since: pd.Timestamp,
        now: pd.Timestamp,
        on_page: Callable[[int], None] | None = None,
    ) -> pd.DataFrame:
        """Closed candles from `since`, page by page until the exchange has nothing newer.

        `on_page(n)` is told how many candles each page brought (a progress bar's hook)."""
        client = self.client(market.exchange)
        step_ms = timeframe_delta(market.timeframe).value // 1_000_000
        cursor = since.value // 1_000_000
        end = now.value // 1_000_000
        rows: list[list] = []
        while cursor <= end:
            page = self._call(
                market, client.fetch_ohlcv, market.ccxt_symbol, market.timeframe, cursor, PAGE_LIMIT
            )
            page = [row for row in page if row[0] >= cursor]
            if on_page is not None:
                on_page(len(page))
            if not page:
                break
            rows.extend(page)
            cursor = int(page[-1][0]) + step_ms
            if len(page) < PAGE_LIMIT:
                break
        frame = candle_frame([r[0] for r in rows], [r[1:6] for r in rows])
        return only_closed(frame, market=market, now=now)

    def limits(self, market: SourceMarket) -> MarketLimits:
        """Lot, tick and minimum-size rules from the exchange's market list."""
        client = self.client(market.exchange)
        if not client.markets:
            self._call(market, client.load_markets)
        info = client.markets.get(market.ccxt_symbol)
        if info is None:
            raise PermanentSourceError(f"{market}: {market.exchange} lists no {market.ccxt_symbol}")
        limits = info.get("limits") or {}
        precision = info.get("precision") or {}
        return MarketLimits(
            amount_step=_step(precision.get("amount"), client.precisionMode),
            price_step=_step(precision.get("price"), client.precisionMode),
            min_amount=_decimal((limits.get("amount") or {}).get("min")),
            min_notional=_decimal((limits.get("cost") or {}).get("min")),
        )

    @staticmethod
    def _call(market: SourceMarket, method, *args):
        try:
            return method(*args)
        except ccxt.NetworkError as exc:  # timeouts, rate limits, maintenance, DDoS protection
            raise TemporarySourceError(f"{market}: {type(exc).__name__}: {exc}") from exc
        except ccxt.BaseError as exc:  # bad symbol, bad request, exchange-side rejection
            raise PermanentSourceError(f"{market}: {type(exc).__name__}: {exc}") from exc
