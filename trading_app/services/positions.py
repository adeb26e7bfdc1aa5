"""Closing a trader's positions by hand (admin action, API): every active position is ended at
market through the order manager, with the engine's building blocks (exit_order, paper_fill,
order_place), so a close by hand is booked like a reversal's close.

Idempotent: the close of a position is keyed by the position (client order id ...-p<id>-c), and
the account's paper balance or the trader's row is locked while the orders are written, so a
double click waits for the first and then finds nothing left to close. Closing does not disable
the trader: disable it first to keep it flat.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from botai.money import MoneyAdd
from trading_app.exchanges import ExchangeAdapter, ExchangeError, adapter_for
from trading_app.exchanges.paper import PaperExchange, paper_balance
from trading_app.models import ExchangeAccount, Order, Position, Trader
from trading_app.selectors import latest_closes
from trading_app.services.orders import exit_order, order_cancel, order_place, paper_fill

logger = logging.getLogger(__name__)


@dataclass
class CloseResult:
    closed: int = 0  # close orders placed (paper: filled at once)
    withdrawn: int = 0  # entries that had not filled, canceled
    problems: list[str] = field(default_factory=list)  # positions left active, and why

    def as_dict(self) -> dict:
        return {"closed": self.closed, "withdrawn": self.withdrawn, "problems": self.problems}

    def __str__(self) -> str:
        text = f"{self.closed} position(s) closed, {self.withdrawn} pending entry(ies) withdrawn"
        return "; ".join([text, *self.problems])


def positions_close(*, trader: Trader, reason: str, now: datetime | None = None) -> CloseResult:
    """Close every PENDING/OPEN position of `trader` at market; `reason` is kept on the orders.

    A pending entry is settled first: filled ones are recorded (and then closed), unfilled ones
    withdrawn. Paper positions fill at their market's latest close, stamped `now`; exchange
    closes are placed once committed, and a temporary error leaves them to positions_sync."""
    now = now or timezone.now()
    account = trader.account
    adapter = adapter_for(account)
    result = CloseResult()
    _withdraw_entries(trader=trader, adapter=adapter, account=account, reason=reason, result=result)
    if account.is_paper:
        _close_paper(trader=trader, account=account, reason=reason, now=now, result=result)
    else:
        _close_exchange(
            trader=trader, adapter=adapter, account=account, reason=reason, result=result
        )
    logger.info("trader %s: %s (%s)", trader.name, result, reason)
    return result


def _withdraw_entries(
    *,
    trader: Trader,
    adapter: ExchangeAdapter,
    account: ExchangeAccount,
    reason: str,
    result: CloseResult,
) -> None:
    entries = Order.objects.filter(
        trader=trader, purpose=Order.Purpose.OPEN, status__in=Order.UNSETTLED,
        position__status=Position.Status.PENDING,
    ).select_related("market")  # fmt: skip
    for entry in entries.order_by("pk"):
        try:
            order_cancel(order=entry, adapter=adapter, account=account, reason=reason)
        except ExchangeError as exc:
            result.problems.append(f"{entry.market.symbol}: entry not withdrawn ({exc})")
            continue
        entry.refresh_from_db(fields=["status"])
        if entry.status in (Order.Status.CANCELED, Order.Status.REJECTED):
            result.withdrawn += 1
        elif entry.status != Order.Status.FILLED:  # a filled one is closed below
            result.problems.append(
                f"{entry.market.symbol}: entry {entry.status}, its cancel not confirmed yet"
            )


def _open_positions(trader: Trader) -> list[Position]:
    return list(
        Position.objects.filter(trader=trader, status=Position.Status.OPEN)
        .select_related("market")
        .order_by("pk")
    )


def _close_order(
    *, account: ExchangeAccount, position: Position, price: Decimal | None, reason: str
) -> Order:
    order = exit_order(
        account=account, position=position, market=position.market,
        purpose=Order.Purpose.CLOSE, price=price,
    )  # fmt: skip
    order.status_reason = reason[:300]
    return order


def _close_paper(
    *, trader: Trader, account: ExchangeAccount, reason: str, now: datetime, result: CloseResult
) -> None:
    exchange = PaperExchange(account)
    with transaction.atomic():
        balance = paper_balance(account, lock=True)  # as the engine and sync: one writer a time
        positions = _open_positions(trader)
        prices = latest_closes(market_ids={p.market_id for p in positions})
        realized = Decimal(0)
        for position in positions:
            price = prices.get(position.market_id)
            if price is None:
                result.problems.append(f"{position.market.symbol}: no candles to fill at")
                continue
            order = _close_order(account=account, position=position, price=price, reason=reason)
            realized += paper_fill(
                exchange=exchange, order=order, position=position, balance=balance,
                price=price, now=now,
            )  # fmt: skip
            order.save()
            position.save()
            result.closed += 1
        balance.save(update_fields=["free", "used", "updated_at"])
        if realized:
            Trader.objects.filter(pk=trader.pk).update(
                realized_pnl=MoneyAdd("realized_pnl", realized)
            )


def _close_exchange(
    *,
    trader: Trader,
    adapter: ExchangeAdapter,
    account: ExchangeAccount,
    reason: str,
    result: CloseResult,
) -> None:
    """Write the close orders NEW and commit, then place them (the engine's order of things)."""
    with transaction.atomic():
        Trader.objects.select_for_update().get(pk=trader.pk)  # as the engine's books do
        positions = _open_positions(trader)
        prices = latest_closes(market_ids={p.market_id for p in positions})
        orders = [
            _close_order(account=account, position=p, price=prices.get(p.market_id), reason=reason)
            for p in positions
        ]
        existing = dict(
            Order.objects.filter(client_order_id__in=[o.client_order_id for o in orders])
            .values_list("client_order_id", "status")
        )  # fmt: skip
        new = [o for o in orders if o.client_order_id not in existing]
        Order.objects.bulk_create(new)
    for order in orders:
        status = existing.get(order.client_order_id)
        if status in (Order.Status.REJECTED, Order.Status.FAILED, Order.Status.CANCELED):
            result.problems.append(
                f"{order.market.symbol}: its close order {order.client_order_id} is {status}"
            )
    for order in new:
        order_place(order=order, adapter=adapter, account=account)
    result.closed += len(new)
