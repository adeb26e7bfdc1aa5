"""The AI signal generator: the ML signal and a trader's own indicator rules -> one decision.

The formula (scores are in [-1, 1], positive favours a long):

    d          = +1 for a LONG signal, -1 for a SHORT one
    ml_score   = d * (confidence + strength) / 2
    rsi_score  = clip((mid - RSI) / half, -1, 1)       mid = (oversold + overbought) / 2,
                                                       half = (overbought - oversold) / 2
                 (mean reversion: +1 at or below oversold, -1 at or above overbought, 0 at mid)
    ema_score  = clip((EMA_short - EMA_long) / ATR, -1, 1)
                 (trend: the short/long gap in ATRs; +1 once the short EMA is one ATR above)
    final      = 0.6 * ml_score + 0.2 * rsi_score + 0.2 * ema_score
    decision   = the signal's direction when d * final >= 0.2, else no trade

The indicators never turn a trade around: they can only confirm or veto the model's direction. A
missing indicator (too little history) scores 0 and says so in the reasons.

Adaptive stop loss and take profit, as distances from the entry price (fractions of it):

    stop  = clip(max(1.5 * ATR / price, predicted adverse move), 0.25 * SL%, SL%)
    take  = clip(max(2 * stop, 3 * ATR / price, predicted favourable move), stop, TP%)

The predicted adverse move is the model's 1h max drawdown for a long (max rally for a short) and
the favourable one its 1h max rally (drawdown) or expected 1h return, whichever is larger. SL% and
TP% are the trader's stop_loss_percentage and take_profit_percentage: the caps are never exceeded.
"""

from dataclasses import dataclass, field
from decimal import Decimal

WEIGHT_ML, WEIGHT_RSI, WEIGHT_EMA = 0.6, 0.2, 0.2
ENTRY_THRESHOLD = 0.2
ATR_STOP_MULTIPLE, ATR_TAKE_MULTIPLE, REWARD_TO_RISK = 1.5, 3.0, 2.0
MIN_STOP_FRACTION_OF_CAP = 0.25
SIGNAL_HORIZON = "4"  # candles: the model's 1h horizon on 15m candles


@dataclass(frozen=True)
class IndicatorRules:
    rsi_period: int
    rsi_oversold: float
    rsi_overbought: float
    ema_short: int
    ema_long: int
    stop_loss_percentage: float
    take_profit_percentage: float


@dataclass(frozen=True)
class MarketView:
    """The latest indicator values of one market (None when its history is too short)."""

    price: float
    rsi: float | None
    ema_short: float | None
    ema_long: float | None
    atr: float | None


@dataclass(frozen=True)
class MLView:
    direction: str  # "LONG" | "SHORT" | "NEUTRAL"
    confidence: float
    strength: float
    returns: dict = field(default_factory=dict)  # horizon -> expected return
    risk: dict = field(default_factory=dict)  # name -> expected magnitude


@dataclass(frozen=True)
class Decision:
    action: str  # "LONG" | "SHORT" | "NONE"
    ml_score: float
    rsi_score: float
    ema_score: float
    final_score: float
    stop_loss: Decimal | None
    take_profit: Decimal | None
    reasons: list[str]


def _clip(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def decide(*, ml: MLView, market: MarketView, rules: IndicatorRules) -> Decision:
    reasons: list[str] = []
    if ml.direction not in ("LONG", "SHORT"):
        return Decision("NONE", 0.0, 0.0, 0.0, 0.0, None, None, ["NEUTRAL signal: no trade"])
    d = 1.0 if ml.direction == "LONG" else -1.0
    ml_score = d * (ml.confidence + ml.strength) / 2
    reasons.append(
        f"ML {ml.direction} confidence {ml.confidence:.2f} strength {ml.strength:.2f}"
        f" -> ml_score {ml_score:+.2f}"
    )

    if market.rsi is None:
        rsi_score = 0.0
        reasons.append(f"RSI({rules.rsi_period}) unavailable (short history) -> 0")
    else:
        mid = (rules.rsi_oversold + rules.rsi_overbought) / 2
        half = (rules.rsi_overbought - rules.rsi_oversold) / 2
        rsi_score = _clip((mid - market.rsi) / half, -1.0, 1.0)
        zone = (
            "oversold"
            if market.rsi <= rules.rsi_oversold
            else "overbought"
            if market.rsi >= rules.rsi_overbought
            else "neutral zone"
        )
        reasons.append(f"RSI({rules.rsi_period}) {market.rsi:.1f} {zone} -> {rsi_score:+.2f}")

    if market.ema_short is None or market.ema_long is None or not market.atr:
        ema_score = 0.0
        reasons.append(f"EMA{rules.ema_short}/EMA{rules.ema_long} or ATR unavailable -> 0")
    else:
        gap = (market.ema_short - market.ema_long) / market.atr
        ema_score = _clip(gap, -1.0, 1.0)
        relation = "above" if gap > 0 else "below"
        reasons.append(
            f"EMA{rules.ema_short} {market.ema_short:.6g} {relation} EMA{rules.ema_long} "
            f"{market.ema_long:.6g} by {abs(gap):.2f} ATR -> {ema_score:+.2f}"
        )

    final = WEIGHT_ML * ml_score + WEIGHT_RSI * rsi_score + WEIGHT_EMA * ema_score
    if d * final < ENTRY_THRESHOLD:
        reasons.append(
            f"final {final:+.2f}: below the {ENTRY_THRESHOLD} entry threshold for "
            f"{ml.direction} -> no trade"
        )
        return Decision("NONE", ml_score, rsi_score, ema_score, final, None, None, reasons)
    reasons.append(f"final {final:+.2f} -> {ml.direction}")

    stop, take, why = stop_distances(ml=ml, market=market, rules=rules, direction=d)
    reasons.append(why)
    price = Decimal(str(market.price))
    stop_loss = price * (1 - Decimal(str(d * stop)))
    take_profit = price * (1 + Decimal(str(d * take)))
    return Decision(
        ml.direction, ml_score, rsi_score, ema_score, final, stop_loss, take_profit, reasons
    )


def stop_distances(
    *, ml: MLView, market: MarketView, rules: IndicatorRules, direction: float
) -> tuple[float, float, str]:
    """(stop, take) as fractions of the entry price, and the reason text."""
    stop_cap = rules.stop_loss_percentage / 100
    take_cap = rules.take_profit_percentage / 100
    atr_fraction = (market.atr or 0.0) / market.price
    long = direction > 0
    adverse = float(ml.risk.get("max_drawdown_1h" if long else "max_rally_1h", 0.0) or 0.0)
    favourable = max(
        float(ml.risk.get("max_rally_1h" if long else "max_drawdown_1h", 0.0) or 0.0),
        direction * float(ml.returns.get(SIGNAL_HORIZON, 0.0) or 0.0),
    )
    stop = _clip(
        max(ATR_STOP_MULTIPLE * atr_fraction, adverse),
        MIN_STOP_FRACTION_OF_CAP * stop_cap,
        stop_cap,
    )
    take = _clip(
        max(REWARD_TO_RISK * stop, ATR_TAKE_MULTIPLE * atr_fraction, favourable), stop, take_cap
    )
    why = (
        f"SL {stop:.2%} (ATR {atr_fraction:.2%}, predicted adverse {adverse:.2%}, cap "
        f"{stop_cap:.2%}); TP {take:.2%} (predicted favourable {favourable:.2%}, "
        f"cap {take_cap:.2%})"
    )
    return stop, take, why
