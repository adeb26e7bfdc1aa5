"""A backtest's figures, and the same figures for two baselines over the same candles.

Equity curve: one point per replayed candle, at its close (the clock the replay acted on):
capital + realised PnL of the closed positions + for each open position its PnL marked at that
close minus the fee it paid to open, i.e. the equity the position sync computes (the tests check
the curve against the sync's EquitySnapshots).

Figures: trades (closed positions), win rate, average win and loss, profit factor (gross wins /
gross losses), total and annualised return, Sharpe and Sortino (daily UTC returns, x sqrt(365):
crypto trades every day), maximum drawdown from the running peak (the initial capital counts as
the first peak), exposure (share of candles with at least one open position), fees paid.

Baselines, equal capital per market, the paper account's fee and slippage on every fill:
- buy_and_hold: the whole capital bought at the first replayed close, sold at the last;
- ema_rsi: the trader's indicator rule alone (defaults EMA 9/21, RSI 14, bands 30/70): long while
  EMA short > EMA long and RSI < overbought, short while EMA short < EMA long and RSI > oversold,
  flat otherwise, decided and filled on each close (mlcore.evaluate's EMA/RSI baseline as a
  strategy), each entry sized like the strategy's (per_trade_percentage of equity); an open
  position is closed at the last close. It is the trader without the model.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import numpy as np
import pandas as pd

from mlcore.candles import timeframe_delta
from trading_app import indicators

DAYS_PER_YEAR = 365.0
SECONDS_PER_YEAR = 365.25 * 24 * 3600


@dataclass
class Curve:
    """An equity curve on the replay's clock and the trades behind it."""

    equity: np.ndarray  # one value per clock time
    in_market: np.ndarray  # bool: at least one open position at that time
    trade_pnls: list[float] = field(default_factory=list)  # closed trades, net of fees
    fees: float = 0.0
    open_at_end: int = 0


@dataclass(frozen=True)
class Grid:
    """The replay's clock (candle close times) and each market's close on it."""

    steps: pd.DatetimeIndex  # open times of the replayed candles
    delta: pd.Timedelta  # timeframe: clock = steps + delta
    closes: dict[str, np.ndarray]  # symbol -> close per step (carried over a gap)
    frames: dict[str, pd.DataFrame]  # symbol -> the market's candles, history included

    @property
    def clock(self) -> pd.DatetimeIndex:
        return self.steps + self.delta


def grid_of(tapes, steps: list[pd.Timestamp]) -> Grid:
    index = pd.DatetimeIndex(steps)
    closes = {
        tape.market.symbol: tape.candles["close"].reindex(index).ffill().bfill().to_numpy()
        for tape in tapes
    }
    frames = {tape.market.symbol: tape.candles for tape in tapes}
    delta = timeframe_delta(tapes[0].market.timeframe)
    return Grid(steps=index, delta=delta, closes=closes, frames=frames)


def _position(clock: pd.DatetimeIndex, when: datetime | None) -> int:
    return len(clock) if when is None else int(clock.searchsorted(pd.Timestamp(when)))


def strategy_curve(*, grid: Grid, orders: list[dict], positions: list[dict], initial: float):
    entry_fee = {o["position_id"]: float(o["fee"]) for o in orders if o["purpose"] == "OPEN"}
    equity = np.full(len(grid.clock), initial)
    in_market = np.zeros(len(grid.clock), dtype=bool)
    curve = Curve(equity=equity, in_market=in_market, fees=sum(float(o["fee"]) for o in orders))
    for p in positions:
        if p["status"] not in ("OPEN", "CLOSED"):
            continue
        start = _position(grid.clock, p["opened_at"])
        stop = _position(grid.clock, p["closed_at"])
        direction = 1.0 if p["side"] == "LONG" else -1.0
        close = grid.closes[p["market"]][start:stop]
        entry, amount = float(p["entry_price"]), float(p["amount"])
        equity[start:stop] += direction * (close - entry) * amount - entry_fee.get(p["id"], 0.0)
        in_market[start:stop] = True
        if p["status"] == "CLOSED":
            equity[stop:] += float(p["realized_pnl"])
            curve.trade_pnls.append(float(p["realized_pnl"]))
        else:
            curve.open_at_end += 1
    return curve


class _Sleeve:
    """One market's share of a baseline."""

    def __init__(self, *, capital: float, fee: float, slippage: float, curve: Curve):
        self.cash, self.fee, self.slippage, self.curve = capital, fee, slippage, curve
        self.side, self.amount, self.entry, self.entry_fee = 0, 0.0, 0.0, 0.0

    def open(self, side: int, close: float, *, notional: float) -> None:
        price = close * (1 + side * self.slippage)
        self.amount = notional / (price * (1 + self.fee))
        self.entry_fee = self.amount * price * self.fee
        self.side, self.entry = side, price
        self.cash -= self.entry_fee
        self.curve.fees += self.entry_fee

    def close(self, close: float) -> None:
        price = close * (1 - self.side * self.slippage)
        gross = self.side * (price - self.entry) * self.amount
        fee = self.amount * price * self.fee
        self.cash += gross - fee
        self.curve.fees += fee
        self.curve.trade_pnls.append(gross - fee - self.entry_fee)
        self.side, self.amount = 0, 0.0

    def value(self, close: float) -> float:
        return self.cash + (self.side * (close - self.entry) * self.amount if self.side else 0.0)


def _baseline(*, grid: Grid, sides: dict[str, np.ndarray], initial: float, fee: float,
              slippage: float, fraction: float | None = None) -> Curve:  # fmt: skip
    """Trade each market's wanted side (+1, 0, -1 per clock time) on its own sleeve (an equal
    part of the capital). fraction None: an entry invests the whole sleeve; otherwise its
    notional is that fraction of the baseline's equity at the previous close, as the risk
    manager sizes the strategy's entries."""
    n = len(grid.clock)
    curve = Curve(equity=np.zeros(n), in_market=np.zeros(n, dtype=bool))
    sleeves = {
        symbol: _Sleeve(capital=initial / len(sides), fee=fee, slippage=slippage, curve=curve)
        for symbol in sides
    }
    equity = initial
    for i in range(n):
        for symbol, sleeve in sleeves.items():
            wanted, close = int(sides[symbol][i]), grid.closes[symbol][i]
            if wanted != sleeve.side:
                if sleeve.side:
                    sleeve.close(close)
                if wanted:
                    notional = sleeve.cash if fraction is None else fraction * equity
                    sleeve.open(wanted, close, notional=notional)
            curve.in_market[i] |= sleeve.side != 0
            if i == n - 1 and sleeve.side:
                sleeve.close(close)
        equity = sum(sleeve.value(grid.closes[symbol][i]) for symbol, sleeve in sleeves.items())
        curve.equity[i] = equity
    return curve


def buy_and_hold_curve(*, grid: Grid, initial: float, fee: float, slippage: float) -> Curve:
    sides = {symbol: np.ones(len(grid.clock), dtype=int) for symbol in grid.closes}
    return _baseline(grid=grid, sides=sides, initial=initial, fee=fee, slippage=slippage)


def ema_rsi_sides(frame: pd.DataFrame, *, trader) -> pd.Series:
    """+1 / 0 / -1 per candle of `frame`, from candles up to that one only."""
    close = frame[["close"]]
    fast = indicators.ema(close, span=trader.ema_short)["close"]
    slow = indicators.ema(close, span=trader.ema_long)["close"]
    rsi = indicators.rsi(close, period=trader.rsi_period)["close"]
    long_ = (fast > slow) & (rsi < trader.rsi_overbought)
    short = (fast < slow) & (rsi > trader.rsi_oversold)
    return pd.Series(np.select([long_, short], [1, -1], 0), index=frame.index)


def ema_rsi_curve(*, grid: Grid, trader, initial: float, fee: float, slippage: float) -> Curve:
    sides = {
        symbol: ema_rsi_sides(frame, trader=trader)
        .reindex(grid.steps)
        .ffill()
        .fillna(0)
        .to_numpy(dtype=int)
        for symbol, frame in grid.frames.items()
    }
    return _baseline(
        grid=grid, sides=sides, initial=initial, fee=fee, slippage=slippage,
        fraction=trader.per_trade_percentage / 100,
    )  # fmt: skip


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else float(numerator / denominator)


def performance(curve: Curve, *, grid: Grid, initial: float) -> dict:
    clock, step = grid.clock, grid.delta
    equity = curve.equity
    final = float(equity[-1]) if len(equity) else initial
    pnls = np.asarray(curve.trade_pnls, dtype=float)
    wins, losses = pnls[pnls > 0], pnls[pnls <= 0]
    total = final / initial - 1
    span = (clock[-1] - clock[0] + step).total_seconds() if len(clock) else 0.0
    annualised = (1 + total) ** (SECONDS_PER_YEAR / span) - 1 if span > 0 and total > -1 else None
    daily = pd.Series(equity, index=clock).resample("1D").last().dropna()
    returns = pd.concat([pd.Series([initial]), pd.Series(daily.to_numpy())]).pct_change().dropna()
    returns = returns.to_numpy()
    std = returns.std(ddof=1) if len(returns) > 1 else 0.0
    downside = np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)) if len(returns) > 1 else 0.0
    peaks = np.maximum.accumulate(np.concatenate([[initial], equity]))[1:]
    drawdown = 1 - equity / peaks if len(equity) else np.zeros(1)
    return {
        "trades": len(pnls),
        "open_at_end": curve.open_at_end,
        "win_rate_percentage": _ratio(100 * len(wins), len(pnls)),
        "average_win": float(wins.mean()) if len(wins) else None,
        "average_loss": float(losses.mean()) if len(losses) else None,
        "profit_factor": _ratio(wins.sum(), -losses.sum()),
        "final_equity": final,
        "total_return_percentage": 100 * total,
        "annualised_return_percentage": None if annualised is None else 100 * annualised,
        "sharpe": _ratio(returns.mean() * np.sqrt(DAYS_PER_YEAR), std) if std > 0 else None,
        "sortino": (
            _ratio(returns.mean() * np.sqrt(DAYS_PER_YEAR), downside) if downside > 0 else None
        ),
        "max_drawdown_percentage": float(100 * drawdown.max()) if len(equity) else 0.0,
        "exposure_percentage": float(100 * curve.in_market.mean()) if len(equity) else 0.0,
        "fees_paid": curve.fees,
    }


def _plain(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _rows(rows: list[dict]) -> list[dict]:
    return [{key: _plain(value) for key, value in row.items()} for row in rows]


def backtest_report(*, outcome, tapes, trader, run) -> dict:
    """The report's content: figures, curves, trades and orders, JSON-ready."""
    grid = grid_of(tapes, outcome.steps)
    initial = float(trader.initial_capital)
    account = trader.account
    costs = {
        "fee": account.paper_fee_percentage / 100,
        "slippage": account.paper_slippage_percentage / 100,
    }
    curves = {
        "strategy": strategy_curve(
            grid=grid, orders=outcome.orders, positions=outcome.positions, initial=initial
        ),
        "buy_and_hold": buy_and_hold_curve(grid=grid, initial=initial, **costs),
        "ema_rsi": ema_rsi_curve(grid=grid, trader=trader, initial=initial, **costs),
    }
    metrics = {
        name: performance(curve, grid=grid, initial=initial) for name, curve in curves.items()
    }
    metrics["ema_rsi"]["rule"] = (
        f"EMA({trader.ema_short}/{trader.ema_long}) + RSI({trader.rsi_period}) "
        f"{trader.rsi_oversold:g}/{trader.rsi_overbought:g}"
    )
    metrics["replay"] = {
        "steps": len(outcome.steps),
        "service_steps": outcome.service_steps,
        "signals_accepted": outcome.signals_accepted,
        "decisions": outcome.decisions,
        "orders": len(outcome.orders),
        "halted_reason": outcome.halted_reason,
        "sync_reasons": outcome.sync_reasons,
        "stage_seconds": outcome.stage_seconds,  # the report's own time is added once written
    }
    return {
        "run": {
            "id": run.pk,
            "trader": trader.name,
            "start": run.start.isoformat(),
            "end": run.end.isoformat(),
            "data_source": run.data_source,
            "settings": run.settings,
        },
        "metrics": metrics,
        "clock": [t.isoformat() for t in grid.clock],
        "equity": {name: curve.equity.round(6).tolist() for name, curve in curves.items()},
        "closes": {symbol: closes.tolist() for symbol, closes in grid.closes.items()},
        "trades": _rows([p for p in outcome.positions if p["status"] in ("OPEN", "CLOSED")]),
        "orders": _rows(outcome.orders),
    }
