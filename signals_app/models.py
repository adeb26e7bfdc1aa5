"""signals_app's data: markets and their candles, the ML configuration, model versions, and what
each minute produces (predictions, signals, cycle runs)."""

from django.db import models
from django.db.models import Q

from botai.money import MoneyField


class Market(models.Model):
    """One tradable symbol on one exchange, at the timeframe the model reads.

    The lot and notional limits are read by trading's risk manager; they are null until known (the
    ccxt source fills them from the exchange's market list)."""

    exchange = models.CharField(max_length=32, help_text="ccxt exchange id, e.g. bybit")
    symbol = models.CharField(max_length=32, help_text="exchange symbol, e.g. BTCUSDT")
    ccxt_symbol = models.CharField(max_length=64, help_text="ccxt unified symbol, e.g. BTC/USDT")
    timeframe = models.CharField(max_length=8, default="15m")
    enabled = models.BooleanField(default=True, help_text="part of the per-minute cycle")
    amount_step = MoneyField(
        null=True, blank=True,
        help_text="order amounts are multiples of this (base asset)",
    )  # fmt: skip
    price_step = MoneyField(
        null=True, blank=True,
        help_text="prices are multiples of this (quote asset)",
    )  # fmt: skip
    min_amount = MoneyField(null=True, blank=True, help_text="base asset")
    min_notional = MoneyField(null=True, blank=True, help_text="quote asset")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["exchange", "symbol"]
        constraints = [
            models.UniqueConstraint(fields=["exchange", "symbol"], name="market_unique_symbol")
        ]

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol} {self.timeframe}"


class Candle(models.Model):
    """One closed OHLCV candle; open_time is the candle's open (UTC), as in ../shared data."""

    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="candles")
    open_time = models.DateTimeField()
    open = models.FloatField()
    high = models.FloatField()
    low = models.FloatField()
    close = models.FloatField()
    volume = models.FloatField()

    class Meta:
        # The unique constraint's (market, open_time) b-tree also serves "last N candles of a
        # market" (PostgreSQL and SQLite scan it backwards), so no second index is needed.
        constraints = [
            models.UniqueConstraint(fields=["market", "open_time"], name="candle_unique_time")
        ]

    def __str__(self) -> str:
        return f"{self.market_id} {self.open_time:%Y-%m-%d %H:%M} c={self.close}"


class MLConfig(models.Model):
    """The seed's system.yaml `ml:` block, as one row (pk 1) edited in the admin.

    `symbols` has no column: it is the set of enabled Markets."""

    class Device(models.TextChoices):
        AUTO = "auto", "auto (cuda when available, else cpu)"
        CUDA = "cuda", "cuda (falls back to cpu with a warning)"
        CPU = "cpu", "cpu"

    class RiskTolerance(models.TextChoices):
        LOW = "LOW", "low"
        MEDIUM = "MEDIUM", "medium"
        HIGH = "HIGH", "high"

    SINGLETON_PK = 1

    enabled = models.BooleanField(default=True)
    interval_seconds = models.PositiveIntegerField(default=60)
    batch_size = models.PositiveIntegerField(default=10, help_text="markets per gpu task")
    parallel_workers = models.PositiveIntegerField(default=4)
    model_path = models.CharField(
        max_length=500, blank=True, help_text="checkpoint; blank = the MODEL_PATH setting"
    )
    device = models.CharField(max_length=8, choices=Device.choices, default=Device.AUTO)
    use_compile = models.BooleanField(default=False)
    min_confidence = models.FloatField(default=0.45)
    min_signal_strength = models.FloatField(default=0.2)
    risk_tolerance = models.CharField(
        max_length=8, choices=RiskTolerance.choices, default=RiskTolerance.MEDIUM
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "ML configuration"
        verbose_name_plural = "ML configuration"
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="mlconfig_single_row")]

    def __str__(self) -> str:
        return "ML configuration"

    def save(self, *args, **kwargs):
        self.pk = self.SINGLETON_PK
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> "MLConfig":
        config, _ = cls.objects.get_or_create(pk=cls.SINGLETON_PK)
        return config


class ModelVersion(models.Model):
    """A checkpoint the system has trained or served, identified by its content fingerprint."""

    name = models.CharField(max_length=100, help_text="the checkpoint's version label")
    checkpoint_path = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64, unique=True)
    feature_set = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["active"], condition=Q(active=True), name="modelversion_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint[:12]})"


class Prediction(models.Model):
    """The model's output for one market at one closed candle."""

    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="predictions")
    candle_time = models.DateTimeField(help_text="open time of the last closed candle used")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="predictions"
    )
    close = models.FloatField(help_text="close of that candle, the reference price")
    returns = models.JSONField(help_text="horizon (candles) -> predicted simple return")
    probabilities = models.JSONField(help_text="horizon -> [down, flat, up]")
    risk = models.JSONField(help_text="name -> predicted max drawdown / rally")
    direction = models.CharField(max_length=8)
    confidence = models.FloatField()
    strength = models.FloatField()
    latency_ms = models.FloatField(
        help_text="generation time: batch start to the model's answer, ms"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["market", "candle_time", "model_version"], name="prediction_unique"
            )
        ]
        indexes = [models.Index(fields=["created_at"], name="prediction_created")]

    def __str__(self) -> str:
        return f"{self.market_id} {self.candle_time:%Y-%m-%d %H:%M} {self.direction}"


class Signal(models.Model):
    """A trading signal derived from a Prediction by the ML signal processor.

    trading_app moves it on (EXECUTED) and writes back how many orders it attempted and created,
    which is where the order creation success rate comes from."""

    class Type(models.TextChoices):
        LONG = "LONG", "long"
        SHORT = "SHORT", "short"
        NEUTRAL = "NEUTRAL", "neutral"

    class Status(models.TextChoices):
        NEW = "NEW", "new"
        ACCEPTED = "ACCEPTED", "accepted (handed to trading)"
        REJECTED = "REJECTED", "rejected"
        EXPIRED = "EXPIRED", "expired"
        EXECUTED = "EXECUTED", "executed (an order was created)"

    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="signals")
    prediction = models.OneToOneField(Prediction, on_delete=models.CASCADE, related_name="signal")
    candle_time = models.DateTimeField()
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    type = models.CharField(max_length=8, choices=Type.choices)
    confidence = models.FloatField()
    strength = models.FloatField()
    entry_price = MoneyField()
    stop_loss = MoneyField(null=True, blank=True)
    take_profit = MoneyField(null=True, blank=True)
    expires_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW)
    rejection_reason = models.CharField(max_length=200, blank=True)
    handed_at = models.DateTimeField(
        null=True, blank=True, help_text="when sent to trading (ACCEPTED signals only)"
    )
    orders_attempted = models.PositiveIntegerField(default=0, help_text="written by trading")
    orders_created = models.PositiveIntegerField(default=0, help_text="written by trading")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["market", "candle_time", "model_version"], name="signal_unique"
            )
        ]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="signal_status_expiry"),
            models.Index(fields=["created_at"], name="signal_created"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.market_id} {self.candle_time:%Y-%m-%d %H:%M} {self.status}"


class CycleRun(models.Model):
    """One minute of the cycle: run_cycle opens it, each predict_batch adds its counts."""

    class Status(models.TextChoices):
        RUNNING = "RUNNING", "running"
        OK = "OK", "ok"
        PARTIAL = "PARTIAL", "finished with market errors"
        SKIPPED = "SKIPPED", "skipped (disabled, no model, nothing new)"
        FAILED = "FAILED", "failed"

    started_at = models.DateTimeField()
    candle_time = models.DateTimeField(
        null=True, blank=True, help_text="newest closed candle at the cycle's clock"
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    reason = models.CharField(max_length=500, blank=True, help_text="why skipped or failed")
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    device = models.CharField(max_length=16, blank=True, help_text="where the model ran")
    markets = models.PositiveIntegerField(default=0, help_text="enabled markets")
    markets_new = models.PositiveIntegerField(default=0, help_text="with a new closed candle")
    candles_stored = models.PositiveIntegerField(default=0)
    batches = models.PositiveIntegerField(default=0)
    batches_done = models.JSONField(default=list, help_text="indexes of finished batches")
    predictions = models.PositiveIntegerField(default=0)
    cache_hits = models.PositiveIntegerField(default=0)
    signals_long = models.PositiveIntegerField(default=0)
    signals_short = models.PositiveIntegerField(default=0)
    signals_neutral = models.PositiveIntegerField(default=0)
    signals_accepted = models.PositiveIntegerField(default=0)
    stage_seconds = models.JSONField(default=dict, help_text="stage -> seconds (batches summed)")
    errors = models.JSONField(default=list, help_text="[{market, stage, error}]")

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["-started_at"], name="cyclerun_started")]

    def __str__(self) -> str:
        return f"cycle {self.started_at:%Y-%m-%d %H:%M:%S} {self.status}"
