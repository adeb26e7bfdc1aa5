"""Who may do what through the API (shared by signals_app and trading_app views)."""

from rest_framework.permissions import SAFE_METHODS, BasePermission


class IsStaffOrReadOnly(BasePermission):
    """Reads as the project default allows them; every write needs a staff user."""

    message = "writes need a staff user: log in to the admin or send a staff user's token"

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)
