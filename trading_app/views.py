"""The trading API: traders (staff write, validated like the admin), orders and positions (read)."""

from rest_framework import status, viewsets
from rest_framework.exceptions import APIException
from rest_framework.pagination import CursorPagination

from signals_app.permissions import IsStaffOrReadOnly
from trading_app.filters import OrderFilter, PositionFilter, TraderFilter
from trading_app.models import Order, Position, Trader
from trading_app.serializers import OrderSerializer, PositionSerializer, TraderSerializer


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class NewestCreatedFirst(CursorPagination):
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class NewestOpenedFirst(NewestCreatedFirst):
    ordering = "-opened_at"


class TraderViewSet(viewsets.ModelViewSet):
    """Traders and their risk settings. Deleting one that has traded is refused: disable it."""

    permission_classes = [IsStaffOrReadOnly]
    serializer_class = TraderSerializer
    filterset_class = TraderFilter
    queryset = Trader.objects.select_related("account").prefetch_related("markets")

    def perform_destroy(self, instance: Trader) -> None:
        if instance.orders.exists() or instance.positions.exists():
            raise Conflict(
                f"trader {instance.name} has orders or positions: disable it instead "
                "(deleting it would delete its trading history)"
            )
        instance.delete()


class OrderViewSet(viewsets.ReadOnlyModelViewSet):
    """Orders, newest first. `?signal=<id>` gives a signal's orders; each names its position."""

    permission_classes = [IsStaffOrReadOnly]
    serializer_class = OrderSerializer
    filterset_class = OrderFilter
    pagination_class = NewestCreatedFirst
    queryset = Order.objects.select_related("trader", "market")


class PositionViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [IsStaffOrReadOnly]
    serializer_class = PositionSerializer
    filterset_class = PositionFilter
    pagination_class = NewestOpenedFirst
    queryset = Position.objects.select_related("trader", "market")
