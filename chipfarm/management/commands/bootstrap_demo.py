"""Prepare a demo: an admin user, a fresh API key (printed once), and the seeded pool."""

import os

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from chipfarm.models import ApiKey

DEMO_KEY_NAME = "demo"


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        username = os.environ.get("DEMO_ADMIN_USER", "admin")
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "admin")
        User = get_user_model()
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": True, "is_superuser": True, "email": "admin@example.com"}
            )
            if created:
                user.set_password(password)
                user.save()
            # Only the hash of a key is stored, so a demo that prints its key issues a fresh one.
            ApiKey.objects.filter(name=DEMO_KEY_NAME).delete()
            _key, raw = ApiKey.issue(name=DEMO_KEY_NAME)
        call_command("seed_demo", stdout=self.stdout)
        self._demo_consumer()
        call_command("run_orchestrator", "--once", stdout=self.stdout)  # the dashboard has a cycle at once
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS("Demo ready."))
        if created:
            self.stdout.write(f"  admin user : {username} / {password}")
        else:
            self.stdout.write(f"  admin user : {username} (existing; password unchanged)")
        self.stdout.write(f"  API key    : {raw}   (send it as the X-API-Key header)")

    def _demo_consumer(self) -> None:
        """The sandbox's consumer (:8085) subscribed to every event, so replies and statuses show up in the log."""
        from outbox.models import Endpoint
        from outbox.services import endpoint_create

        url = os.environ.get("DEMO_CONSUMER_URL", "http://127.0.0.1:8085/hooks")
        if not Endpoint.objects.filter(url=url).exists():
            endpoint_create(url=url, event_types=["*"], description="demo consumer (manage.py sandbox)")
        self.stdout.write(f"  consumer   : {url} gets every event (see the sandbox's log)")
