"""`manage.py bootstrap`: everything `make up` does before starting processes, safe to run again.

Migrates, loads the fixtures on a fresh database only (a later run must not overwrite what a user
edited in the admin), creates the local admin account, collects static files and makes sure a
model exists.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder


class Command(BaseCommand):
    help = "Prepare a fresh or existing install: migrate, fixtures, admin account, model."

    def handle(self, *args, **options):
        fresh = not MigrationRecorder(connection).has_table()
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database migrated")
        if fresh:
            fixtures = sorted(Path(settings.BASE_DIR, "fixtures").glob("*.json"))
            if fixtures:
                call_command("loaddata", *map(str, fixtures), verbosity=0)
                self.stdout.write(f"fixtures loaded: {', '.join(f.name for f in fixtures)}")
        self._admin()
        call_command("collectstatic", interactive=False, verbosity=0)
        self._model()

    def _admin(self):
        user_model = get_user_model()
        username = os.environ.get("BOTAI_ADMIN_USER", "admin")
        if user_model.objects.filter(username=username).exists():
            self.stdout.write(f"admin account '{username}' exists")
            return
        password = os.environ.get("BOTAI_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email="", password=password)
        shown = "(from BOTAI_ADMIN_PASSWORD)" if "BOTAI_ADMIN_PASSWORD" in os.environ else password
        self.stdout.write(
            self.style.WARNING(
                f"admin account created: user '{username}' password {shown}\n"
                "  shown once; change it with: .venv/bin/python manage.py changepassword admin"
            )
        )

    def _model(self):
        # ensure_model checks the path the workers load (MLConfig.model_path, else MODEL_PATH).
        call_command("ensure_model")
