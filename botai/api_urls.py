"""The /api/v1/ tree: each app contributes its routes."""

from django.urls import include, path, re_path
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@permission_classes([AllowAny])
def no_such_endpoint(request, path: str):
    # API clients get JSON with a message, not Django's HTML 404 page.
    raise NotFound(f"no API endpoint at /api/v1/{path} (see /api/docs/)")


urlpatterns = [
    path("", include("signals_app.urls")),
    path("", include("trading_app.urls")),
    re_path(r"^(?P<path>.*)$", no_such_endpoint),
]
