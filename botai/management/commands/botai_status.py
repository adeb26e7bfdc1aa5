"""`manage.py botai_status`: what is up, what is down; exit 1 when a required part is down."""

import json

from django.core.management.base import BaseCommand, CommandError

from botai.status import system_status


class Command(BaseCommand):
    help = "Report database, broker, queues and their workers, beat, model and the last cycle."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args, **options):
        status = system_status()
        if options["json"]:
            self.stdout.write(json.dumps([check.__dict__ for check in status.checks], indent=2))
        else:
            for check in status.checks:
                mark = "ok  " if check.ok else ("DOWN" if check.required else "warn")
                self.stdout.write(f"[{mark}] {check.name:<24} {check.detail}")
        if not status.ok:
            names = ", ".join(check.name for check in status.problems)
            raise CommandError(f"down: {names}")
