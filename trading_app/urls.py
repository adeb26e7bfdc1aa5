"""Routes under /api/v1/ for trading_app."""

from rest_framework.routers import SimpleRouter

from trading_app import views

router = SimpleRouter(trailing_slash=False)
router.register("traders", views.TraderViewSet, basename="trader")
router.register("orders", views.OrderViewSet, basename="order")
router.register("positions", views.PositionViewSet, basename="position")

urlpatterns = router.urls
