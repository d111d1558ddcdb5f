"""Create an API key for another system and print it once (only its hash is kept)."""

from django.core.management.base import BaseCommand, CommandError

from chipfarm.models import ApiKey


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("name", help="who will use the key, e.g. 'crm'")

    def handle(self, *args, name: str, **options):
        if ApiKey.objects.filter(name=name).exists():
            raise CommandError(f"An API key named {name!r} already exists; pick another name.")
        _key, raw = ApiKey.issue(name=name)
        self.stdout.write(raw)
