"""Run the fake providers (Evolution, Salvy, the VPS activator, Slack) on loopback until Ctrl-C.

They listen on the ports of EVOLUTION_API_URL, SALVY_API_URL and CHIP_ACTIVATOR_URL (and 8084 for
Slack), speak the real HTTP contracts, and — unless --quiet — simulate the world slowly: SMS codes
for new lines, linked instances after activation, some inbound traffic and receipts.
"""

from django.core.management.base import BaseCommand

from sandbox.runner import Sandbox


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--app-url", default="http://127.0.0.1:8000", help="where our webhooks are served")
        parser.add_argument("--quiet", action="store_true", help="serve the fakes, simulate nothing")
        parser.add_argument("--interval", type=float, default=2.0)
        parser.add_argument("--traffic", action="store_true",
                            help="also send company messages to demo contacts through the real send service")

    def handle(self, *args, app_url: str, quiet: bool, interval: float, traffic: bool, **options):
        sandbox = Sandbox(app_url=app_url, traffic=traffic).start()
        self.stdout.write(f"adopted {sandbox.adopt_existing()} existing instance(s)")
        for name, url in sandbox.urls().items():
            self.stdout.write(f"fake {name:<10} {url}")
        try:
            if quiet:
                sandbox._stop.wait()
            else:
                sandbox.run_forever(interval=interval)
        except KeyboardInterrupt:
            pass
        finally:
            sandbox.stop()
