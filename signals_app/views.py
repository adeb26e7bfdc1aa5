"""The ML API: status, on-demand signals, predictions, metrics, signals (parse, call, shape)."""

import hashlib
import re

from celery import current_app
from celery.exceptions import TimeoutError as TaskTimeout
from celery.result import AsyncResult
from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status, viewsets
from rest_framework.exceptions import APIException, NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from signals_app.filters import NamedFiltersBackend, PredictionFilter, SignalFilter
from signals_app.ml_status import ml_status
from signals_app.models import Market, MLConfig, Prediction, Signal
from signals_app.permissions import IsStaffOrReadOnly
from signals_app.predictor import checkpoint_path
from signals_app.selectors import signal_metrics
from signals_app.serializers import (
    GeneratedSignalSerializer,
    GenerateSignalRequestSerializer,
    MetricsQuerySerializer,
    MetricsSerializer,
    MLStatusSerializer,
    PredictionSerializer,
    SignalSerializer,
    TaskStatusSerializer,
    prediction_page,
    prediction_rows,
)

GENERATE_SIGNAL_TASK = "signals_app.tasks.generate_signal"
# How long POST generate-signal holds the request before answering 202 with a task URL.
GENERATE_SIGNAL_WAIT = 5.0
_TASK_KEY = "ml-task:{}"
SYMBOL = re.compile(r"[A-Za-z0-9._-]{1,32}")
STATUS_CACHE_KEY = "ml-status"
STATUS_FRESH_FOR = 2
PAGE_FRESH_FOR = 2

MESSAGE = OpenApiResponse(response=OpenApiTypes.OBJECT, description='{"detail": "what was wrong"}')


class NewestFirst(CursorPagination):
    """Cursor pages: stable while new rows arrive every minute, and no COUNT(*) per page."""

    ordering = "-candle_time"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class NewestCreatedFirst(NewestFirst):
    ordering = "-created_at"


class ModelUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "model_unavailable"


class MLStatusView(APIView):
    permission_classes = [IsStaffOrReadOnly]

    @extend_schema(responses=MLStatusSerializer, summary="Model, queues, last cycle, thresholds")
    def get(self, request):
        # Dashboards poll this; what it reports changes once a cycle, so one answer serves every
        # caller for STATUS_FRESH_FOR seconds (4 queries saved per request).
        data = cache.get(STATUS_CACHE_KEY)
        if data is None:
            data = MLStatusSerializer(ml_status()).data
            cache.set(STATUS_CACHE_KEY, data, timeout=STATUS_FRESH_FOR)
        return Response(data)


class MetricsView(APIView):
    permission_classes = [IsStaffOrReadOnly]

    @extend_schema(
        parameters=[MetricsQuerySerializer],
        responses={200: MetricsSerializer, 400: MESSAGE},
        summary="Signals generated, type distribution, generation time, order success rate",
    )
    def get(self, request):
        query = MetricsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        until = timezone.now()
        metrics = signal_metrics(since=until - query.validated_data["window"], until=until)
        return Response(MetricsSerializer(metrics).data)


class GenerateSignalView(APIView):
    """Predict one market now on the gpu queue and return its signal."""

    permission_classes = [IsStaffOrReadOnly]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "generate_signal"

    @extend_schema(
        request=GenerateSignalRequestSerializer,
        responses={
            200: GeneratedSignalSerializer,
            202: TaskStatusSerializer,
            400: OpenApiResponse(description="unknown symbol or exchange, named in the message"),
            403: MESSAGE,
            429: MESSAGE,
            503: MESSAGE,
        },
        summary="Generate a signal for one market now",
    )
    def post(self, request):
        serializer = GenerateSignalRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        market: Market = serializer.validated_data["market"]
        config = MLConfig.load()
        path = checkpoint_path(config)
        if not path.exists():
            raise ModelUnavailable(
                f"no model can be loaded: no checkpoint at {path} (run manage.py ensure_model, "
                "which make up does, or set the model path in the ML configuration)"
            )
        result = current_app.send_task(
            GENERATE_SIGNAL_TASK, kwargs={"symbol": market.symbol, "exchange": market.exchange}
        )
        cache.set(_TASK_KEY.format(result.id), market.pk, timeout=settings.CELERY_RESULT_EXPIRES)
        try:
            result.get(timeout=GENERATE_SIGNAL_WAIT, propagate=False, disable_sync_subtasks=False)
        except TaskTimeout:
            pass  # answered below with 202 and the task URL
        body, code = task_answer(request, result)
        return Response(body, status=code)


def task_answer(request, result: AsyncResult) -> tuple[dict, int]:
    """The response for a generate-signal task: its signal when done, else where to poll."""
    url = request.build_absolute_uri(reverse("ml-task", args=[result.id]))
    if not result.ready():
        detail = "still running on the gpu queue: poll the url"
        return {"task_id": result.id, "state": result.state, "url": url, "detail": detail}, 202
    if result.failed():
        raise ModelUnavailable(f"signal generation failed: {result.result!r}")
    outcome = result.result
    if outcome.get("error"):
        raise ModelUnavailable(outcome["error"])
    prediction = Prediction.objects.select_related("market", "model_version").get(
        pk=outcome["prediction"]["id"]
    )
    signal = Signal.objects.select_related("market").filter(prediction=prediction).first()
    body = {
        "signal": SignalSerializer(signal).data if signal else None,
        "prediction": PredictionSerializer(prediction).data,
        "cached": outcome["cached"],
        "warnings": outcome["errors"],
    }
    return body, 200


class TaskView(APIView):
    permission_classes = [IsStaffOrReadOnly]

    @extend_schema(
        responses={200: GeneratedSignalSerializer, 202: TaskStatusSerializer, 404: MESSAGE},
        summary="Poll a generate-signal task",
    )
    def get(self, request, task_id: str):
        if cache.get(_TASK_KEY.format(task_id)) is None:
            raise NotFound(f"no generate-signal task {task_id} (unknown or older than an hour)")
        body, code = task_answer(request, AsyncResult(task_id, app=current_app))
        return Response(body, status=code)


@extend_schema(
    parameters=[OpenApiParameter("symbol", str, OpenApiParameter.PATH, description="BTCUSDT")],
    responses={200: PredictionSerializer(many=True), 404: MESSAGE},
    summary="A market's predictions, newest first",
)
class PredictionListView(generics.ListAPIView):
    permission_classes = [IsStaffOrReadOnly]
    serializer_class = PredictionSerializer
    filter_backends = [NamedFiltersBackend]
    filterset_class = PredictionFilter
    pagination_class = NewestFirst

    queryset = Prediction.objects.none()  # the schema's model; requests get get_queryset()

    def get_queryset(self):
        symbol = self.kwargs["symbol"]
        if not SYMBOL.fullmatch(symbol):  # e.g. a NUL byte, which PostgreSQL refuses outright
            raise NotFound(f"unknown symbol {symbol!r}: symbols are letters, digits and ._-")
        # Markets first: with `market_id IN (...)` PostgreSQL walks the (market, candle_time)
        # index backwards and stops after one page; a join on the symbol sorts every row.
        markets = Market.objects.filter(symbol=symbol).values("pk", "symbol", "exchange")
        self.markets = {market.pop("pk"): market for market in markets}
        if not self.markets:
            raise NotFound(f"unknown symbol '{symbol}'")
        return Prediction.objects.filter(market_id__in=self.markets)

    def list(self, request, *args, **kwargs):
        renderer = request.accepted_renderer
        if renderer.format != "json":  # the browsable page, for people: built every time
            return Response(self._page(request))
        # A market gets a new prediction once a candle: a page's JSON is served from the cache
        # for PAGE_FRESH_FOR seconds (keyed by its full URL), then built again.
        key = page_cache_key(request.build_absolute_uri())
        body = cache.get(key)
        if body is None:
            body = renderer.render(self._page(request), renderer.media_type)
            cache.set(key, body, timeout=PAGE_FRESH_FOR)
        return HttpResponse(body, content_type=renderer.media_type)

    def _page(self, request) -> dict:
        rows = self.paginate_queryset(prediction_rows(self.filter_queryset(self.get_queryset())))
        return self.get_paginated_response(prediction_page(rows, self.markets)).data


def page_cache_key(url: str) -> str:
    return "ml-predictions:" + hashlib.sha256(url.encode()).hexdigest()


class SignalViewSet(viewsets.ReadOnlyModelViewSet):
    """Signals, newest first; filter by symbol, exchange, type, status, model version, time."""

    permission_classes = [IsStaffOrReadOnly]
    serializer_class = SignalSerializer
    filterset_class = SignalFilter
    pagination_class = NewestCreatedFirst
    queryset = Signal.objects.select_related("market")
