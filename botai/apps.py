from django.apps import AppConfig


class BotaiConfig(AppConfig):
    """The project package is an app only to carry its management commands (status, bootstrap)."""

    name = "botai"
    verbose_name = "botai"
