"""The trading engine: a batch of accepted signals -> decisions, orders and positions.

Per batch the reads are bulk (signals, subscriptions, traders, positions, candles: one query each)
and the indicators are computed for all markets at once. Each exchange account is then handled in
one transaction that locks the account first, so two workers never size against the same balance
or open the same position twice (the database's unique open-position constraint backs this up).

Paper accounts fill inside that transaction and everything is written with bulk inserts. ccxt
accounts write their orders as NEW first, commit, and only then talk to the exchange through the
order manager, which makes a retried batch safe.
"""

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import pandas as pd
from django.db import transaction
from django.db.models import Case, F, OuterRef, Subquery, Value, When
from django.utils import timezone

from botai.money import MoneyAdd, MoneyField
from signals_app.models import Candle, Market, Signal
from trading_app import ai_signal, indicators, risk
from trading_app.bulk import insert_rows, update_rows
from trading_app.exchanges import TemporaryExchangeError, adapter_for
from trading_app.exchanges.paper import PaperExchange, paper_balance
from trading_app.models import Balance, ExchangeAccount, Order, Position, TradeDecision, Trader
from trading_app.selectors import (
    MIN_LOOKBACK,
    CandleFrames,
    PositionTotals,
    active_positions,
    candle_frames,
    position_totals,
)
from trading_app.services.orders import (
    client_order_id,
    exit_order,
    order_place,
    order_refresh,
    paper_fill,
)

logger = logging.getLogger(__name__)

ATR_PERIOD = 14
ENTRY_SIDE = {Position.Side.LONG: Order.Side.BUY, Position.Side.SHORT: Order.Side.SELL}
# What a batch reads of its signals and their markets (the prediction's returns and risk come
# annotated): the rest (timestamps, probabilities, bookkeeping) would be parsed for nothing.
SIGNAL_FIELDS = (
    "market_id", "candle_time", "type", "status", "confidence", "strength", "entry_price",
    "market__exchange", "market__symbol", "market__ccxt_symbol", "market__timeframe",
    "market__amount_step", "market__price_step", "market__min_amount", "market__min_notional",
)  # fmt: skip


@dataclass
class BatchResult:
    signals: int = 0
    ignored: int = 0  # neutral, superseded or no longer accepted
    decisions: int = 0
    orders: int = 0
    rejected: int = 0
    retry: bool = False  # a temporary exchange error left orders to place later
    outcomes: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "signals": self.signals,
            "ignored": self.ignored,
            "decisions": self.decisions,
            "orders": self.orders,
            "rejected": self.rejected,
            "retry": self.retry,
            "outcomes": dict(self.outcomes),
        }


def rules_of(trader: Trader) -> ai_signal.IndicatorRules:
    return ai_signal.IndicatorRules(
        rsi_period=trader.rsi_period,
        rsi_oversold=trader.rsi_oversold,
        rsi_overbought=trader.rsi_overbought,
        ema_short=trader.ema_short,
        ema_long=trader.ema_long,
        stop_loss_percentage=trader.stop_loss_percentage,
        take_profit_percentage=trader.take_profit_percentage,
    )


def _last_values(frame: pd.DataFrame) -> dict[int, float]:
    """market id -> the last row's value, NaN (too little history) left out."""
    return {k: float(v) for k, v in frame.iloc[-1].items() if not pd.isna(v)}


class MarketViews:
    """Latest RSI/EMA/ATR per market for each distinct indicator setting of the batch's traders."""

    def __init__(self, frames: CandleFrames, traders: list[Trader]):
        close = frames.close
        self.price = frames.latest_closes()
        self.rsi = {
            p: _last_values(indicators.rsi(close, period=p))
            for p in {t.rsi_period for t in traders}
        }
        spans = {t.ema_short for t in traders} | {t.ema_long for t in traders}
        self.ema = {s: _last_values(indicators.ema(close, span=s)) for s in spans}
        self.atr = _last_values(indicators.atr(frames.high, frames.low, close, period=ATR_PERIOD))

    def view(
        self, *, market_id: int, trader: Trader, fallback_price: Decimal
    ) -> ai_signal.MarketView:
        return ai_signal.MarketView(
            price=self.price.get(market_id, float(fallback_price)),
            rsi=self.rsi[trader.rsi_period].get(market_id),
            ema_short=self.ema[trader.ema_short].get(market_id),
            ema_long=self.ema[trader.ema_long].get(market_id),
            atr=self.atr.get(market_id),
        )


def _ml_view(signal: Signal) -> ai_signal.MLView:
    return ai_signal.MLView(
        direction=signal.type,
        confidence=signal.confidence,
        strength=signal.strength,
        returns={str(k): v for k, v in (signal.predicted_returns or {}).items()},
        risk=signal.predicted_risk or {},
    )


@dataclass
class Pair:
    """One signal routed to one trader, with the generator's decision."""

    signal: Signal
    trader: Trader
    decision: ai_signal.Decision
    price: Decimal
    atr: float | None
    view: ai_signal.MarketView


def signals_process(
    *, signal_ids: list[int], as_of: datetime | None = None, now: datetime | None = None
) -> BatchResult:
    """Route, decide and execute a batch of signals.

    A signal is traded only while it is the newest word on its market: once a later candle is
    stored it is superseded and ignored. Freshness is judged on the market-data clock, not the
    wall clock, so live trading, replay and backtests agree; `as_of` (backtests) hides candles
    stored beyond it. `now` stamps the orders, fills and positions (default: the wall clock; a
    backtest passes its market clock)."""
    now = now or timezone.now()
    result = BatchResult()
    # Each signal comes with the open time of its market's newest candle (one index probe).
    newest = Candle.objects.filter(market=OuterRef("market_id"))
    if as_of is not None:
        newest = newest.filter(open_time__lte=as_of)
    signals = list(
        Signal.objects.filter(pk__in=signal_ids)
        .select_related("market")
        .only(*SIGNAL_FIELDS)
        .annotate(
            predicted_returns=F("prediction__returns"),
            predicted_risk=F("prediction__risk"),
            newest_candle=Subquery(newest.order_by("-open_time").values("open_time")[:1]),
        )
        .order_by("pk")
    )
    result.signals = len(signals)
    tradable = [
        s
        for s in signals
        if s.type != Signal.Type.NEUTRAL
        and s.status in (Signal.Status.ACCEPTED, Signal.Status.EXECUTED)
        and (s.newest_candle or s.candle_time) <= s.candle_time
    ]
    result.ignored = len(signals) - len(tradable)
    if not tradable:
        return result

    markets = {s.market_id: s.market for s in tradable}
    subscribers: dict[int, list[int]] = defaultdict(list)
    for trader_id, market_id in Trader.markets.through.objects.filter(
        market_id__in=markets, trader__enabled=True, trader__is_halted=False
    ).values_list("trader_id", "market_id"):
        subscribers[market_id].append(trader_id)
    decided = set(
        TradeDecision.objects.filter(signal__in=tradable).values_list("trader_id", "signal_id")
    )
    routes = [
        (signal, trader_id)
        for signal in tradable
        for trader_id in sorted(subscribers[signal.market_id])
        if (trader_id, signal.pk) not in decided
    ]
    if decided:
        result.retry |= _resume_unsettled(signals=tradable)
    if not routes:
        return result

    traders = Trader.objects.select_related("account").in_bulk({t for _, t in routes})
    lookback = max(
        MIN_LOOKBACK,
        *(4 * max(t.rsi_period, t.ema_long, ATR_PERIOD) for t in traders.values()),
    )
    frames = candle_frames(
        markets=markets.values(),
        lookback=lookback,
        until=as_of or max(s.candle_time for s in tradable),
    )
    views = MarketViews(frames, list(traders.values()))
    by_account: dict[int, list[Pair]] = defaultdict(list)
    for signal, trader_id in routes:
        trader = traders[trader_id]
        view = views.view(
            market_id=signal.market_id, trader=trader, fallback_price=signal.entry_price
        )
        decision = ai_signal.decide(ml=_ml_view(signal), market=view, rules=rules_of(trader))
        by_account[trader.account_id].append(
            Pair(signal, trader, decision, Decimal(repr(view.price)), view.atr, view)
        )

    for pairs in by_account.values():
        account = pairs[0].trader.account
        if account.is_paper:
            _execute_paper(account=account, pairs=pairs, markets=markets, result=result, now=now)
        else:
            _execute_exchange(account=account, pairs=pairs, markets=markets, result=result, now=now)
    return result


class _Book:
    """A trader's state while a batch is decided: its active positions on the batch's markets,
    how many it holds in all, its equity, and what the batch changed."""

    def __init__(self, trader: Trader, positions: list[Position], totals: PositionTotals):
        self.trader = trader
        self.open = {p.market_id: p for p in positions}
        self.active = totals.active
        self.equity = trader.initial_capital + trader.realized_pnl + totals.open_value
        self.realized = Decimal(0)
        self.halt_reason = ""


def _books(pairs: list[Pair], *, lock: bool) -> dict[int, _Book]:
    trader_ids = sorted({p.trader.pk for p in pairs})
    traders = Trader.objects.filter(pk__in=trader_ids).order_by("pk")
    if lock:
        traders = traders.select_for_update()
    fresh = {t.pk: t for t in traders}
    positions: dict[int, list[Position]] = defaultdict(list)
    markets = {p.signal.market_id for p in pairs}
    for position in active_positions(trader_ids=trader_ids, market_ids=markets):
        positions[position.trader_id].append(position)
    totals = position_totals(trader_ids=trader_ids)
    return {
        tid: _Book(trader, positions[tid], totals.get(tid, PositionTotals()))
        for tid, trader in fresh.items()
    }


def _lot(market: Market) -> risk.LotRules:
    return risk.LotRules(
        amount_step=market.amount_step,
        price_step=market.price_step,
        min_amount=market.min_amount,
        min_notional=market.min_notional,
    )


def _decision_row(pair: Pair, *, outcome: str, reasons: list[str]) -> TradeDecision:
    d = pair.decision
    return TradeDecision(
        trader_id=pair.trader.pk,
        signal_id=pair.signal.pk,
        market_id=pair.signal.market_id,
        action=d.action,
        outcome=outcome,
        ml_score=d.ml_score,
        rsi=pair.view.rsi,
        rsi_score=d.rsi_score,
        ema_short=pair.view.ema_short,
        ema_long=pair.view.ema_long,
        ema_score=d.ema_score,
        final_score=d.final_score,
        atr=pair.atr,
        stop_loss=d.stop_loss,
        take_profit=d.take_profit,
        reasons=reasons,
    )


@dataclass
class _Plan:
    """The orders one pair produces (before any exchange is involved)."""

    close: tuple[Order, Position] | None = None
    entry: tuple[Order, Position] | None = None
    reasons: list[str] = field(default_factory=list)
    rejected: bool = False


def _plan(
    *,
    pair: Pair,
    book: _Book,
    account: ExchangeAccount,
    market: Market,
    free: Decimal | None,
    cost_percentage: float,
    now: datetime,
) -> _Plan:
    """Apply the one-position-per-market rule and the risk rules to one pair's decision."""
    trader, signal, decision = book.trader, pair.signal, pair.decision
    plan = _Plan(reasons=list(decision.reasons))
    if decision.action == TradeDecision.Action.NONE:
        return plan
    existing = book.open.get(signal.market_id)
    if existing is not None and existing.side == decision.action:
        plan.reasons.append(f"already {existing.side} on {market.symbol}: nothing to do")
        return plan
    if existing is not None and existing.status == Position.Status.PENDING:
        # Its entry order has not filled yet: there is nothing to close until it has.
        plan.reasons.append(f"the {existing.side} entry on {market.symbol} is still pending")
        return plan
    if existing is not None:
        order = exit_order(
            account=account, position=existing, market=market, purpose=Order.Purpose.CLOSE,
            price=pair.price, signal=signal,
        )  # fmt: skip
        plan.close = (order, existing)
        plan.reasons.append(f"closing the opposite {existing.side} position first")
    try:
        risk.check_not_halted(
            is_halted=trader.is_halted or bool(book.halt_reason),
            halted_reason=trader.halted_reason or book.halt_reason,
        )
        risk.check_drawdown(
            equity=book.equity,
            peak=trader.peak_equity,
            max_drawdown_percentage=trader.max_drawdown_percentage,
        )
    except risk.Rejection as exc:
        book.halt_reason = book.halt_reason or (str(exc) if not trader.is_halted else "")
        plan.rejected = True
        plan.reasons.append(f"rejected: {exc}")
        return plan
    try:
        open_count = book.active - (1 if existing is not None else 0)
        risk.check_max_positions(open_positions=open_count, max_positions=trader.max_positions)
        amount = risk.position_amount(
            equity=book.equity,
            per_trade_percentage=trader.per_trade_percentage,
            price=pair.price,
            lot=_lot(market),
        )
        if free is not None:
            risk.check_balance(
                amount=amount,
                price=pair.price,
                cost_percentage=cost_percentage,
                free=free,
                currency=account.quote_currency,
            )
    except risk.Rejection as exc:
        plan.rejected = True
        plan.reasons.append(f"rejected: {exc}")
        return plan
    side = decision.action
    stop_loss = risk.round_price(decision.stop_loss, market.price_step)
    take_profit = risk.round_price(decision.take_profit, market.price_step)
    position = Position(
        trader=trader, market=market, signal=signal, side=side, status=Position.Status.PENDING,
        amount=amount, entry_price=pair.price, stop_loss=stop_loss, take_profit=take_profit,
        opened_at=now, checked_until=pair.signal.candle_time,
    )  # fmt: skip
    order = Order(
        client_order_id=client_order_id(
            account=account, trader_id=trader.pk, purpose=Order.Purpose.OPEN, signal_id=signal.pk
        ),
        trader=trader, market=market, signal=signal, position=position,
        purpose=Order.Purpose.OPEN, side=ENTRY_SIDE[side], amount=amount, price=pair.price,
        stop_loss=stop_loss, take_profit=take_profit,
    )  # fmt: skip
    plan.entry = (order, position)
    plan.reasons.append(
        f"{side} {risk.plain(amount)} {market.symbol} at ~{risk.plain(pair.price)} "
        f"({trader.per_trade_percentage}% of equity {book.equity:.2f}), "
        f"SL {risk.plain(stop_loss)} TP {risk.plain(take_profit)}"
    )
    return plan


def _outcome(plan: _Plan) -> str:
    if plan.close or plan.entry:
        return TradeDecision.Outcome.ORDERED
    return TradeDecision.Outcome.REJECTED if plan.rejected else TradeDecision.Outcome.SKIPPED


def _execute_paper(
    *,
    account: ExchangeAccount,
    pairs: list[Pair],
    markets: dict[int, Market],
    result: BatchResult,
    now: datetime,
) -> None:
    exchange = PaperExchange(account)
    cost = account.paper_fee_percentage + account.paper_slippage_percentage
    with transaction.atomic():
        balance = paper_balance(account, lock=True)  # serialises batches of this account
        books = _books(pairs, lock=False)
        decisions, orders, new_positions, closed_positions = [], [], [], []
        signal_orders: dict[int, int] = Counter()
        for pair in pairs:
            book = books[pair.trader.pk]
            market = markets[pair.signal.market_id]
            plan = _plan(
                pair=pair, book=book, account=account, market=market, free=balance.free,
                cost_percentage=cost, now=now,
            )  # fmt: skip
            for step in (plan.close, plan.entry):
                if step is None:
                    continue
                order, position = step
                counted = position.unrealized_pnl - position.fees  # in equity until now
                pnl = paper_fill(
                    exchange=exchange, order=order, position=position, balance=balance,
                    price=pair.price, now=now,
                )  # fmt: skip
                orders.append(order)
                signal_orders[pair.signal.pk] += 1
                if order.purpose == Order.Purpose.OPEN:
                    new_positions.append(position)
                    book.open[position.market_id] = position
                    book.active += 1
                    book.equity -= position.fees
                else:
                    closed_positions.append(position)
                    del book.open[position.market_id]
                    book.active -= 1
                    book.realized += pnl
                    book.equity += pnl - counted
            decisions.append(_decision_row(pair, outcome=_outcome(plan), reasons=plan.reasons))
            result.outcomes[_outcome(plan)] += 1
            result.rejected += plan.rejected

        update_rows(
            closed_positions,
            ["status", "exit_price", "fees", "realized_pnl", "unrealized_pnl", "closed_at",
             "close_reason", "updated_at"],
        )  # fmt: skip
        insert_rows(new_positions)
        insert_rows(orders)
        insert_rows(decisions)
        Balance.objects.filter(pk=balance.pk).update(
            free=balance.free, used=balance.used, updated_at=now
        )
        _write_books(books, now=now)
        _signals_counted(attempted=signal_orders, created=signal_orders)
    result.decisions += len(decisions)
    result.orders += len(orders)


def _write_books(books: dict[int, _Book], *, now: datetime) -> None:
    realized = {pk: book.realized for pk, book in books.items() if book.realized}
    if realized:  # one UPDATE for all traders, each incremented by its own amount
        Trader.objects.filter(pk__in=realized).update(
            realized_pnl=MoneyAdd(
                "realized_pnl",
                Case(
                    *(
                        When(pk=pk, then=Value(pnl, output_field=MoneyField()))
                        for pk, pnl in realized.items()
                    ),
                    output_field=MoneyField(),
                ),
            )
        )
    for book in books.values():
        if book.halt_reason:
            Trader.objects.filter(pk=book.trader.pk, is_halted=False).update(
                is_halted=True, halted_reason=book.halt_reason[:300], halted_at=now
            )
            logger.warning("trader %s halted: %s", book.trader.name, book.halt_reason)


def _signals_counted(*, attempted: dict[int, int], created: dict[int, int]) -> None:
    """Write back per signal how many orders were attempted and created: one UPDATE per distinct
    (attempted, created) pair, which is a handful per batch."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for signal_id, n in attempted.items():
        groups[(n, created.get(signal_id, 0))].append(signal_id)
    for (n_attempted, n_created), signal_ids in groups.items():
        changes = {"orders_attempted": F("orders_attempted") + n_attempted}
        if n_created:
            changes |= {
                "orders_created": F("orders_created") + n_created,
                "status": Signal.Status.EXECUTED,
            }
        Signal.objects.filter(pk__in=signal_ids).update(**changes)


def _execute_exchange(
    *,
    account: ExchangeAccount,
    pairs: list[Pair],
    markets: dict[int, Market],
    result: BatchResult,
    now: datetime,
) -> None:
    """ccxt accounts: persist the plan, commit, then place the orders (closes first)."""
    adapter = adapter_for(account)
    try:
        balances = adapter.fetch_balance()
    except TemporaryExchangeError as exc:
        logger.warning("account %s: balance unavailable (%s); batch retried", account.name, exc)
        result.retry = True
        return
    quote = balances.get(account.quote_currency)
    free = quote.free if quote is not None else Decimal(0)
    # The account's fee and slippage settings double as the cost estimate of a live entry.
    cost = account.paper_fee_percentage + account.paper_slippage_percentage
    deferred: list[tuple[Order, Position, Order]] = []  # entry waiting for a close to fill
    closes, entries = [], []
    with transaction.atomic():
        books = _books(pairs, lock=True)
        decisions = []
        attempted: dict[int, int] = Counter()
        for pair in pairs:
            book = books[pair.trader.pk]
            plan = _plan(
                pair=pair, book=book, account=account, market=markets[pair.signal.market_id],
                free=free, cost_percentage=cost, now=now,
            )  # fmt: skip
            if plan.close is not None:
                order, _ = plan.close
                order.save()
                closes.append(order)
                attempted[pair.signal.pk] += 1
                del book.open[pair.signal.market_id]
                book.active -= 1
            if plan.entry is not None:
                order, position = plan.entry
                attempted[pair.signal.pk] += 1
                free -= order.amount * order.price
                if plan.close is not None:
                    plan.reasons.append("the entry is placed once the close has filled")
                    deferred.append((order, position, plan.close[0]))
                else:
                    position.save()
                    order.position = position
                    order.save()
                    entries.append(order)
                book.open[pair.signal.market_id] = position
                book.active += 1
            decisions.append(_decision_row(pair, outcome=_outcome(plan), reasons=plan.reasons))
            result.outcomes[_outcome(plan)] += 1
            result.rejected += plan.rejected
        TradeDecision.objects.bulk_create(decisions)
        _write_books(books, now=now)
        _signals_counted(attempted=attempted, created={})
    result.decisions += len(decisions)

    result.orders += len(closes) + len(entries)
    for order in closes + entries:
        result.retry |= order_place(order=order, adapter=adapter, account=account)
    for entry, position, close in deferred:
        close.refresh_from_db()
        if close.status in (Order.Status.SUBMITTED, Order.Status.OPEN) and close.exchange_order_id:
            order_refresh(order=close, adapter=adapter, account=account)
            close.refresh_from_db()
        if close.status != Order.Status.FILLED:
            logger.warning(
                "entry %s dropped: close %s is %s", entry.client_order_id,
                close.client_order_id, close.status,
            )  # fmt: skip
            continue
        with transaction.atomic():
            position.save()
            entry.position = position
            entry.save()
        result.orders += 1
        result.retry |= order_place(order=entry, adapter=adapter, account=account)


def _resume_unsettled(*, signals: list[Signal]) -> bool:
    """A redelivered or retried batch: place the orders an earlier run left unplaced."""
    pending = list(
        Order.objects.filter(
            signal__in=signals, status__in=(Order.Status.NEW, Order.Status.SUBMITTED),
            exchange_order_id="",
        )
        .select_related("market", "trader__account")
        .order_by("pk")
    )  # fmt: skip
    retry = False
    adapters: dict[int, object] = {}
    for order in pending:
        account = order.trader.account
        adapter = adapters.setdefault(account.pk, adapter_for(account))
        retry |= order_place(order=order, adapter=adapter, account=account)
    return retry
