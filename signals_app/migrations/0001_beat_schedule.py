"""Create the per-minute beat entries declared in botai.celery.

Entries are created only when absent, so a user's edits in the admin are never overwritten by a
later migrate.
"""

import json

from django.db import migrations

from botai.celery import BEAT_ENTRIES, PER_MINUTE_EXPIRES


def create_entries(apps, schema_editor):
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, entry in BEAT_ENTRIES.items():
        interval, _ = interval_model.objects.get_or_create(
            every=entry["every_seconds"], period="seconds"
        )
        task_model.objects.get_or_create(
            name=name,
            defaults={
                "task": entry["task"],
                "interval": interval,
                "expire_seconds": PER_MINUTE_EXPIRES,
                "kwargs": json.dumps({}),
                "enabled": True,
            },
        )


def remove_entries(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name__in=BEAT_ENTRIES
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(create_entries, remove_entries)]
