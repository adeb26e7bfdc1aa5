"""Any ccxt exchange (Bybit first) behind the ExchangeAdapter interface.

The only module of trading_app that imports ccxt. ccxt's exceptions become ours here:
`OperationFailed` (network, timeout, rate limit, bad gateway) is temporary, every other ccxt
error is a refusal by the exchange and permanent.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import ccxt

from trading_app.exchanges.base import (
    BalanceEntry,
    ExchangeAdapter,
    ExchangeOrder,
    ExchangePosition,
    MarketRules,
    OrderRequest,
    PermanentExchangeError,
    TemporaryExchangeError,
)

# The request parameter each exchange filters orders by client order id with (ccxt's unified
# `clientOrderId` is accepted on create by most exchanges, but not on the order queries).
CLIENT_ID_QUERY_PARAM = {"bybit": "orderLinkId"}
# Bybit refuses fetchOrder on unified accounts unless told we know it only sees the last 500 orders.
FETCH_ORDER_PARAMS = {"bybit": {"acknowledged": True}}
MAX_REASON = 300
# Exchange errors ccxt files under a permanent class that are transient in fact, matched in the
# response body ccxt puts in the message. Bybit 10016: "System error. Please try again later."
TRANSIENT_ERRORS = re.compile(r'"retCode"\s*:\s*"?10016\b')


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except ccxt.OperationFailed as exc:  # NetworkError, RequestTimeout, RateLimitExceeded, ...
        raise TemporaryExchangeError(f"{type(exc).__name__}: {exc}"[:MAX_REASON]) from exc
    except ccxt.BaseError as exc:  # InsufficientFunds, InvalidOrder, AuthenticationError, ...
        reason = f"{type(exc).__name__}: {exc}"[:MAX_REASON]
        if TRANSIENT_ERRORS.search(str(exc)):
            raise TemporaryExchangeError(reason) from exc
        raise PermanentExchangeError(reason) from exc


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _step(precision: Any, mode: int) -> Decimal | None:
    if precision is None:
        return None
    if mode == ccxt.DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(precision))
    return Decimal(str(precision))


class CcxtExchange(ExchangeAdapter):
    """One account on a ccxt exchange.

    `markets` (and `currencies`) preload the exchange's market list, as ccxt's set_markets does;
    without them ccxt loads it from the exchange on first use. Credentials are held by the ccxt
    object only, and this object's repr never shows them."""

    def __init__(
        self,
        exchange_id: str,
        *,
        sandbox: bool,
        api_key: str = "",
        secret: str = "",
        password: str = "",
        options: dict | None = None,
        markets: dict | None = None,
        currencies: dict | None = None,
        timeout_ms: int = 10_000,
    ):
        try:
            exchange_class = getattr(ccxt, exchange_id)
        except AttributeError:
            raise PermanentExchangeError(f"ccxt has no exchange '{exchange_id}'") from None
        config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms}
        if options:
            config["options"] = options
        self.exchange_id = exchange_id
        self._exchange = exchange_class(config)
        # Credentials are set after construction so they never appear in the config dict above.
        self._exchange.apiKey, self._exchange.secret = api_key, secret
        if password:
            self._exchange.password = password
        if sandbox:
            with _translated():
                self._exchange.set_sandbox_mode(True)
        if markets is not None:
            self.use_markets(markets, currencies)

    def __repr__(self) -> str:
        return f"<CcxtExchange {self.exchange_id} sandbox={self.sandbox}>"

    @property
    def sandbox(self) -> bool:
        return bool(self._exchange.isSandboxModeEnabled)

    # ---------------------------------------------------------------- markets
    def use_markets(self, markets: dict, currencies: dict | None = None) -> None:
        """Take the exchange's market list as given (ccxt's set_markets) instead of loading it."""
        self._exchange.set_markets(markets, currencies)

    def market_rules(self, symbols: list[str]) -> dict[str, MarketRules]:
        with _translated():
            markets = self._exchange.load_markets()
        mode = self._exchange.precisionMode
        rules = {}
        for symbol in symbols:
            market = markets.get(symbol)
            if market is None:
                continue
            limits, precision = market.get("limits") or {}, market.get("precision") or {}
            rules[symbol] = MarketRules(
                symbol=symbol,
                amount_step=_step(precision.get("amount"), mode),
                price_step=_step(precision.get("price"), mode),
                min_amount=_decimal((limits.get("amount") or {}).get("min")),
                min_notional=_decimal((limits.get("cost") or {}).get("min")),
            )
        return rules

    # ---------------------------------------------------------------- orders
    def create_order(self, request: OrderRequest) -> ExchangeOrder:
        params: dict[str, Any] = {"clientOrderId": request.client_order_id}
        if request.reduce_only:
            params["reduceOnly"] = True
        # Attached SL/TP: ccxt's unified form, sent with the order where the exchange supports it.
        if self._exchange.has.get("createOrderWithTakeProfitAndStopLoss"):
            if request.stop_loss is not None:
                params["stopLoss"] = {"triggerPrice": float(request.stop_loss)}
            if request.take_profit is not None:
                params["takeProfit"] = {"triggerPrice": float(request.take_profit)}
        price = None if request.price is None else float(request.price)
        with _translated():
            raw = self._exchange.create_order(
                request.symbol, request.type, request.side, float(request.amount), price, params
            )
        order = self._order(raw)
        # Bybit's reply carries only the ids; keep the client id we sent if the reply lacks it.
        if order.client_order_id is None:
            order = ExchangeOrder(**{**order.__dict__, "client_order_id": request.client_order_id})
        return order

    def find_order(self, *, client_order_id: str, symbol: str) -> ExchangeOrder | None:
        key = CLIENT_ID_QUERY_PARAM.get(self.exchange_id, "clientOrderId")
        params = {key: client_order_id}
        has = self._exchange.has
        queries = [self._exchange.fetch_open_orders]
        if has.get("fetchCanceledAndClosedOrders"):
            queries.append(self._exchange.fetch_canceled_and_closed_orders)
        elif has.get("fetchClosedOrders"):
            queries.append(self._exchange.fetch_closed_orders)
        for query in queries:
            with _translated():
                found = query(symbol, None, None, params)
            for raw in found:
                # Filter again: an exchange that ignores the parameter returns every order.
                if raw.get("clientOrderId") == client_order_id:
                    return self._order(raw)
        return None

    def fetch_order(self, *, order_id: str, symbol: str) -> ExchangeOrder:
        params = FETCH_ORDER_PARAMS.get(self.exchange_id, {})
        with _translated():
            return self._order(self._exchange.fetch_order(order_id, symbol, params))

    def cancel_order(self, *, order_id: str, symbol: str) -> ExchangeOrder:
        with _translated():
            return self._order(self._exchange.cancel_order(order_id, symbol))

    # ---------------------------------------------------------------- account
    def fetch_balance(self) -> dict[str, BalanceEntry]:
        with _translated():
            raw = self._exchange.fetch_balance()
        free, used = raw.get("free") or {}, raw.get("used") or {}
        return {
            asset: BalanceEntry(
                asset=asset,
                free=_decimal(free.get(asset)) or Decimal(0),
                used=_decimal(used.get(asset)) or Decimal(0),
            )
            for asset in sorted(set(free) | set(used))
        }

    def fetch_positions(self, symbols: list[str] | None = None) -> list[ExchangePosition]:
        with _translated():
            raw_positions = self._exchange.fetch_positions(symbols)
        positions = []
        for raw in raw_positions:
            contracts = _decimal(raw.get("contracts")) or Decimal(0)
            if contracts == 0:
                continue
            size = _decimal(raw.get("contractSize")) or Decimal(1)
            positions.append(
                ExchangePosition(
                    symbol=raw["symbol"],
                    side=raw.get("side") or "long",
                    amount=contracts * size,
                    entry_price=_decimal(raw.get("entryPrice")),
                    unrealized_pnl=_decimal(raw.get("unrealizedPnl")),
                    stop_loss=_decimal(raw.get("stopLossPrice")),
                    take_profit=_decimal(raw.get("takeProfitPrice")),
                )
            )
        return positions

    # ---------------------------------------------------------------- parsing
    @staticmethod
    def _order(raw: dict) -> ExchangeOrder:
        fee = raw.get("fee") or {}
        timestamp = raw.get("timestamp")
        return ExchangeOrder(
            id=str(raw["id"]),
            client_order_id=raw.get("clientOrderId"),
            symbol=raw.get("symbol") or "",
            status=raw.get("status"),
            side=raw.get("side"),
            amount=_decimal(raw.get("amount")),
            filled=_decimal(raw.get("filled")),
            average=_decimal(raw.get("average")),
            fee=_decimal(fee.get("cost")),
            fee_currency=fee.get("currency"),
            timestamp=None if timestamp is None else datetime.fromtimestamp(timestamp / 1000, UTC),
        )
