"""Admin for signals_app: markets and the ML configuration are edited here; the rest is read."""

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from signals_app.models import Candle, CycleRun, Market, MLConfig, ModelVersion, Prediction, Signal
from signals_app.services.config import mlconfig_save


def admin_link(url_name: str, label: str, *args, query: str = "") -> str:
    """A link to another admin page by URL name (other apps' pages too, without importing them)."""
    try:
        url = reverse(url_name, args=args)
    except NoReverseMatch:
        return label
    return format_html('<a href="{}{}">{}</a>', url, query, label)


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

    def save_model(self, request, obj, form, change):
        mlconfig_save(config=obj)  # interval_seconds also reschedules the beat entry

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        # A single row: the list is that row's form.
        return redirect("admin:signals_app_mlconfig_change", MLConfig.load().pk)


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
    search_fields = ["market__symbol"]
    date_hierarchy = "candle_time"
    list_select_related = ["market", "model_version"]
    readonly_fields = ["signal_link"]

    @admin.display(description="signal")
    def signal_link(self, prediction: Prediction) -> str:
        signal = Signal.objects.filter(prediction=prediction).only("pk", "type").first()
        if signal is None:
            return "-"
        return admin_link("admin:signals_app_signal_change", signal.type, signal.pk)


@admin.register(Signal)
class SignalAdmin(ReadOnlyAdmin):
    list_display = [
        "market", "candle_time", "type", "status", "confidence", "strength", "entry_price",
        "stop_loss", "take_profit", "expires_at", "orders_link",
    ]  # fmt: skip
    list_filter = ["type", "status", "market"]
    search_fields = ["market__symbol", "rejection_reason"]
    date_hierarchy = "created_at"
    list_select_related = ["market"]
    readonly_fields = ["prediction_link", "orders_link"]

    @admin.display(description="prediction")
    def prediction_link(self, signal: Signal) -> str:
        return admin_link("admin:signals_app_prediction_change", "prediction", signal.prediction_id)

    @admin.display(description="orders (created / attempted)")
    def orders_link(self, signal: Signal) -> str:
        # trading_app's order list, filtered by this signal: linked by URL name, not imported.
        label = f"{signal.orders_created} / {signal.orders_attempted}"
        query = f"?signal__id__exact={signal.pk}"
        return admin_link("admin:trading_app_order_changelist", label, query=query)


@admin.register(CycleRun)
class CycleRunAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at", "finished_at", "status", "markets", "markets_new", "predictions",
        "cache_hits", "signals_long", "signals_short", "signals_neutral", "signals_accepted",
    ]  # fmt: skip
    list_filter = ["status"]
    readonly_fields = ["stage_seconds", "errors", "reason"]
