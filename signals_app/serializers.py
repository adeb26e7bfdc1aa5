"""API shapes of signals_app: predictions, signals, the ML status and metrics, generate-signal."""

from rest_framework import serializers

from signals_app.models import Market, ModelVersion, Prediction, Signal


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


class SignalWithPredictionSerializer(SignalSerializer):
    prediction = PredictionSerializer()


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
    signal = SignalWithPredictionSerializer(required=False)


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
