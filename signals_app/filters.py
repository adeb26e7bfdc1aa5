"""Query-string filters of the signals_app API (django-filter)."""

from datetime import UTC

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend

from signals_app.models import ModelVersion, Prediction, Signal


class InstantField(IsoDateTimeField):
    """An ISO 8601 instant, converted to UTC while validating: PostgreSQL refuses offsets beyond
    +-15:59 that Python accepts (e.g. -16:25), and the conversion itself may leave datetime's
    range (year 1 at +05:00); both are a 400 here instead of a failed query."""

    def to_python(self, value):
        instant = super().to_python(value)
        if instant is None:
            return None
        try:
            return instant.astimezone(UTC)
        except OverflowError:
            raise ValidationError(f"{value} is out of range", code="invalid") from None


class InstantFilter(django_filters.IsoDateTimeFilter):
    field_class = InstantField


class NamedFiltersBackend(DjangoFilterBackend):
    """DjangoFilterBackend that leaves the queryset alone when the request names none of the
    view's filters: building the FilterSet and its form (deep copies of every filter and form
    field) took 0.16 ms of an unfiltered predictions page's 2.4 ms of CPU, to filter nothing."""

    def filter_queryset(self, request, queryset, view):
        filters = self.get_filterset_class(view, queryset).base_filters
        if request.query_params.keys().isdisjoint(filters):
            return queryset
        return super().filter_queryset(request, queryset, view)


class PredictionFilter(django_filters.FilterSet):
    since = InstantFilter(
        field_name="candle_time", lookup_expr="gte", label="candle time from (ISO 8601, inclusive)"
    )
    until = InstantFilter(
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
    since = InstantFilter(field_name="created_at", lookup_expr="gte")
    until = InstantFilter(field_name="created_at", lookup_expr="lte")
    min_confidence = django_filters.NumberFilter(field_name="confidence", lookup_expr="gte")

    class Meta:
        model = Signal
        fields = ["symbol", "exchange", "type", "status", "model_version", "since", "until"]
