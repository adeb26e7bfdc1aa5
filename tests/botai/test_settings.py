"""Settings load in both profiles: the local defaults and production values from the environment."""

import os
import subprocess
import sys

from tests.conftest import ROOT

PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "x7!k2P#q9LmZ4tR8vW1yB6nC3dF5gH0jK-aS_eU+prod-only-8Jd2Lq0Zt5Wm",
    "DJANGO_ALLOWED_HOSTS": "bot.example.com",
    "DATABASE_URL": "postgres://bot:pw@db.example.com:5432/botai",
    "CELERY_BROKER_URL": "redis://redis.example.com:6379/0",
    "REDIS_URL": "redis://redis.example.com:6379/1",
}
SERVICE_VARS = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "EMBEDDED_REDIS_PORT"}
CLEAN = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}


def _settings(env: dict, expression: str) -> str:
    code = (
        f"import django; django.setup(); from django.conf import settings as s; print({expression})"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "DJANGO_SETTINGS_MODULE": "botai.settings"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_local_defaults_need_nothing_installed():
    out = _settings(
        CLEAN,
        "s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.ML_DEVICE, s.DEBUG, "
        "'journal_mode=WAL' in s.DATABASES['default']['OPTIONS']['init_command']",
    )
    assert out == "django.db.backends.sqlite3 redis://127.0.0.1:6390/0 auto True True"


def test_production_values_come_from_the_environment():
    out = _settings(
        {**CLEAN, **PRODUCTION},
        "s.DATABASES['default']['ENGINE'], s.DATABASES['default']['CONN_MAX_AGE'], "
        "s.CELERY_BROKER_URL, s.DEBUG, s.SESSION_COOKIE_SECURE",
    )
    assert out == ("django.db.backends.postgresql 600 redis://redis.example.com:6379/0 False True")


def test_check_deploy_is_silent_with_production_values():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env={**CLEAN, **PRODUCTION},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr
