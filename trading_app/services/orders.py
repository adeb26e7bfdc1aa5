"""The order manager: client order ids, placing orders through an adapter without ever placing
one twice, and turning exchange answers into Order, Position, balance and PnL changes.

Idempotency: the client order id is derived from (account prefix, trader, signal or position,
purpose), so a redelivered task builds the same id; the database refuses a second Order with it,
and before any retry the exchange is asked whether it already holds an order with that id.
"""

import logging
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from botai.money import MoneyAdd
from signals_app.models import Market, Signal
from trading_app.exchanges.base import (
    ExchangeAdapter,
    ExchangeOrder,
    OrderRequest,
    OrderStatus,
    PermanentExchangeError,
    TemporaryExchangeError,
)
from trading_app.exchanges.paper import PaperExchange, paper_balance
from trading_app.models import Balance, ExchangeAccount, Order, Position, Trader

logger = logging.getLogger(__name__)

PURPOSE_CODES = {
    Order.Purpose.OPEN: "o",
    Order.Purpose.CLOSE: "c",
    Order.Purpose.STOP_LOSS: "sl",
    Order.Purpose.TAKE_PROFIT: "tp",
}
# Attempts to place one order before it is marked FAILED (temporary errors only).
MAX_ATTEMPTS = 5
ACCEPTED = (Order.Status.SUBMITTED, Order.Status.OPEN, Order.Status.FILLED)
EXIT_SIDE = {Position.Side.LONG: Order.Side.SELL, Position.Side.SHORT: Order.Side.BUY}


def client_order_id(
    *,
    account: ExchangeAccount,
    trader_id: int,
    purpose: str,
    signal_id: int | None = None,
    position_id: int | None = None,
) -> str:
    """Entries and reversals are keyed by signal, SL/TP exits and closes by hand by position."""
    source = f"s{signal_id}" if signal_id is not None else f"p{position_id}"
    return f"{account.client_id_prefix}-{trader_id}-{source}-{PURPOSE_CODES[purpose]}"


def exit_order(
    *,
    account: ExchangeAccount,
    position: Position,
    market: Market,
    purpose: str,
    price: Decimal | None,
    signal: Signal | None = None,
) -> Order:
    """The (unsaved) reduce-only market order that closes all of `position`.

    A reversal is keyed by the signal that causes it; SL/TP exits and closes by hand (no signal)
    by the position, so each of those can exist once per position."""
    return Order(
        client_order_id=client_order_id(
            account=account, trader_id=position.trader_id, purpose=purpose,
            signal_id=signal.pk if signal is not None else None, position_id=position.pk,
        ),
        trader_id=position.trader_id, market=market, signal=signal, position=position,
        purpose=purpose, side=EXIT_SIDE[position.side], amount=position.amount, price=price,
    )  # fmt: skip


def order_request(order: Order) -> OrderRequest:
    return OrderRequest(
        client_order_id=order.client_order_id,
        symbol=order.market.ccxt_symbol,
        side=order.side,
        amount=order.amount,
        type=order.type,
        price=order.price if order.type == Order.Type.LIMIT else None,
        stop_loss=order.stop_loss,
        take_profit=order.take_profit,
        reduce_only=order.purpose != Order.Purpose.OPEN,
    )


def fill_apply(
    *,
    order: Order,
    fill: ExchangeOrder,
    position: Position,
    balance: Balance | None,
    now: datetime,
) -> Decimal:
    """Apply a filled order to the in-memory order, position and (paper) balance.

    Returns the realised PnL it adds to the trader (0 for an entry). Saving is the caller's: the
    engine saves in bulk, `order_record` one by one."""
    amount = fill.filled or order.amount
    average = fill.average if fill.average is not None else order.price
    fee = fill.fee or Decimal(0)
    order.status = Order.Status.FILLED
    order.exchange_order_id = fill.id
    order.filled_amount, order.average_price, order.fee = amount, average, fee
    order.fee_currency = fill.fee_currency or ""
    order.filled_at = fill.timestamp or now
    notional = amount * average
    if order.purpose == Order.Purpose.OPEN:
        position.status = Position.Status.OPEN
        position.amount, position.entry_price = amount, average
        position.fees += fee
        position.opened_at = order.filled_at
        if balance is not None:
            balance.free -= notional + fee
            balance.used += notional
        return Decimal(0)
    direction = 1 if position.side == Position.Side.LONG else -1
    gross = direction * (average - position.entry_price) * amount
    margin = position.entry_price * amount
    position.fees += fee
    position.realized_pnl = gross - position.fees
    position.unrealized_pnl = Decimal(0)
    position.exit_price = average
    position.status = Position.Status.CLOSED
    position.closed_at = order.filled_at
    position.close_reason = _close_reason(order)
    if balance is not None:
        balance.used -= margin
        balance.free += margin + gross - fee
    return position.realized_pnl


def _close_reason(order: Order) -> str:
    if order.purpose == Order.Purpose.STOP_LOSS:
        return Position.CloseReason.STOP_LOSS
    if order.purpose == Order.Purpose.TAKE_PROFIT:
        return Position.CloseReason.TAKE_PROFIT
    # A CLOSE is a reversal when a signal caused it, else a person's (services.positions).
    return Position.CloseReason.SIGNAL if order.signal_id else Position.CloseReason.MANUAL


def paper_fill(
    *,
    exchange: PaperExchange,
    order: Order,
    position: Position,
    balance: Balance,
    price: Decimal,
    now: datetime,
) -> Decimal:
    """Fill a market order on the paper exchange at reference `price` and apply it in memory, as
    `fill_apply` (the caller saves order, position and balance, and adds the PnL returned)."""
    order.attempts, order.submitted_at = 1, now
    fill = exchange.fill(order_request(order), price=price, at=now)
    return fill_apply(order=order, fill=fill, position=position, balance=balance, now=now)


def _entry_failed(order: Order, position: Position | None, now: datetime) -> None:
    if position is not None and order.purpose == Order.Purpose.OPEN:
        position.status = Position.Status.CANCELED
        position.close_reason = Position.CloseReason.ENTRY_FAILED
        position.closed_at = now


def order_record(*, order: Order, reply: ExchangeOrder, account: ExchangeAccount) -> None:
    """Store what the exchange says about `order` and apply a fill, in one transaction."""
    now = timezone.now()
    was_accepted = order.status in ACCEPTED and bool(order.exchange_order_id)
    with transaction.atomic():
        position = (
            Position.objects.select_for_update().get(pk=order.position_id)
            if order.position_id
            else None
        )
        order.exchange_order_id = reply.id
        if reply.status == OrderStatus.CLOSED and position is not None:
            balance = paper_balance(account, lock=True) if account.is_paper else None
            pnl = fill_apply(order=order, fill=reply, position=position, balance=balance, now=now)
            if balance is not None:
                balance.save(update_fields=["free", "used", "updated_at"])
            if pnl:
                Trader.objects.filter(pk=order.trader_id).update(
                    realized_pnl=MoneyAdd("realized_pnl", pnl)
                )
        elif reply.status == OrderStatus.OPEN:
            order.status = Order.Status.OPEN
        elif reply.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED):
            order.status = (
                Order.Status.REJECTED
                if reply.status == OrderStatus.REJECTED
                else Order.Status.CANCELED
            )
            order.status_reason = f"exchange reports the order {reply.status}"
            _entry_failed(order, position, now)
        else:  # accepted, state not reported yet (Bybit's create reply): sync asks again
            order.status = Order.Status.SUBMITTED
        order.save()
        if position is not None:
            position.save()
        if not was_accepted and order.signal_id and order.status in ACCEPTED:
            _signal_order_created(order.signal_id)


def _signal_order_created(signal_id: int) -> None:
    Signal.objects.filter(pk=signal_id).update(
        orders_created=F("orders_created") + 1, status=Signal.Status.EXECUTED
    )


def _order_reject(*, order: Order, status: str, reason: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        position = (
            Position.objects.select_for_update().get(pk=order.position_id)
            if order.position_id
            else None
        )
        order.status, order.status_reason = status, reason[:300]
        order.save(update_fields=["status", "status_reason", "updated_at"])
        _entry_failed(order, position, now)
        if position is not None:
            position.save()


def order_submit(*, order: Order, adapter: ExchangeAdapter, account: ExchangeAccount) -> None:
    """Place `order` (NEW or SUBMITTED) so that it exists exactly once on the exchange.

    An order that may already have reached the exchange (a previous attempt) is first looked up by
    its client order id. A temporary error leaves it SUBMITTED and is re-raised for the caller to
    retry later (after MAX_ATTEMPTS the order is FAILED); a permanent one rejects it."""
    request = order_request(order)
    if order.attempts > 0:
        found = adapter.find_order(client_order_id=order.client_order_id, symbol=request.symbol)
        if found is not None:
            logger.info("order %s found on the exchange, not placed again", order.client_order_id)
            order_record(order=order, reply=found, account=account)
            return
    if order.attempts >= MAX_ATTEMPTS:
        _order_reject(
            order=order,
            status=Order.Status.FAILED,
            reason=f"gave up after {order.attempts} attempts: {order.status_reason}",
        )
        return
    order.attempts += 1
    order.status = Order.Status.SUBMITTED
    order.submitted_at = timezone.now()
    order.save(update_fields=["attempts", "status", "submitted_at", "updated_at"])
    try:
        reply = adapter.create_order(request)
    except TemporaryExchangeError as exc:
        # The request may have reached the exchange before the connection failed: ask first.
        try:
            found = adapter.find_order(client_order_id=order.client_order_id, symbol=request.symbol)
        except TemporaryExchangeError:
            found = None
        if found is not None:
            order_record(order=order, reply=found, account=account)
            return
        order.status_reason = f"attempt {order.attempts}: {exc}"[:300]
        order.save(update_fields=["status_reason", "updated_at"])
        raise
    except PermanentExchangeError as exc:
        _order_reject(order=order, status=Order.Status.REJECTED, reason=str(exc))
        return
    order_record(order=order, reply=reply, account=account)


def order_place(*, order: Order, adapter: ExchangeAdapter, account: ExchangeAccount) -> bool:
    """`order_submit` for callers that carry on: a temporary error is logged and True returned
    (the order stays SUBMITTED for a retried task, or for positions_sync, to place later)."""
    try:
        order_submit(order=order, adapter=adapter, account=account)
    except TemporaryExchangeError as exc:
        logger.warning("order %s: %s (will retry)", order.client_order_id, exc)
        return True
    return False


def order_cancel(
    *, order: Order, adapter: ExchangeAdapter, account: ExchangeAccount, reason: str
) -> None:
    """Withdraw an unsettled order. The exchange is asked first, by exchange id or else by client
    order id: a fill it reports is recorded as a fill, an order still open there is canceled
    there, and one it never received is canceled here (so nobody places it later)."""
    symbol = order.market.ccxt_symbol
    if order.exchange_order_id:
        reply = adapter.fetch_order(order_id=order.exchange_order_id, symbol=symbol)
    else:
        reply = adapter.find_order(client_order_id=order.client_order_id, symbol=symbol)
    if reply is not None and reply.status == OrderStatus.OPEN:
        reply = adapter.cancel_order(order_id=reply.id, symbol=symbol)
    if reply is None:
        _order_reject(order=order, status=Order.Status.CANCELED, reason=reason)
    else:
        order_record(order=order, reply=reply, account=account)


def order_refresh(*, order: Order, adapter: ExchangeAdapter, account: ExchangeAccount) -> None:
    """Ask the exchange for the state of an accepted order (sync_positions)."""
    try:
        reply = adapter.fetch_order(
            order_id=order.exchange_order_id, symbol=order.market.ccxt_symbol
        )
    except PermanentExchangeError as exc:
        logger.warning("order %s: %s", order.client_order_id, exc)
        return
    if reply.status != OrderStatus.CLOSED or order.status != Order.Status.FILLED:
        order_record(order=order, reply=reply, account=account)
