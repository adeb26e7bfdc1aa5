"""The /api/v1/ tree: each app contributes its routes."""

from django.urls import include, path

urlpatterns = [
    path("", include("signals_app.urls")),
    path("", include("trading_app.urls")),
]
