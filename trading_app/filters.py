"""Query-string filters of the trading_app API (django-filter)."""

import django_filters

from signals_app.filters import InstantFilter
from trading_app.models import Order, Position, Trader


class OrderFilter(django_filters.FilterSet):
    trader_name = django_filters.CharFilter(field_name="trader__name")
    symbol = django_filters.CharFilter(field_name="market__symbol")
    since = InstantFilter(field_name="created_at", lookup_expr="gte")
    until = InstantFilter(field_name="created_at", lookup_expr="lte")

    class Meta:
        model = Order
        fields = [
            "trader", "trader_name", "symbol", "signal", "position", "purpose", "side", "status",
            "since", "until",
        ]  # fmt: skip


class PositionFilter(django_filters.FilterSet):
    trader_name = django_filters.CharFilter(field_name="trader__name")
    symbol = django_filters.CharFilter(field_name="market__symbol")
    since = InstantFilter(field_name="opened_at", lookup_expr="gte")
    until = InstantFilter(field_name="opened_at", lookup_expr="lte")

    class Meta:
        model = Position
        fields = [
            "trader", "trader_name", "symbol", "signal", "side", "status", "close_reason",
            "since", "until",
        ]  # fmt: skip


class TraderFilter(django_filters.FilterSet):
    symbol = django_filters.CharFilter(field_name="markets__symbol", distinct=True)

    class Meta:
        model = Trader
        fields = ["enabled", "is_halted", "account", "symbol"]
