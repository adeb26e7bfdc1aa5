"""/api/v1/backtests: backtest runs and their reports, read-only (runs are started with
`manage.py backtest`)."""

from rest_framework import serializers, viewsets

from signals_app.permissions import IsStaffOrReadOnly
from trading_app.models import BacktestRun
from trading_app.views import NewestCreatedFirst


class BacktestRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = BacktestRun
        fields = [
            "id", "trader", "trader_name", "start", "end", "data_source", "model_name",
            "model_fingerprint", "settings", "status", "error", "steps", "service_steps",
            "orders", "metrics", "report_path", "seconds", "created_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class BacktestRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Backtests, newest first; `metrics` holds the strategy's figures next to buy-and-hold and
    the EMA(9/21)+RSI(14) rule over the same candles."""

    permission_classes = [IsStaffOrReadOnly]
    serializer_class = BacktestRunSerializer
    pagination_class = NewestCreatedFirst
    queryset = BacktestRun.objects.all()
