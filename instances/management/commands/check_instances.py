"""Read every instance's connection state from Evolution now and record what changed."""

from django.core.management.base import BaseCommand

from instances.health import instances_check


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=None, help="requests in flight at once")

    def handle(self, *args, concurrency=None, **options):
        result = instances_check(concurrency=concurrency)
        for name, old, new in result.changes:
            self.stdout.write(f"{name}: {old} → {new}")
        self.stdout.write(f"checked {result.checked}, changed {result.changed}, unknown {result.unknown}")
