"""API shapes of signals_app: predictions, signals, the ML status and metrics, generate-signal."""

from datetime import timedelta

import orjson
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from rest_framework import serializers

from signals_app.models import Market, ModelVersion, Prediction, Signal

MAX_METRICS_WINDOW = timedelta(days=90)


class ModelVersionBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "fingerprint"]


class PredictionSerializer(serializers.ModelSerializer):
    symbol = serializers.CharField(source="market.symbol")
    exchange = serializers.CharField(source="market.exchange")
    model_version = ModelVersionBriefSerializer()

    class Meta:
        model = Prediction
        fields = [
            "id", "symbol", "exchange", "candle_time", "model_version", "close", "returns",
            "probabilities", "risk", "direction", "confidence", "strength", "latency_ms",
            "created_at",
        ]  # fmt: skip


# What a predictions page reads of each row: the version's name and fingerprint come in the same
# query; the JSON columns come as text, for orjson to decode (5x faster than json.loads).
_PAGE_COLUMNS = (
    "id", "market_id", "candle_time", "model_version_id", "model_version__name",
    "model_version__fingerprint", "close", "direction", "confidence", "strength", "latency_ms",
    "created_at",
)  # fmt: skip
_PAGE_JSON = ("returns", "probabilities", "risk")


def prediction_rows(predictions: QuerySet[Prediction]) -> QuerySet[dict]:
    """The rows prediction_page represents: values(), no model instance per row."""
    as_text = {f"{name}_text": Cast(name, TextField()) for name in _PAGE_JSON}
    return predictions.values(*_PAGE_COLUMNS, **as_text)


def prediction_page(rows: list[dict], markets: dict[int, dict]) -> list[dict]:
    """PredictionSerializer's representation of prediction_rows; `markets` maps each market id
    to its {"symbol": ..., "exchange": ...}.
    Built directly: a model instance and DRF's per-field walk for each row were most of a 50-row
    page's CPU, which 200 requests/s on 2 cores cannot afford (bench/bench_api.py).
    tests/signals_app/test_api.py checks it against the generic representation."""
    # DRF's formatting, the current timezone looked up once instead of twice per row.
    instant = serializers.DateTimeField(default_timezone=timezone.get_current_timezone())
    return [
        {
            "id": row["id"],
            **markets[row["market_id"]],
            "candle_time": instant.to_representation(row["candle_time"]),
            "model_version": {
                "id": row["model_version_id"],
                "name": row["model_version__name"],
                "fingerprint": row["model_version__fingerprint"],
            },
            "close": row["close"],
            "returns": orjson.loads(row["returns_text"]),
            "probabilities": orjson.loads(row["probabilities_text"]),
            "risk": orjson.loads(row["risk_text"]),
            "direction": row["direction"],
            "confidence": row["confidence"],
            "strength": row["strength"],
            "latency_ms": row["latency_ms"],
            "created_at": instant.to_representation(row["created_at"]),
        }
        for row in rows
    ]


class SignalSerializer(serializers.ModelSerializer):
    symbol = serializers.CharField(source="market.symbol")
    exchange = serializers.CharField(source="market.exchange")

    class Meta:
        model = Signal
        fields = [
            "id", "symbol", "exchange", "candle_time", "model_version", "prediction", "type",
            "status", "rejection_reason", "confidence", "strength", "entry_price", "stop_loss",
            "take_profit", "expires_at", "orders_attempted", "orders_created", "created_at",
        ]  # fmt: skip


class GeneratedSignalSerializer(serializers.Serializer):
    signal = SignalSerializer(allow_null=True)
    prediction = PredictionSerializer()
    cached = serializers.BooleanField(help_text="the stored prediction of that candle was reused")
    warnings = serializers.ListField(
        child=serializers.CharField(), help_text="sync or model problems that did not stop it"
    )


class GenerateSignalRequestSerializer(serializers.Serializer):
    """Checks that the market exists; each error message names the value it rejects."""

    symbol = serializers.CharField(max_length=32)
    exchange = serializers.CharField(max_length=32)

    def validate(self, attrs: dict) -> dict:
        exchanges = sorted(set(Market.objects.values_list("exchange", flat=True)))
        if attrs["exchange"] not in exchanges:
            message = f"unknown exchange '{attrs['exchange']}' (known: {_listed(exchanges)})"
            raise serializers.ValidationError({"exchange": message})
        market = Market.objects.filter(exchange=attrs["exchange"], symbol=attrs["symbol"]).first()
        if market is None:
            symbols = Market.objects.filter(exchange=attrs["exchange"]).values_list(
                "symbol", flat=True
            )
            raise serializers.ValidationError(
                {
                    "symbol": f"unknown symbol '{attrs['symbol']}' on {attrs['exchange']} "
                    f"(known: {_listed(symbols)})"
                }
            )
        attrs["market"] = market
        return attrs


def _listed(values) -> str:
    return ", ".join(values) or "none: add markets in the admin"


class TaskStatusSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    state = serializers.CharField(help_text="PENDING, STARTED, SUCCESS or FAILURE")
    url = serializers.CharField(help_text="poll this until state is SUCCESS or FAILURE")
    detail = serializers.CharField(required=False)


class QueueSerializer(serializers.Serializer):
    name = serializers.CharField()
    workers = serializers.ListField(child=serializers.CharField())


class ModelStatusSerializer(serializers.Serializer):
    loaded = serializers.BooleanField(help_text="a gpu worker has the model in memory")
    checkpoint = serializers.CharField()
    checkpoint_exists = serializers.BooleanField()
    version = serializers.CharField(allow_null=True)
    fingerprint = serializers.CharField(allow_null=True)
    metrics = serializers.DictField(allow_null=True)
    device = serializers.CharField(help_text="where the gpu worker runs it, else as configured")
    detail = serializers.CharField()


class LastCycleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.FloatField(allow_null=True)
    status = serializers.CharField()
    reason = serializers.CharField()
    counts = serializers.DictField(child=serializers.IntegerField())
    stage_seconds = serializers.DictField()
    errors = serializers.IntegerField(help_text="markets that failed in this cycle")


class ThresholdsSerializer(serializers.Serializer):
    min_confidence = serializers.FloatField()
    min_signal_strength = serializers.FloatField()
    risk_tolerance = serializers.CharField()
    batch_size = serializers.IntegerField()
    interval_seconds = serializers.IntegerField()


class MLStatusSerializer(serializers.Serializer):
    ml_enabled = serializers.BooleanField()
    model = ModelStatusSerializer()
    queues = QueueSerializer(many=True)
    workers_checked_seconds_ago = serializers.FloatField()
    workers_error = serializers.CharField()
    last_cycle = LastCycleSerializer(allow_null=True)
    cache_hit_rate = serializers.FloatField(
        allow_null=True,
        help_text="markets served from the prediction cache / markets served, last hour",
    )
    thresholds = ThresholdsSerializer()


class MetricsQuerySerializer(serializers.Serializer):
    window = serializers.RegexField(
        r"^[1-9]\d*[mhd]$", default="24h", help_text="how far back: 15m, 1h, 24h, 7d (up to 90d)",
        error_messages={"invalid": "window must look like 15m, 1h, 24h or 7d"},
    )  # fmt: skip

    def validate_window(self, value: str) -> timedelta:
        minutes = int(value[:-1]) * {"m": 1, "h": 60, "d": 24 * 60}[value[-1]]
        # Compared as a number first: a huge window would overflow timedelta.
        if minutes > MAX_METRICS_WINDOW / timedelta(minutes=1):
            raise serializers.ValidationError(f"window {value} is longer than 90d")
        return timedelta(minutes=minutes)


class ShareSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    share = serializers.FloatField(allow_null=True)


class DistributionSerializer(serializers.Serializer):
    LONG = ShareSerializer()
    SHORT = ShareSerializer()
    NEUTRAL = ShareSerializer()


class MetricsSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    signals_generated = serializers.IntegerField()
    distribution = DistributionSerializer()
    signals_accepted = serializers.IntegerField(help_text="passed the thresholds, sent to trading")
    signals_executed = serializers.IntegerField(help_text="at least one order was created")
    avg_generation_ms = serializers.FloatField(allow_null=True)
    orders_attempted = serializers.IntegerField()
    orders_created = serializers.IntegerField()
    order_success_rate = serializers.FloatField(
        allow_null=True, help_text="orders created / attempted; null when none was attempted"
    )
    cycles = serializers.IntegerField()
    cycles_failed = serializers.IntegerField()
