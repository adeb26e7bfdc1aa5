"""The trading API: traders (staff write, validated like the admin), orders and positions (read)."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from signals_app.permissions import IsStaffOrReadOnly
from trading_app.filters import OrderFilter, PositionFilter, TraderFilter
from trading_app.models import Order, Position, Trader
from trading_app.serializers import OrderSerializer, PositionSerializer, TraderSerializer
from trading_app.services.positions import positions_close

CLOSE_RESULT = inline_serializer(
    "CloseResult",
    {
        "closed": serializers.IntegerField(help_text="close orders placed (paper: filled)"),
        "withdrawn": serializers.IntegerField(help_text="unfilled entries canceled"),
        "problems": serializers.ListField(
            child=serializers.CharField(), help_text="positions left active, and why"
        ),
    },
)


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

    @extend_schema(request=None, responses=CLOSE_RESULT, summary="Close all positions at market")
    @action(detail=True, methods=["post"], url_path="close-positions")
    def close_positions(self, request: Request, pk: str | None = None) -> Response:
        """Close every pending or open position of the trader at market (staff only). A repeat
        finds nothing left to close; the trader stays enabled (disable it to stay flat)."""
        trader = self.get_object()
        result = positions_close(trader=trader, reason=f"closed through the API by {request.user}")
        return Response(result.as_dict())


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
