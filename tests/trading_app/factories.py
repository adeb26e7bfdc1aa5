"""Builders for trading tests: markets with real candles, predictions and signals, accounts and
traders. Candles come from the shared real data unless a test needs a price path of its own."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd

from signals_app.models import Candle, Market, ModelVersion, Prediction, Signal
from trading_app.models import ExchangeAccount, Trader

T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)


def real_candles(shared_data: Path, symbol: str = "BTC_USDT", n: int = 200) -> pd.DataFrame:
    frame = pd.read_csv(shared_data / "ohlcv" / f"{symbol}-15m.csv").iloc[:n]
    frame["time"] = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
    return frame


def market(symbol: str = "BTCUSDT", **fields) -> Market:
    base = symbol.removesuffix("USDT")
    defaults = {
        "exchange": "bybit",
        "ccxt_symbol": f"{base}/USDT",
        "timeframe": "15m",
        "amount_step": Decimal("0.000001"),
        "price_step": Decimal("0.01"),
        "min_amount": Decimal("0.00001"),
        "min_notional": Decimal("5"),
    }
    return Market.objects.create(symbol=symbol, **(defaults | fields))


def store_candles(market: Market, frame: pd.DataFrame) -> datetime:
    """Store candles (columns time, open, high, low, close, volume); returns the last open time."""
    Candle.objects.bulk_create(
        Candle(
            market=market, open_time=row.time, open=row.open, high=row.high, low=row.low,
            close=row.close, volume=row.volume,
        )
        for row in frame.itertuples()
    )  # fmt: skip
    return frame["time"].iloc[-1].to_pydatetime()


def calm_candles(*, n: int, price: float, start: datetime = T0, wiggle: float = 0.001):
    """A market going nowhere around `price`: closes alternate +/- wiggle/2 (RSI near 50, the
    EMAs together) and every candle spans +/- wiggle, ending on a close at exactly `price`."""
    times = [start + i * STEP for i in range(n)]
    closes = [price * (1 + (wiggle / 2 if (n - 1 - i) % 2 else 0.0)) for i in range(n)]
    return pd.DataFrame(
        {
            "time": times,
            "open": [closes[i - 1] if i else price for i in range(n)],
            "high": [c * (1 + wiggle) for c in closes],
            "low": [c * (1 - wiggle) for c in closes],
            "close": closes,
            "volume": 1.0,
        }
    )


def advance(market: Market, n: int = 1) -> datetime:
    """Store n more calm candles after the market's latest (time moves on); returns the last."""
    last = market.candles.latest("open_time")
    frame = calm_candles(n=n + 1, price=last.close, start=last.open_time).iloc[1:]
    return store_candles(market, frame)


def model_version(name: str = "test") -> ModelVersion:
    version, _ = ModelVersion.objects.get_or_create(
        fingerprint=f"{name}-model", defaults={"name": name, "checkpoint_path": f"{name}.pt"}
    )
    return version


def signal(
    market: Market,
    *,
    type: str = "LONG",
    confidence: float = 0.8,
    strength: float = 0.6,
    candle_time: datetime | None = None,
    status: str = Signal.Status.ACCEPTED,
    risk: dict | None = None,
    returns: dict | None = None,
    model: str = "test",
) -> Signal:
    """A signal on the market's latest candle (or `candle_time`), as signals_app writes it."""
    last = market.candles.order_by("-open_time").first()
    candle_time = candle_time or (last.open_time if last else T0)
    close = last.close if last else 100.0
    version = model_version(model)
    prediction = Prediction.objects.create(
        market=market, candle_time=candle_time, model_version=version, close=close,
        returns=returns or {"1": 0.001, "4": 0.004, "16": 0.01, "48": 0.02},
        probabilities={"4": [0.2, 0.2, 0.6]},
        risk=risk or {"max_drawdown_1h": 0.004, "max_rally_1h": 0.012,
                      "max_drawdown_4h": 0.01, "max_rally_4h": 0.02},
        direction=type, confidence=confidence, strength=strength, latency_ms=1.0,
    )  # fmt: skip
    return Signal.objects.create(
        market=market, prediction=prediction, candle_time=candle_time, model_version=version,
        type=type, confidence=confidence, strength=strength,
        entry_price=Decimal(repr(close)), expires_at=candle_time + STEP,
        status=status,
    )  # fmt: skip


def paper_account(**fields) -> ExchangeAccount:
    defaults = {"name": "paper-test", "exchange": "bybit", "mode": ExchangeAccount.Mode.PAPER}
    return ExchangeAccount.objects.create(**(defaults | fields))


def trader(account: ExchangeAccount, markets: list[Market], **fields) -> Trader:
    defaults = {"name": "multi_crypto_10", "account": account}
    trader = Trader.objects.create(**(defaults | fields))
    trader.markets.set(markets)
    return trader
