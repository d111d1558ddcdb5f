"""Create a demo pool with chips in every state, each reached by walking real transitions."""

from django.core.management.base import BaseCommand
from django.db import transaction

from chipfarm.models import PoolConfiguration
from chips.demo import chip_in_state
from chips.models import Chip
from instances.services import instance_register

# How many chips of each state the demo pool holds, and their area codes in turn.
DEMO_POOL = {
    Chip.Status.PROVISIONING: 1,
    Chip.Status.PENDING: 2,
    Chip.Status.ACTIVATING: 1,
    Chip.Status.WARMING: 6,
    Chip.Status.READY: 3,
    Chip.Status.ACTIVE: 5,
    Chip.Status.COOLING: 1,
    Chip.Status.DEGRADED: 1,
    Chip.Status.BANNED: 1,
    Chip.Status.RETIRED: 1,
}
AREA_CODES = ["11", "21", "31", "41", "51", "61", "71", "81"]


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="seed even if chips already exist")

    def handle(self, *args, force: bool = False, **options):
        if Chip.objects.exists() and not force:
            self.stdout.write("The pool already has chips; nothing seeded (use --force to add more).")
            return
        n = 0
        with transaction.atomic():
            if not PoolConfiguration.objects.exists():
                PoolConfiguration.defaults().save()
            for status, count in DEMO_POOL.items():
                for _ in range(count):
                    chip = chip_in_state(status=status, area_code=AREA_CODES[n % len(AREA_CODES)],
                                         trust=_demo_trust(status, n))
                    if chip.instance_name:
                        instance_register(chip=chip)
                    n += 1
        self.stdout.write(self.style.SUCCESS(f"Seeded {n} demo chips."))


def _demo_trust(status: str, n: int) -> int | None:
    if status == Chip.Status.WARMING:
        return 40 + (n * 7) % 45
    if status in (Chip.Status.READY, Chip.Status.ACTIVE, Chip.Status.COOLING):
        return 86 + n % 12
    return None
