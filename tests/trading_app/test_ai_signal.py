"""The AI signal generator's documented formula, case by case."""

from decimal import Decimal

import pytest

from trading_app.ai_signal import IndicatorRules, MarketView, MLView, decide, stop_distances

RULES = IndicatorRules(
    rsi_period=14, rsi_oversold=30, rsi_overbought=70, ema_short=9, ema_long=21,
    stop_loss_percentage=2, take_profit_percentage=5,
)  # fmt: skip
CALM = MarketView(price=100.0, rsi=50.0, ema_short=100.0, ema_long=100.0, atr=0.5)


def test_neutral_signal_never_trades():
    decision = decide(ml=MLView("NEUTRAL", 0.9, 0.9), market=CALM, rules=RULES)
    assert decision.action == "NONE"
    assert decision.stop_loss is None


def test_scores_follow_the_formula():
    market = MarketView(price=100.0, rsi=40.0, ema_short=100.4, ema_long=100.0, atr=0.5)
    decision = decide(ml=MLView("LONG", 0.7, 0.5), market=market, rules=RULES)
    assert decision.ml_score == pytest.approx(0.6)  # (0.7 + 0.5) / 2
    assert decision.rsi_score == pytest.approx(0.5)  # (50 - 40) / 20
    assert decision.ema_score == pytest.approx(0.8)  # 0.4 / 0.5 ATR
    assert decision.final_score == pytest.approx(0.6 * 0.6 + 0.2 * 0.5 + 0.2 * 0.8)
    assert decision.action == "LONG"


def test_indicators_veto_a_weak_model_signal():
    overbought_downtrend = MarketView(
        price=100.0, rsi=85.0, ema_short=99.0, ema_long=100.0, atr=0.5
    )
    decision = decide(ml=MLView("LONG", 0.5, 0.3), market=overbought_downtrend, rules=RULES)
    assert decision.rsi_score == -1.0
    assert decision.ema_score == -1.0
    assert decision.action == "NONE"
    assert "below the 0.2 entry threshold" in decision.reasons[-1]


def test_indicators_never_reverse_the_model():
    oversold_uptrend = MarketView(price=100.0, rsi=10.0, ema_short=101.0, ema_long=100.0, atr=0.5)
    decision = decide(ml=MLView("SHORT", 0.5, 0.2), market=oversold_uptrend, rules=RULES)
    assert decision.final_score > 0  # the indicators favour a long ...
    assert decision.action == "NONE"  # ... but only the model's direction can be taken


def test_missing_indicators_score_zero_and_say_so():
    bare = MarketView(price=100.0, rsi=None, ema_short=None, ema_long=None, atr=None)
    decision = decide(ml=MLView("SHORT", 0.9, 0.9), market=bare, rules=RULES)
    assert (decision.rsi_score, decision.ema_score) == (0.0, 0.0)
    assert decision.action == "SHORT"
    assert any("unavailable" in reason for reason in decision.reasons)


def test_stop_from_atr_and_take_at_twice_the_stop():
    ml = MLView("LONG", 0.8, 0.8, risk={"max_drawdown_1h": 0.002, "max_rally_1h": 0.003})
    market = MarketView(price=100.0, rsi=50.0, ema_short=100.0, ema_long=100.0, atr=0.8)
    stop, take, _ = stop_distances(ml=ml, market=market, rules=RULES, direction=1)
    assert stop == pytest.approx(0.012)  # 1.5 ATR = 1.2% beats the 0.2% predicted drawdown
    assert take == pytest.approx(0.024)  # 2 x stop beats 3 ATR (2.4%, equal) and the 0.3% rally


def test_predicted_risk_widens_the_stop_up_to_the_cap():
    ml = MLView("LONG", 0.8, 0.8, risk={"max_drawdown_1h": 0.015})
    stop, _, _ = stop_distances(ml=ml, market=CALM, rules=RULES, direction=1)
    assert stop == pytest.approx(0.015)
    ml = MLView("LONG", 0.8, 0.8, risk={"max_drawdown_1h": 0.08, "max_rally_1h": 0.3})
    stop, take, _ = stop_distances(ml=ml, market=CALM, rules=RULES, direction=1)
    assert stop == pytest.approx(0.02)  # stop_loss_percentage caps it
    assert take == pytest.approx(0.05)  # take_profit_percentage caps it


def test_stop_has_a_floor_in_a_dead_market():
    dead = MarketView(price=100.0, rsi=50.0, ema_short=100.0, ema_long=100.0, atr=0.0001)
    stop, take, _ = stop_distances(
        ml=MLView("LONG", 0.8, 0.8), market=dead, rules=RULES, direction=1
    )
    assert stop == pytest.approx(0.005)  # a quarter of the 2% cap
    assert take == pytest.approx(0.01)


def test_short_mirrors_the_levels_and_uses_the_rally_risk():
    ml = MLView("SHORT", 0.9, 0.9, risk={"max_drawdown_1h": 0.001, "max_rally_1h": 0.01})
    decision = decide(ml=ml, market=CALM, rules=RULES)
    assert decision.action == "SHORT"
    assert decision.stop_loss == Decimal("100.0") * (1 + Decimal("0.01"))
    assert decision.take_profit == Decimal("100.0") * (1 - Decimal("0.02"))
