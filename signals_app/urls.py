"""Routes under /api/v1/ for signals_app."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from signals_app import views

router = SimpleRouter(trailing_slash=False)
router.register("signals", views.SignalViewSet, basename="signal")

urlpatterns = [
    path("ml/status", views.MLStatusView.as_view(), name="ml-status"),
    path("ml/metrics", views.MetricsView.as_view(), name="ml-metrics"),
    path("ml/generate-signal", views.GenerateSignalView.as_view(), name="ml-generate-signal"),
    path("ml/tasks/<str:task_id>", views.TaskView.as_view(), name="ml-task"),
    path("ml/predictions/<str:symbol>", views.PredictionListView.as_view(), name="ml-predictions"),
    *router.urls,
]
