"""Query-string filters of the signals_app API (django-filter)."""

import django_filters

from signals_app.models import ModelVersion, Prediction, Signal


class PredictionFilter(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(
        field_name="candle_time", lookup_expr="gte", label="candle time from (ISO 8601, inclusive)"
    )
    until = django_filters.IsoDateTimeFilter(
        field_name="candle_time", lookup_expr="lte", label="candle time up to (ISO 8601, inclusive)"
    )
    model_version = django_filters.ModelChoiceFilter(
        queryset=ModelVersion.objects.all(), label="model version id"
    )
    exchange = django_filters.CharFilter(
        field_name="market__exchange", label="exchange, when the symbol trades on several"
    )

    class Meta:
        model = Prediction
        fields = ["since", "until", "model_version", "exchange"]


class SignalFilter(django_filters.FilterSet):
    symbol = django_filters.CharFilter(field_name="market__symbol")
    exchange = django_filters.CharFilter(field_name="market__exchange")
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lte")
    min_confidence = django_filters.NumberFilter(field_name="confidence", lookup_expr="gte")

    class Meta:
        model = Signal
        fields = ["symbol", "exchange", "type", "status", "model_version", "since", "until"]
