"""trading_app's data: exchange accounts, traders and their risk settings, the decisions taken on
signals, orders, positions, paper balances and equity snapshots."""

import os
import secrets
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from botai.money import MoneyField
from signals_app.models import Market, Signal
from trading_app import credentials


def new_client_id_prefix() -> str:
    return "bt" + secrets.token_hex(3)


class ExchangeAccount(models.Model):
    """Where a trader's orders go: the built-in paper exchange or a ccxt exchange account.

    API credentials come from environment variables named here (preferred) or are stored
    Fernet-encrypted (`set_credentials`); plain values are never stored, logged or serialised."""

    class Mode(models.TextChoices):
        PAPER = "PAPER", "paper (simulated fills, no exchange)"
        TESTNET = "TESTNET", "testnet (exchange sandbox)"
        LIVE = "LIVE", "live (real money)"

    name = models.CharField(max_length=64, unique=True)
    exchange = models.CharField(
        max_length=32, default="bybit", help_text="ccxt exchange id; paper accounts use its markets"
    )
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.PAPER)
    api_key_env = models.CharField(
        max_length=100, blank=True, help_text="name of the environment variable with the API key"
    )
    secret_env = models.CharField(
        max_length=100, blank=True, help_text="name of the environment variable with the secret"
    )
    password_env = models.CharField(
        max_length=100, blank=True, help_text="environment variable with the passphrase, if any"
    )
    api_key_encrypted = models.TextField(blank=True, editable=False)
    secret_encrypted = models.TextField(blank=True, editable=False)
    password_encrypted = models.TextField(blank=True, editable=False)
    options = models.JSONField(default=dict, blank=True, help_text="ccxt exchange options")
    client_id_prefix = models.CharField(
        max_length=8, default=new_client_id_prefix,
        help_text="client order id prefix: a new database never reuses old ids",
    )  # fmt: skip
    quote_currency = models.CharField(max_length=16, default="USDT")
    paper_initial_balance = MoneyField(
        default=Decimal("10000"), validators=[MinValueValidator(0)],
        help_text="paper accounts start with this much quote currency",
    )  # fmt: skip
    paper_slippage_percentage = models.FloatField(
        default=0.05, validators=[MinValueValidator(0)], help_text="paper fills: price slippage %"
    )
    paper_fee_percentage = models.FloatField(
        default=0.055, validators=[MinValueValidator(0)], help_text="paper fills: taker fee %"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.exchange} {self.mode})"

    @property
    def is_paper(self) -> bool:
        return self.mode == self.Mode.PAPER

    def set_credentials(self, *, api_key: str, secret: str, password: str = "") -> None:
        """Store credentials encrypted (call save() after)."""
        self.api_key_encrypted = credentials.encrypt(api_key)
        self.secret_encrypted = credentials.encrypt(secret)
        self.password_encrypted = credentials.encrypt(password)

    @property
    def has_stored_credentials(self) -> bool:
        return bool(self.api_key_encrypted and self.secret_encrypted)

    def credentials(self) -> dict[str, str]:
        """The plain API key, secret and password, for the exchange adapter only."""
        if self.api_key_env or self.secret_env:
            values = {}
            for key, variable in (
                ("api_key", self.api_key_env),
                ("secret", self.secret_env),
                ("password", self.password_env),
            ):
                if variable and variable not in os.environ:
                    raise credentials.CredentialsError(
                        f"account {self.name}: environment variable {variable} is not set"
                    )
                values[key] = os.environ.get(variable, "") if variable else ""
            return values
        return {
            "api_key": credentials.decrypt(self.api_key_encrypted),
            "secret": credentials.decrypt(self.secret_encrypted),
            "password": credentials.decrypt(self.password_encrypted),
        }

    def clean(self) -> None:
        if self.mode != self.Mode.PAPER and not (
            self.has_stored_credentials or (self.api_key_env and self.secret_env)
        ):
            raise ValidationError(
                f"a {self.mode} account needs API credentials: name the environment variables "
                "(api_key_env, secret_env) or enter them to be stored encrypted"
            )


class Balance(models.Model):
    """The paper exchange's balance of one asset of one account (ccxt accounts are not mirrored)."""

    account = models.ForeignKey(ExchangeAccount, on_delete=models.CASCADE, related_name="balances")
    asset = models.CharField(max_length=16)
    free = MoneyField()
    used = MoneyField(default=Decimal(0), help_text="margin held by positions")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "asset"], name="balance_unique_asset")
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.asset} free={self.free} used={self.used}"


class Trader(models.Model):
    """One entry of the seed's traders.yaml, with its indicator rules and risk settings."""

    class Strategy(models.TextChoices):
        ML_SIGNAL = "ml_signal", "ML signal + indicator rules"

    name = models.SlugField(max_length=64, unique=True, help_text="traders.yaml `id`")
    enabled = models.BooleanField(default=True)
    type = models.CharField(max_length=32, default="multi_crypto")
    account = models.ForeignKey(ExchangeAccount, on_delete=models.PROTECT, related_name="traders")
    markets = models.ManyToManyField(Market, related_name="traders", help_text="`symbols`")
    strategy = models.CharField(max_length=32, choices=Strategy.choices, default="ml_signal")
    signal_interval_seconds = models.PositiveIntegerField(default=60)
    rsi_period = models.PositiveIntegerField(default=14)
    rsi_oversold = models.FloatField(default=30)
    rsi_overbought = models.FloatField(default=70)
    ema_short = models.PositiveIntegerField(default=9)
    ema_long = models.PositiveIntegerField(default=21)
    initial_capital = MoneyField(default=Decimal("10000"))
    per_trade_percentage = models.FloatField(default=2)
    max_positions = models.PositiveIntegerField(default=5)
    stop_loss_percentage = models.FloatField(default=2)
    take_profit_percentage = models.FloatField(default=5)
    max_drawdown_percentage = models.FloatField(default=10)
    # Running state, written by the trading engine and position sync.
    realized_pnl = MoneyField(default=Decimal(0), editable=False)
    peak_equity = MoneyField(null=True, blank=True, editable=False)
    is_halted = models.BooleanField(
        default=False, help_text="no new entries; set by the drawdown rule, cleared by a person"
    )
    halted_reason = models.CharField(max_length=300, blank=True)
    halted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(take_profit_percentage__gt=models.F("stop_loss_percentage")),
                name="trader_tp_above_sl",
            ),
            models.CheckConstraint(
                condition=Q(rsi_oversold__lt=models.F("rsi_overbought")),
                name="trader_rsi_bands_ordered",
            ),
            models.CheckConstraint(
                condition=Q(ema_short__lt=models.F("ema_long")), name="trader_ema_ordered"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        values = {field: getattr(self, field) for field in TRADER_SETTING_FIELDS}
        if None in values.values():
            return  # clean_fields has already reported the missing value
        if errors := trader_settings_errors(values):
            raise ValidationError(errors)


TRADER_SETTING_FIELDS = (
    "signal_interval_seconds", "rsi_period", "rsi_oversold", "rsi_overbought", "ema_short",
    "ema_long", "initial_capital", "per_trade_percentage", "max_positions",
    "stop_loss_percentage", "take_profit_percentage", "max_drawdown_percentage",
)  # fmt: skip


def trader_settings_errors(values: dict) -> dict[str, str]:
    """Field -> message for every invalid trader setting (shared by clean() and load_traders)."""
    errors: dict[str, str] = {}

    def num(field: str) -> str:
        value = values[field]
        return format(value.normalize(), "f") if isinstance(value, Decimal) else f"{value:g}"

    def check(field: str, ok: bool, message: str) -> None:
        if field not in errors and not ok:
            errors[field] = f"{message} (got {num(field)})"

    check("signal_interval_seconds", values["signal_interval_seconds"] >= 1, "must be >= 1 s")
    check("rsi_period", values["rsi_period"] >= 2, "RSI period must be at least 2")
    check("rsi_oversold", 0 < values["rsi_oversold"] < 100, "RSI oversold must be in (0, 100)")
    check(
        "rsi_overbought", 0 < values["rsi_overbought"] < 100, "RSI overbought must be in (0, 100)"
    )
    check(
        "rsi_overbought",
        values["rsi_oversold"] < values["rsi_overbought"],
        f"RSI overbought must be above oversold ({num('rsi_oversold')})",
    )
    check("ema_short", values["ema_short"] >= 1, "EMA short period must be at least 1")
    check(
        "ema_long",
        values["ema_short"] < values["ema_long"],
        f"EMA long period must be longer than the short one ({num('ema_short')})",
    )
    check("initial_capital", values["initial_capital"] > 0, "initial capital must be positive")
    check(
        "per_trade_percentage",
        0 < values["per_trade_percentage"] <= 100,
        "per-trade percentage must be in (0, 100]",
    )
    check("max_positions", values["max_positions"] >= 1, "max positions must be at least 1")
    check(
        "stop_loss_percentage",
        0 < values["stop_loss_percentage"] < 100,
        "stop loss percentage must be in (0, 100)",
    )
    check(
        "take_profit_percentage",
        values["take_profit_percentage"] > values["stop_loss_percentage"],
        f"take profit must be above the stop loss ({num('stop_loss_percentage')}%)",
    )
    check(
        "max_drawdown_percentage",
        0 < values["max_drawdown_percentage"] < 100,
        "max drawdown percentage must be in (0, 100)",
    )
    return errors


class TradeDecision(models.Model):
    """What the AI signal generator and the risk manager decided for one trader on one signal, and
    why. One per (trader, signal): a redelivered batch finds it and does nothing twice."""

    class Action(models.TextChoices):
        LONG = "LONG", "go long"
        SHORT = "SHORT", "go short"
        NONE = "NONE", "no trade"

    class Outcome(models.TextChoices):
        ORDERED = "ORDERED", "orders created"
        REJECTED = "REJECTED", "rejected by the risk manager"
        SKIPPED = "SKIPPED", "nothing to do"

    # db_index off: the unique (trader, signal) index serves lookups by trader.
    trader = models.ForeignKey(
        Trader, on_delete=models.CASCADE, related_name="decisions", db_index=False
    )
    signal = models.ForeignKey(Signal, on_delete=models.CASCADE, related_name="trade_decisions")
    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=8, choices=Action.choices)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    ml_score = models.FloatField()
    rsi = models.FloatField(null=True, blank=True)
    rsi_score = models.FloatField()
    ema_short = models.FloatField(null=True, blank=True)
    ema_long = models.FloatField(null=True, blank=True)
    ema_score = models.FloatField()
    final_score = models.FloatField()
    atr = models.FloatField(null=True, blank=True)
    stop_loss = MoneyField(null=True, blank=True)
    take_profit = MoneyField(null=True, blank=True)
    reasons = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["trader", "signal"], name="decision_unique_signal")
        ]

    def __str__(self) -> str:
        return f"{self.trader_id} {self.signal_id} {self.action} {self.outcome}"


class Position(models.Model):
    class Side(models.TextChoices):
        LONG = "LONG", "long"
        SHORT = "SHORT", "short"

    class Status(models.TextChoices):
        PENDING = "PENDING", "entry order not filled yet"
        OPEN = "OPEN", "open"
        CLOSED = "CLOSED", "closed"
        CANCELED = "CANCELED", "entry never filled"

    class CloseReason(models.TextChoices):
        SIGNAL = "SIGNAL", "opposite signal"
        STOP_LOSS = "STOP_LOSS", "stop loss"
        TAKE_PROFIT = "TAKE_PROFIT", "take profit"
        EXCHANGE = "EXCHANGE", "closed on the exchange"
        ENTRY_FAILED = "ENTRY_FAILED", "entry order rejected or failed"
        MANUAL = "MANUAL", "closed by hand (admin or API)"

    ACTIVE = (Status.PENDING, Status.OPEN)

    # db_index off: the (trader, status) index serves lookups by trader.
    trader = models.ForeignKey(
        Trader, on_delete=models.CASCADE, related_name="positions", db_index=False
    )
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="+")
    signal = models.ForeignKey(
        Signal, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    side = models.CharField(max_length=5, choices=Side.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    amount = MoneyField()
    entry_price = MoneyField(help_text="fill price (expected, while PENDING)")
    stop_loss = MoneyField(null=True, blank=True)
    take_profit = MoneyField(null=True, blank=True)
    exit_price = MoneyField(null=True, blank=True)
    fees = MoneyField(default=Decimal(0))
    realized_pnl = MoneyField(default=Decimal(0), help_text="net of fees")
    unrealized_pnl = MoneyField(default=Decimal(0))
    close_reason = models.CharField(max_length=12, choices=CloseReason.choices, blank=True)
    opened_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    checked_until = models.DateTimeField(
        null=True, blank=True, help_text="open time of the last candle checked for SL/TP"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            # Never two live positions on one market per trader, whatever a racing task does.
            models.UniqueConstraint(
                fields=["trader", "market"],
                condition=Q(status__in=["PENDING", "OPEN"]),
                name="position_one_active_per_market",
            )
        ]
        indexes = [models.Index(fields=["trader", "status"], name="position_trader_status")]

    def __str__(self) -> str:
        return f"{self.trader_id} {self.side} {self.market_id} {self.status}"


class Order(models.Model):
    class Purpose(models.TextChoices):
        OPEN = "OPEN", "open a position"
        CLOSE = "CLOSE", "close (opposite signal, or by hand)"
        STOP_LOSS = "STOP_LOSS", "stop loss hit"
        TAKE_PROFIT = "TAKE_PROFIT", "take profit hit"

    class Side(models.TextChoices):
        BUY = "buy", "buy"
        SELL = "sell", "sell"

    class Type(models.TextChoices):
        MARKET = "market", "market"
        LIMIT = "limit", "limit"

    class Status(models.TextChoices):
        NEW = "NEW", "new (not sent yet)"
        SUBMITTED = "SUBMITTED", "submitted (exchange answer pending)"
        OPEN = "OPEN", "open on the exchange"
        FILLED = "FILLED", "filled"
        CANCELED = "CANCELED", "canceled"
        REJECTED = "REJECTED", "rejected"
        FAILED = "FAILED", "failed"

    UNSETTLED = (Status.NEW, Status.SUBMITTED, Status.OPEN)

    client_order_id = models.CharField(
        max_length=36, unique=True, help_text="idempotency key, sent to the exchange"
    )
    # db_index off: the (trader, -created_at) index serves lookups by trader.
    trader = models.ForeignKey(
        Trader, on_delete=models.CASCADE, related_name="orders", db_index=False
    )
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="+")
    signal = models.ForeignKey(
        Signal, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    position = models.ForeignKey(
        Position, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    purpose = models.CharField(max_length=12, choices=Purpose.choices)
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=6, choices=Type.choices, default=Type.MARKET)
    amount = MoneyField()
    price = MoneyField(null=True, blank=True, help_text="reference price")
    stop_loss = MoneyField(null=True, blank=True)
    take_profit = MoneyField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW)
    status_reason = models.CharField(max_length=300, blank=True)
    exchange_order_id = models.CharField(max_length=64, blank=True)
    filled_amount = MoneyField(default=Decimal(0))
    average_price = MoneyField(null=True, blank=True)
    fee = MoneyField(default=Decimal(0))
    fee_currency = models.CharField(max_length=16, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    filled_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["status"],
                condition=Q(status__in=["NEW", "SUBMITTED", "OPEN"]),
                name="order_unsettled",
            ),
            models.Index(fields=["trader", "-created_at"], name="order_trader_created"),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.amount} {self.status}"


class EquitySnapshot(models.Model):
    """A trader's equity at one minute; the peak and drawdown the halt rule used."""

    trader = models.ForeignKey(Trader, on_delete=models.CASCADE, related_name="equity_snapshots")
    time = models.DateTimeField()
    equity = MoneyField()
    realized_pnl = MoneyField()
    unrealized_pnl = MoneyField()
    open_positions = models.PositiveIntegerField()
    peak_equity = MoneyField()
    drawdown_percentage = models.FloatField()

    class Meta:
        ordering = ["-time"]
        constraints = [
            models.UniqueConstraint(fields=["trader", "time"], name="equity_unique_time")
        ]

    def __str__(self) -> str:
        return f"{self.trader_id} {self.time:%Y-%m-%d %H:%M} {self.equity}"


class BacktestRun(models.Model):
    """One backtest: a trader's settings replayed over past candles through the live services
    (trading_app.backtest.replay) and the report on it. The replay's own rows are rolled back;
    this row and the files under data/backtests/<id>/ are what stays."""

    class Status(models.TextChoices):
        RUNNING = "RUNNING", "running"
        DONE = "DONE", "done"
        FAILED = "FAILED", "failed"

    trader = models.ForeignKey(
        Trader, null=True, blank=True, on_delete=models.SET_NULL, related_name="backtests"
    )
    trader_name = models.CharField(max_length=64)
    start = models.DateTimeField(help_text="open time of the first candle decided on")
    end = models.DateTimeField(help_text="open time of the last candle decided on")
    data_source = models.CharField(max_length=500, help_text='"database" or the CSV directory')
    model_name = models.CharField(max_length=100, blank=True)
    model_fingerprint = models.CharField(max_length=64, blank=True)
    settings = models.JSONField(
        default=dict, blank=True, help_text="trader, ML thresholds and paper costs replayed"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)
    steps = models.PositiveIntegerField(default=0, help_text="candle times replayed")
    service_steps = models.PositiveIntegerField(
        default=0, help_text="candle times that went through the trading services"
    )
    orders = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(
        default=dict, blank=True, help_text="strategy, buy_and_hold and ema_rsi figures"
    )
    report_path = models.CharField(max_length=500, blank=True)
    seconds = models.FloatField(null=True, blank=True, help_text="wall time of the run")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"backtest {self.pk} {self.trader_name} {self.start:%Y-%m-%d}..{self.end:%Y-%m-%d}"
