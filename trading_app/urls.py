"""Routes under /api/v1/ for trading_app."""

urlpatterns: list = []
