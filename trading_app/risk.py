"""The risk manager's rules as plain functions over values the engine reads in bulk.

Rules, in the order they are applied to a new entry:
1. a halted trader opens nothing (the drawdown halt stays until a person resumes the trader);
2. drawdown: equity more than max_drawdown_percentage below its peak halts the trader;
3. max_positions: open positions (after closing an opposite one) must stay below the maximum;
4. size: per_trade_percentage of current equity, as a notional at the entry price, rounded down
   to the market's amount step and checked against the minimum amount and minimum notional;
5. balance: the margin (the notional: positions are unlevered) plus taker fee and slippage must
   fit in the free balance.
"""

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

PERCENT = Decimal(100)


class Rejection(Exception):
    """A rule refused the entry; the message is the reason stored on the decision and order."""


@dataclass(frozen=True)
class LotRules:
    amount_step: Decimal | None = None
    price_step: Decimal | None = None
    min_amount: Decimal | None = None
    min_notional: Decimal | None = None


def plain(value: Decimal | None) -> str:
    """A Decimal without the trailing zeros the database's 12 decimal places add."""
    return "none" if value is None else format(value.normalize(), "f")


def round_to_step(value: Decimal, step: Decimal | None, *, rounding: str = ROUND_DOWN) -> Decimal:
    """`value` as a multiple of `step` (rounded down by default: never more than asked)."""
    if not step:
        return value
    return (value / step).to_integral_value(rounding=rounding) * step


def round_price(price: Decimal, step: Decimal | None) -> Decimal:
    return round_to_step(price, step, rounding=ROUND_HALF_EVEN)


def drawdown_percentage(*, equity: Decimal, peak: Decimal | None) -> float:
    if not peak or peak <= 0 or equity >= peak:
        return 0.0
    return float((peak - equity) / peak * PERCENT)


def check_not_halted(*, is_halted: bool, halted_reason: str) -> None:
    if is_halted:
        raise Rejection(f"trader is halted: {halted_reason or 'resume it in the admin'}")


def check_drawdown(
    *, equity: Decimal, peak: Decimal | None, max_drawdown_percentage: float
) -> None:
    drawdown = drawdown_percentage(equity=equity, peak=peak)
    if drawdown >= max_drawdown_percentage:
        raise Rejection(
            f"drawdown {drawdown:.2f}% from peak {peak:.2f} reached the "
            f"{max_drawdown_percentage}% limit: trader halted"
        )


def check_max_positions(*, open_positions: int, max_positions: int) -> None:
    if open_positions >= max_positions:
        raise Rejection(f"max positions reached ({open_positions} open, limit {max_positions})")


def position_amount(
    *, equity: Decimal, per_trade_percentage: float, price: Decimal, lot: LotRules
) -> Decimal:
    """Amount (base asset) for one trade, or Rejection when it cannot meet the market's minimums."""
    if equity <= 0:
        raise Rejection(f"equity {equity:.2f} is not positive")
    notional = equity * Decimal(str(per_trade_percentage)) / PERCENT
    amount = round_to_step(notional / price, lot.amount_step)
    if amount <= 0:
        raise Rejection(
            f"size {notional:.2f} ({per_trade_percentage}% of equity {equity:.2f}) is below one "
            f"amount step {plain(lot.amount_step)} at price {plain(price)}"
        )
    if lot.min_amount is not None and amount < lot.min_amount:
        raise Rejection(f"amount {plain(amount)} below the market minimum {plain(lot.min_amount)}")
    if lot.min_notional is not None and amount * price < lot.min_notional:
        raise Rejection(
            f"notional {amount * price:.2f} below the market minimum {plain(lot.min_notional)}"
        )
    return amount


def check_balance(
    *, amount: Decimal, price: Decimal, cost_percentage: float, free: Decimal, currency: str
) -> Decimal:
    """The quote amount the entry needs: margin plus costs (taker fee and slippage, as a % of the
    notional). Rejection when `free` cannot cover it."""
    notional = amount * price
    needed = notional + notional * Decimal(str(cost_percentage)) / PERCENT
    if needed > free:
        raise Rejection(f"insufficient balance: need {needed:.2f} {currency}, free {free:.2f}")
    return needed
