"""Admin for signals_app: markets and the ML configuration are edited here; the rest is read."""

from django.contrib import admin

from signals_app.models import Candle, CycleRun, Market, MLConfig, ModelVersion, Prediction, Signal


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
    list_display = ["symbol", "exchange", "ccxt_symbol", "timeframe", "enabled"]
    list_filter = ["exchange", "enabled", "timeframe"]
    list_editable = ["enabled"]
    search_fields = ["symbol", "ccxt_symbol"]


@admin.register(MLConfig)
class MLConfigAdmin(admin.ModelAdmin):
    list_display = [
        "__str__", "enabled", "batch_size", "device", "min_confidence", "min_signal_strength",
        "risk_tolerance", "updated_at",
    ]  # fmt: skip

    def has_add_permission(self, request):
        # One row only: it exists from the fixture or from MLConfig.load().
        return not MLConfig.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "fingerprint", "feature_set", "active", "created_at", "activated_at"]
    list_filter = ["active"]
    readonly_fields = ["fingerprint", "metrics", "created_at", "activated_at"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the cycle writes: browsable, never edited by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdmin):
    list_display = ["market", "open_time", "open", "high", "low", "close", "volume"]
    list_filter = ["market"]
    date_hierarchy = "open_time"
    list_select_related = ["market"]


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = [
        "market", "candle_time", "direction", "confidence", "strength", "latency_ms",
        "model_version",
    ]  # fmt: skip
    list_filter = ["direction", "market", "model_version"]
    date_hierarchy = "candle_time"
    list_select_related = ["market", "model_version"]


@admin.register(Signal)
class SignalAdmin(ReadOnlyAdmin):
    list_display = [
        "market", "candle_time", "type", "status", "confidence", "strength", "entry_price",
        "stop_loss", "take_profit", "expires_at", "orders_created", "orders_attempted",
    ]  # fmt: skip
    list_filter = ["type", "status", "market"]
    date_hierarchy = "created_at"
    list_select_related = ["market"]


@admin.register(CycleRun)
class CycleRunAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at", "finished_at", "status", "markets", "markets_new", "predictions",
        "cache_hits", "signals_long", "signals_short", "signals_neutral", "signals_accepted",
    ]  # fmt: skip
    list_filter = ["status"]
    readonly_fields = ["stage_seconds", "errors", "reason"]
