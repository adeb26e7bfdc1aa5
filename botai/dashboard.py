"""The operators' dashboard (staff only, linked from the admin index): the last cycle and its
stages, signals per type over 24 h, each trader's equity curve and open positions, the order
success rate. Charts are server-rendered SVG (botai.charts): no CDN, no JavaScript library."""

from datetime import datetime, timedelta

from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.shortcuts import render
from django.utils import timezone

from botai import charts
from signals_app.models import CycleRun, Signal
from signals_app.selectors import signal_metrics
from trading_app.models import EquitySnapshot, Order, Position, Trader

WINDOW = timedelta(hours=24)
EQUITY_POINTS = 240  # an SVG polyline of a day of minutes, thinned to what 480 px can show
SIGNAL_COLOURS = {"LONG": "#2e7d32", "SHORT": "#c62828", "NEUTRAL": "#9e9e9e"}


def _cycle() -> dict | None:
    cycle = CycleRun.objects.order_by("-started_at").first()
    if cycle is None:
        return None
    stages = sorted(cycle.stage_seconds.items(), key=lambda item: -item[1])
    return {
        "run": cycle,
        "seconds": (cycle.finished_at - cycle.started_at).total_seconds()
        if cycle.finished_at
        else None,
        "stages": charts.horizontal_bars(label="last cycle stages", bars=stages, unit="s"),
    }


def _signals_per_hour(*, now: datetime) -> str:
    start = (now - WINDOW).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    rows = (
        Signal.objects.filter(created_at__gte=start)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour", "type")
        .annotate(count=Count("pk"))
    )
    counts: dict[datetime, dict[str, int]] = {}
    for hour, type_, count in rows:
        counts.setdefault(hour, {})[type_] = count
    hours = [start + timedelta(hours=i) for i in range(24)]
    columns = [(f"{hour:%H}h", counts.get(hour, {})) for hour in hours]
    return charts.stacked_columns(
        label="signals per hour by type", columns=columns, series=SIGNAL_COLOURS
    )


def _thin(points: list, limit: int) -> list:
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit - 1)] + [points[-1]]


def _traders(*, now: datetime) -> list[dict]:
    positions: dict[int, list[Position]] = {}
    for position in Position.objects.filter(status__in=Position.ACTIVE).select_related("market"):
        positions.setdefault(position.trader_id, []).append(position)
    traders = []
    for trader in Trader.objects.order_by("name"):
        snapshots = list(
            EquitySnapshot.objects.filter(trader=trader, time__gte=now - WINDOW)
            .order_by("time")
            .values_list("time", "equity", "drawdown_percentage")
        )
        points = [(time, float(equity)) for time, equity, _ in snapshots]
        traders.append(
            {
                "trader": trader,
                "equity": snapshots[-1][1] if snapshots else None,
                "drawdown": snapshots[-1][2] if snapshots else None,
                "chart": charts.line(
                    label=f"equity {trader.name}", points=_thin(points, EQUITY_POINTS), unit=""
                ),
                "positions": positions.get(trader.pk, []),
            }
        )
    return traders


def _orders(*, now: datetime) -> dict:
    metrics = signal_metrics(since=now - WINDOW, until=now)
    statuses = dict(
        Order.objects.filter(created_at__gte=now - WINDOW)
        .values_list("status")
        .annotate(count=Count("pk"))
        .order_by("status")
    )
    return {"metrics": metrics, "statuses": statuses}


@staff_member_required
def dashboard(request):
    now = timezone.now()
    context = {
        "title": "botai dashboard",
        "now": now,
        "cycle": _cycle(),
        "signals_chart": _signals_per_hour(now=now),
        "traders": _traders(now=now),
        "orders": _orders(now=now),
    }
    return render(request, "dashboard.html", context)
