"""Routes under /api/v1/ for trading_app."""

from rest_framework.routers import SimpleRouter

from trading_app import backtest_api, views

router = SimpleRouter(trailing_slash=False)
router.register("traders", views.TraderViewSet, basename="trader")
router.register("orders", views.OrderViewSet, basename="order")
router.register("positions", views.PositionViewSet, basename="position")
router.register("backtests", backtest_api.BacktestRunViewSet, basename="backtest")

urlpatterns = router.urls
