"""Routes under /api/v1/ for signals_app."""

urlpatterns: list = []
