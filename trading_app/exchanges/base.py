"""The exchange adapter interface and the value types that cross it.

Callers (the order manager, position sync) see only these types and our two error classes; no ccxt
type leaves `trading_app.exchanges`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


class ExchangeError(Exception):
    """Base of the errors an adapter raises."""


class TemporaryExchangeError(ExchangeError):
    """Network, timeout, rate limit, exchange busy: retry later with the same client order id.

    After one of these on order creation the order may or may not exist on the exchange, so the
    caller looks it up by client order id before retrying."""


class PermanentExchangeError(ExchangeError):
    """The exchange refused the request (insufficient funds, invalid order, bad credentials):
    retrying the same request cannot succeed, so the order is rejected with this reason."""


class OrderStatus:
    """Exchange-side order states, as ccxt names them."""

    OPEN = "open"
    CLOSED = "closed"  # fully filled
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True)
class MarketRules:
    """Lot and notional limits of one symbol; None means the exchange sets no such limit."""

    symbol: str
    amount_step: Decimal | None = None
    price_step: Decimal | None = None
    min_amount: Decimal | None = None
    min_notional: Decimal | None = None


@dataclass(frozen=True)
class OrderRequest:
    """What to place; `client_order_id` is the idempotency key the exchange keeps with it."""

    client_order_id: str
    symbol: str
    side: str  # "buy" | "sell"
    amount: Decimal
    type: str = "market"  # "market" | "limit"
    price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    reduce_only: bool = False


@dataclass(frozen=True)
class ExchangeOrder:
    """An order as the exchange reports it. Unknown values are None (Bybit's create reply carries
    only the ids; the rest comes from a later fetch)."""

    id: str
    client_order_id: str | None
    symbol: str
    status: str | None = None
    side: str | None = None
    amount: Decimal | None = None
    filled: Decimal | None = None
    average: Decimal | None = None
    fee: Decimal | None = None
    fee_currency: str | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True)
class ExchangePosition:
    symbol: str
    side: str  # "long" | "short"
    amount: Decimal
    entry_price: Decimal | None
    unrealized_pnl: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None


@dataclass(frozen=True)
class BalanceEntry:
    asset: str
    free: Decimal
    used: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.used


class ExchangeAdapter(abc.ABC):
    """One exchange account. Implementations: PaperExchange (database), CcxtExchange (ccxt)."""

    @abc.abstractmethod
    def market_rules(self, symbols: list[str]) -> dict[str, MarketRules]:
        """Precision and minimums for the given symbols (unknown symbols are left out)."""

    @abc.abstractmethod
    def create_order(self, request: OrderRequest) -> ExchangeOrder: ...

    @abc.abstractmethod
    def find_order(self, *, client_order_id: str, symbol: str) -> ExchangeOrder | None:
        """The order placed with this client order id, or None when the exchange has none."""

    @abc.abstractmethod
    def fetch_order(self, *, order_id: str, symbol: str) -> ExchangeOrder: ...

    @abc.abstractmethod
    def cancel_order(self, *, order_id: str, symbol: str) -> ExchangeOrder: ...

    @abc.abstractmethod
    def fetch_balance(self) -> dict[str, BalanceEntry]: ...

    @abc.abstractmethod
    def fetch_positions(self, symbols: list[str] | None = None) -> list[ExchangePosition]: ...
