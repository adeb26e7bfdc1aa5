"""The built-in paper exchange: market orders fill at the latest candle close, moved against the
taker by the account's slippage, and pay its taker fee.

Its memory is the database: an order exists on the paper exchange once its Order row carries the
paper exchange id (written in the same transaction as the fill, so a crash before commit means the
order never happened); balances are the account's Balance rows, positions our Position rows.
Stop-loss and take-profit triggers on candle high/low are found by `triggered_exit`.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from signals_app.models import Candle, Market
from trading_app.exchanges.base import (
    BalanceEntry,
    ExchangeAdapter,
    ExchangeOrder,
    ExchangePosition,
    MarketRules,
    OrderRequest,
    OrderStatus,
    PermanentExchangeError,
)
from trading_app.models import Balance, ExchangeAccount, Order, Position

PERCENT = Decimal(100)


def paper_order_id(client_order_id: str) -> str:
    return f"paper-{client_order_id}"


@dataclass(frozen=True)
class Exit:
    """A stop-loss or take-profit trigger found in a candle."""

    reason: str  # Position.CloseReason.STOP_LOSS | TAKE_PROFIT
    price: Decimal  # trigger price before slippage
    candle_time: datetime


def triggered_exit(
    *, side: str, stop_loss: Decimal | None, take_profit: Decimal | None, candles
) -> Exit | None:
    """The first SL/TP trigger in `candles` (iterable of (open_time, open, high, low), ascending).

    A stop triggers when the candle's low (long) or high (short) reaches it, a take profit on the
    high (long) or low (short). When both fall inside one candle the stop is assumed first: the
    candle's path is unknown and assuming the worse outcome keeps paper results honest. A stop
    gapped through at the open fills at the open, which is worse than the stop."""
    long = side == Position.Side.LONG
    for open_time, open_, high, low in candles:
        open_, high, low = Decimal(repr(open_)), Decimal(repr(high)), Decimal(repr(low))
        if stop_loss is not None and (low <= stop_loss if long else high >= stop_loss):
            gapped = open_ < stop_loss if long else open_ > stop_loss
            return Exit(Position.CloseReason.STOP_LOSS, open_ if gapped else stop_loss, open_time)
        if take_profit is not None and (high >= take_profit if long else low <= take_profit):
            return Exit(Position.CloseReason.TAKE_PROFIT, take_profit, open_time)
    return None


class PaperExchange(ExchangeAdapter):
    """Paper trading for one PAPER account."""

    def __init__(self, account: ExchangeAccount):
        self.account = account
        self.slippage = Decimal(str(account.paper_slippage_percentage)) / PERCENT
        self.fee_rate = Decimal(str(account.paper_fee_percentage)) / PERCENT

    def __repr__(self) -> str:
        return f"<PaperExchange {self.account.name}>"

    # ---------------------------------------------------------------- pricing
    def fill(self, request: OrderRequest, *, price: Decimal, at: datetime) -> ExchangeOrder:
        """The fill of a market order at reference `price` (buying pays more, selling gets less)."""
        direction = 1 if request.side == "buy" else -1
        average = price * (1 + direction * self.slippage)
        return ExchangeOrder(
            id=paper_order_id(request.client_order_id),
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            status=OrderStatus.CLOSED,
            side=request.side,
            amount=request.amount,
            filled=request.amount,
            average=average,
            fee=request.amount * average * self.fee_rate,
            fee_currency=self.account.quote_currency,
            timestamp=at,
        )

    def latest_prices(self, symbols: list[str]) -> dict[str, tuple[Decimal, datetime]]:
        """symbol -> (latest close, its candle open time), one query."""
        latest = Candle.objects.filter(market=OuterRef("pk")).order_by("-open_time")
        rows = (
            Market.objects.filter(exchange=self.account.exchange, ccxt_symbol__in=symbols)
            .annotate(
                close=Subquery(latest.values("close")[:1]),
                time=Subquery(latest.values("open_time")[:1]),
            )
            .values_list("ccxt_symbol", "close", "time")
        )
        return {symbol: (Decimal(repr(close)), time) for symbol, close, time in rows if close}

    # ---------------------------------------------------------------- adapter interface
    def market_rules(self, symbols: list[str]) -> dict[str, MarketRules]:
        markets = Market.objects.filter(exchange=self.account.exchange, ccxt_symbol__in=symbols)
        return {
            m.ccxt_symbol: MarketRules(
                symbol=m.ccxt_symbol,
                amount_step=m.amount_step,
                price_step=m.price_step,
                min_amount=m.min_amount,
                min_notional=m.min_notional,
            )
            for m in markets
        }

    def create_order(self, request: OrderRequest) -> ExchangeOrder:
        if request.type != "market":
            raise PermanentExchangeError("the paper exchange fills market orders only")
        quote = self.latest_prices([request.symbol]).get(request.symbol)
        if quote is None:
            raise PermanentExchangeError(f"no candles for {request.symbol}: nothing to fill at")
        return self.fill(request, price=quote[0], at=timezone.now())

    def find_order(self, *, client_order_id: str, symbol: str) -> ExchangeOrder | None:
        order = (
            Order.objects.filter(
                client_order_id=client_order_id,
                exchange_order_id=paper_order_id(client_order_id),
                trader__account=self.account,
            )
            .select_related("market")
            .first()
        )
        return None if order is None else self._order(order)

    def fetch_order(self, *, order_id: str, symbol: str) -> ExchangeOrder:
        order = (
            Order.objects.filter(exchange_order_id=order_id, trader__account=self.account)
            .select_related("market")
            .first()
        )
        if order is None:
            raise PermanentExchangeError(f"paper order {order_id} not found")
        return self._order(order)

    def cancel_order(self, *, order_id: str, symbol: str) -> ExchangeOrder:
        raise PermanentExchangeError("paper market orders fill at once: nothing to cancel")

    def fetch_balance(self) -> dict[str, BalanceEntry]:
        return {
            b.asset: BalanceEntry(asset=b.asset, free=b.free, used=b.used)
            for b in Balance.objects.filter(account=self.account)
        }

    def fetch_positions(self, symbols: list[str] | None = None) -> list[ExchangePosition]:
        positions = Position.objects.filter(
            trader__account=self.account, status=Position.Status.OPEN
        ).select_related("market")
        if symbols is not None:
            positions = positions.filter(market__ccxt_symbol__in=symbols)
        return [
            ExchangePosition(
                symbol=p.market.ccxt_symbol,
                side=p.side.lower(),
                amount=p.amount,
                entry_price=p.entry_price,
                unrealized_pnl=p.unrealized_pnl,
                stop_loss=p.stop_loss,
                take_profit=p.take_profit,
            )
            for p in positions
        ]

    @staticmethod
    def _order(order: Order) -> ExchangeOrder:
        status = {
            Order.Status.FILLED: OrderStatus.CLOSED,
            Order.Status.CANCELED: OrderStatus.CANCELED,
            Order.Status.REJECTED: OrderStatus.REJECTED,
        }.get(order.status, OrderStatus.OPEN)
        return ExchangeOrder(
            id=order.exchange_order_id,
            client_order_id=order.client_order_id,
            symbol=order.market.ccxt_symbol,
            status=status,
            side=order.side,
            amount=order.amount,
            filled=order.filled_amount,
            average=order.average_price,
            fee=order.fee,
            fee_currency=order.fee_currency,
            timestamp=order.filled_at,
        )


def paper_balance(account: ExchangeAccount, *, lock: bool) -> Balance:
    """The account's quote balance row, created with the initial paper balance on first use."""
    balances = Balance.objects.select_for_update() if lock else Balance.objects
    balance, _ = balances.get_or_create(
        account=account,
        asset=account.quote_currency,
        defaults={"free": account.paper_initial_balance, "used": Decimal(0)},
    )
    return balance
