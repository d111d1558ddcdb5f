"""Print the pool: counts per state against the targets, health, deficits and open alerts."""

from django.core.management.base import BaseCommand

from chipfarm.pool import pool_status
from chips.models import Chip, ChipAlert


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        status = pool_status()
        t = status.targets
        targets = {Chip.Status.ACTIVE: f">= {t['production_min']}, <= {t['production_max']}",
                   Chip.Status.READY: f">= {t['ready_min']}",
                   Chip.Status.WARMING: f"buffer {t['warmup_buffer']} (with pipeline)"}
        self.stdout.write(f"{'state':<14}{'chips':>7}  target")
        self.stdout.write("-" * 48)
        for state in Chip.Status:
            self.stdout.write(f"{state.value:<14}{status.counts[state.value]:>7}  {targets.get(state, '')}")
        self.stdout.write("-" * 48)
        reasons = f" ({'; '.join(status.reasons)})" if status.reasons else ""
        self.stdout.write(f"health: {status.health.upper()}{reasons}")
        self.stdout.write("deficits: " + ", ".join(f"{k} {v}" for k, v in status.deficits.items())
                          + f"; pipeline {status.pipeline}")
        open_alerts = ChipAlert.objects.open().count()
        self.stdout.write(f"open alerts: {open_alerts}")
