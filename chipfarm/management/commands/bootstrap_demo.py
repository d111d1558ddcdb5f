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
        call_command("run_orchestrator", "--once", stdout=self.stdout)  # the dashboard has a cycle at once
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS("Demo ready."))
        if created:
            self.stdout.write(f"  admin user : {username} / {password}")
        else:
            self.stdout.write(f"  admin user : {username} (existing; password unchanged)")
        self.stdout.write(f"  API key    : {raw}   (send it as the X-API-Key header)")
