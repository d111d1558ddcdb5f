"""Buy N new lines now (an operator's decision: outside the orchestrator's batch, inside nothing else)."""

from django.core.management.base import BaseCommand, CommandError

from chipfarm.models import OrchestratorOperation, PoolConfiguration
from chipfarm.provisioning import chips_start_provisioning
from common.texts import Text


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--area-code", default=None, help="DDD, e.g. 11 (default: the pool's)")

    def handle(self, *args, count: int, area_code: str | None = None, **options):
        if not 1 <= count <= 50:
            raise CommandError("--count must be between 1 and 50.")
        area_code = area_code or PoolConfiguration.load().default_area_code
        if not (len(area_code) == 2 and area_code.isdigit() and area_code[0] != "0"):
            raise CommandError("--area-code must be a two-digit DDD such as 11.")
        chips = chips_start_provisioning(count=count, area_code=area_code, reason=Text("op.manual_provision_command"),
                                         kind=OrchestratorOperation.Kind.AUTO_PROVISION)
        self.stdout.write(f"provisioning {len(chips)} chip(s) in area code {area_code}: "
                          + ", ".join(str(c.pk) for c in chips))
