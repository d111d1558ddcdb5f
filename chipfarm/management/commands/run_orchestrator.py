"""Run the pool orchestrator: one cycle with --once, else a cycle every --interval seconds until Ctrl-C."""

import time

from django.core.management.base import BaseCommand

from chipfarm.orchestrator import run_cycle


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="run one cycle and exit")
        parser.add_argument("--interval", type=float, default=60.0)

    def handle(self, *args, once=False, interval=60.0, **options):
        while True:
            report = run_cycle()
            if not report.ran:
                self.stdout.write("another cycle is running; skipped")
            else:
                steps = ", ".join(f"{k}={v}" for k, v in report.steps.items())
                errors = f" errors: {report.errors}" if report.errors else ""
                self.stdout.write(f"cycle: {steps}; health {report.health}; {report.seconds * 1000:.0f} ms{errors}")
            if once:
                return
            time.sleep(interval)
