"""sync_positions, once a minute: settle orders, close positions whose stop loss or take profit
was hit, mark the rest to market, snapshot every trader's equity and halt on drawdown."""

import logging
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from botai.money import MoneyAdd
from signals_app.models import Candle
from trading_app import risk
from trading_app.exchanges import ExchangeError, adapter_for
from trading_app.exchanges.paper import Exit, PaperExchange, paper_balance, triggered_exit
from trading_app.models import EquitySnapshot, ExchangeAccount, Order, Position, Trader
from trading_app.selectors import latest_closes, trader_equity
from trading_app.services.orders import exit_order, order_refresh, order_submit, paper_fill

logger = logging.getLogger(__name__)

# An order the engine left NEW/SUBMITTED without an exchange id is retried after this long.
STALE_ORDER_AGE = timedelta(minutes=1)


@dataclass
class SyncResult:
    orders_refreshed: int = 0
    stops: int = 0
    take_profits: int = 0
    closed_on_exchange: int = 0
    marked: int = 0
    snapshots: int = 0
    halted: int = 0

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def positions_sync(
    *,
    now: datetime | None = None,
    trader_ids: Collection[int] | None = None,
    mark_only: bool = False,
) -> SyncResult:
    """`trader_ids` limits the sync to those traders: a backtest syncs its own trader only, so
    it neither locks nor changes live rows and never calls a live exchange. `mark_only` only
    marks the open positions to market (a backtest that knows no order, exit, peak or halt is
    due on this candle)."""
    now = now or timezone.now()
    result = SyncResult()
    mine = Q() if trader_ids is None else Q(trader_id__in=trader_ids)
    if mark_only:
        _mark_to_market(result=result, mine=mine)
        return result
    _settle_orders(now=now, result=result, mine=mine)
    accounts = ExchangeAccount.objects.filter(traders__positions__status=Position.Status.OPEN)
    if trader_ids is not None:
        accounts = accounts.filter(traders__in=trader_ids)
    for account in accounts.distinct():
        if account.is_paper:
            _exits_paper(account=account, now=now, result=result, mine=mine)
        else:
            _exits_exchange(account=account, now=now, result=result, mine=mine)
    _mark_to_market(result=result, mine=mine)
    _snapshot_equity(now=now, result=result, trader_ids=trader_ids)
    return result


def _settle_orders(*, now: datetime, result: SyncResult, mine: Q) -> None:
    """Live accounts: fetch accepted orders, re-place (after a lookup) ones left unplaced."""
    unsettled = Order.objects.filter(mine, status__in=Order.UNSETTLED).exclude(
        trader__account__mode=ExchangeAccount.Mode.PAPER
    )
    adapters = {}
    for order in unsettled.select_related("market", "trader__account").order_by("pk"):
        account = order.trader.account
        adapter = adapters.get(account.pk) or adapters.setdefault(account.pk, adapter_for(account))
        try:
            if order.exchange_order_id:
                order_refresh(order=order, adapter=adapter, account=account)
            elif order.created_at <= now - STALE_ORDER_AGE:
                order_submit(order=order, adapter=adapter, account=account)
            else:
                continue
        except ExchangeError as exc:
            logger.warning("order %s not settled: %s", order.client_order_id, exc)
            continue
        result.orders_refreshed += 1


def _candles_since(positions: list[Position]) -> dict[int, list[tuple]]:
    """market id -> [(open_time, open, high, low)] after the earliest checked candle, ascending."""
    since: dict[int, datetime] = {}
    for p in positions:
        start = p.checked_until or p.opened_at
        since[p.market_id] = min(since.get(p.market_id, start), start)
    if not since:
        return {}
    rows = (
        Candle.objects.filter(market_id__in=since, open_time__gt=min(since.values()))
        .order_by("market_id", "open_time")
        .values_list("market_id", "open_time", "open", "high", "low")
    )
    candles: dict[int, list[tuple]] = defaultdict(list)
    for market_id, open_time, open_, high, low in rows:
        candles[market_id].append((open_time, open_, high, low))
    return candles


def _exit_of(position: Position, candles: dict[int, list[tuple]]) -> tuple[Exit | None, datetime]:
    start = position.checked_until or position.opened_at
    window = [c for c in candles.get(position.market_id, []) if c[0] > start]
    exit_ = triggered_exit(
        side=position.side,
        stop_loss=position.stop_loss,
        take_profit=position.take_profit,
        candles=window,
    )
    return exit_, (window[-1][0] if window else start)


def _exits_paper(*, account: ExchangeAccount, now: datetime, result: SyncResult, mine: Q) -> None:
    exchange = PaperExchange(account)
    with transaction.atomic():
        balance = paper_balance(account, lock=True)
        positions = list(
            Position.objects.filter(mine, trader__account=account, status=Position.Status.OPEN)
            .select_related("market")
            .select_for_update(of=("self",))
        )
        candles = _candles_since(positions)
        realized: dict[int, Decimal] = defaultdict(Decimal)
        for position in positions:
            exit_, checked = _exit_of(position, candles)
            position.checked_until = checked
            if exit_ is None:
                position.save(update_fields=["checked_until", "updated_at"])
                continue
            purpose = (
                Order.Purpose.STOP_LOSS
                if exit_.reason == Position.CloseReason.STOP_LOSS
                else Order.Purpose.TAKE_PROFIT
            )
            order = exit_order(
                account=account, position=position, market=position.market, purpose=purpose,
                price=exit_.price,
            )  # fmt: skip
            realized[position.trader_id] += paper_fill(
                exchange=exchange, order=order, position=position, balance=balance,
                price=exit_.price, now=now,
            )  # fmt: skip
            order.save()
            position.save()
            if purpose == Order.Purpose.STOP_LOSS:
                result.stops += 1
            else:
                result.take_profits += 1
        balance.save(update_fields=["free", "used", "updated_at"])
        for trader_id, pnl in realized.items():
            Trader.objects.filter(pk=trader_id).update(realized_pnl=MoneyAdd("realized_pnl", pnl))


def _exits_exchange(
    *, account: ExchangeAccount, now: datetime, result: SyncResult, mine: Q
) -> None:
    """The exchange executes the SL/TP attached to the entry; a position it no longer holds is
    closed here, at the trigger the candles show (or the latest close when none did)."""
    positions = list(
        Position.objects.filter(
            mine, trader__account=account, status=Position.Status.OPEN
        ).select_related("market")
    )
    adapter = adapter_for(account)
    try:
        held = {
            (p.symbol, p.side)
            for p in adapter.fetch_positions(sorted({p.market.ccxt_symbol for p in positions}))
        }
    except ExchangeError as exc:
        logger.warning("account %s: positions unavailable: %s", account.name, exc)
        return
    candles = _candles_since(positions)
    prices = latest_closes(market_ids={p.market_id for p in positions})
    for position in positions:
        exit_, checked = _exit_of(position, candles)
        position.checked_until = checked
        if (position.market.ccxt_symbol, position.side.lower()) in held:
            position.save(update_fields=["checked_until", "updated_at"])
            continue
        price = exit_.price if exit_ else prices.get(position.market_id, position.entry_price)
        direction = 1 if position.side == Position.Side.LONG else -1
        with transaction.atomic():
            position.exit_price = price
            position.realized_pnl = direction * (price - position.entry_price) * position.amount
            position.realized_pnl -= position.fees
            position.unrealized_pnl = Decimal(0)
            position.status, position.closed_at = Position.Status.CLOSED, now
            position.close_reason = exit_.reason if exit_ else Position.CloseReason.EXCHANGE
            position.save()
            Trader.objects.filter(pk=position.trader_id).update(
                realized_pnl=MoneyAdd("realized_pnl", position.realized_pnl)
            )
        result.closed_on_exchange += 1


def _mark_to_market(*, result: SyncResult, mine: Q) -> None:
    positions = list(Position.objects.filter(mine, status=Position.Status.OPEN))
    prices = latest_closes(market_ids={p.market_id for p in positions})
    for position in positions:
        price = prices.get(position.market_id)
        if price is None:
            continue
        direction = 1 if position.side == Position.Side.LONG else -1
        position.unrealized_pnl = direction * (price - position.entry_price) * position.amount
    Position.objects.bulk_update(positions, ["unrealized_pnl"], batch_size=1000)
    result.marked = len(positions)


def _snapshot_equity(
    *, now: datetime, result: SyncResult, trader_ids: Collection[int] | None
) -> None:
    minute = now.replace(second=0, microsecond=0)
    traders = Trader.objects.filter(enabled=True)
    traders = list(traders if trader_ids is None else traders.filter(pk__in=trader_ids))
    positions: dict[int, list[Position]] = defaultdict(list)
    for position in Position.objects.filter(trader__in=traders, status=Position.Status.OPEN):
        positions[position.trader_id].append(position)
    snapshots = []
    for trader in traders:
        equity = trader_equity(trader=trader, positions=positions[trader.pk])
        peak = max(trader.peak_equity or trader.initial_capital, equity)
        drawdown = risk.drawdown_percentage(equity=equity, peak=peak)
        snapshots.append(
            EquitySnapshot(
                trader=trader, time=minute, equity=equity, realized_pnl=trader.realized_pnl,
                unrealized_pnl=equity - trader.initial_capital - trader.realized_pnl,
                open_positions=len(positions[trader.pk]), peak_equity=peak,
                drawdown_percentage=drawdown,
            )
        )  # fmt: skip
        changes: dict = {}
        if peak != trader.peak_equity:
            changes["peak_equity"] = peak
        if drawdown >= trader.max_drawdown_percentage and not trader.is_halted:
            changes |= {
                "is_halted": True,
                "halted_at": now,
                "halted_reason": (
                    f"drawdown {drawdown:.2f}% from peak {peak:.2f} reached the "
                    f"{trader.max_drawdown_percentage}% limit"
                ),
            }
            result.halted += 1
            logger.warning("trader %s halted: %s", trader.name, changes["halted_reason"])
        if changes:
            Trader.objects.filter(pk=trader.pk).update(**changes)
    EquitySnapshot.objects.bulk_create(snapshots, ignore_conflicts=True)
    result.snapshots = len(snapshots)
