"""The sandbox: the four fake providers on their configured loopback ports, wired to each other the way
the real world is, plus a slow simulation so a demo pool lives on its own.

- Salvy's fake sends each new line's WhatsApp code by SMS a few seconds after the purchase;
- the fake activator fetches each activation's link from the pool and scans the QR code it got there, which
  links the number's instance on the fake Evolution (as the emulator's camera and WhatsApp would);
- inbound messages and read receipts arrive now and then on linked instances.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from urllib.parse import urlparse

from django.conf import settings

from sandbox.activator import FakeActivator
from sandbox.consumer import FakeConsumer
from sandbox.evolution import FakeEvolution
from sandbox.salvy import FakeSalvy
from sandbox.server import FakeServer
from sandbox.slack import FakeSlack

logger = logging.getLogger(__name__)


def _port(url: str, default: int) -> int:
    return urlparse(url).port or default


class Sandbox:
    def __init__(self, *, app_url: str = "http://127.0.0.1:8000", slack_port: int = 8084, consumer_port: int = 8085,
                 sms_delay: float = 3.0, seed: int | None = None, traffic: bool = False) -> None:
        self.traffic = traffic
        self.app_url = app_url.rstrip("/")
        self.sms_delay = sms_delay
        self.random = random.Random(seed)
        self.evolution = FakeEvolution(api_key=settings.EVOLUTION_API_KEY)
        self.salvy = FakeSalvy(token=settings.SALVY_API_TOKEN, webhook_url=f"{self.app_url}/webhooks/salvy",
                               webhook_secret=settings.SALVY_WEBHOOK_SECRET)
        self.activator = FakeActivator(api_key=settings.CHIP_ACTIVATOR_API_KEY)
        self.slack = FakeSlack()
        self.consumer = FakeConsumer()  # the business app: it logs every event the pool pushes to it
        # Loopback by default; docker-compose sets SANDBOX_HOST=0.0.0.0 so other containers reach the fakes.
        host = os.environ.get("SANDBOX_HOST", "127.0.0.1")
        self.servers = [
            FakeServer(self.evolution.app, host=host, port=_port(settings.EVOLUTION_API_URL, 8081)),
            FakeServer(self.salvy.app, host=host, port=_port(settings.SALVY_API_URL, 8082)),
            FakeServer(self.activator.app, host=host, port=_port(settings.CHIP_ACTIVATOR_URL, 8083)),
            FakeServer(self.slack.app, host=host, port=slack_port),
            FakeServer(self.consumer.app, host=host, port=consumer_port),
        ]
        self._texted: set[str] = set()
        self._seen_at: dict[str, float] = {}
        self._sent_seen = 0
        self._stop = threading.Event()

    def start(self) -> Sandbox:
        for server in self.servers:
            server.start()
        self.evolution.server_url = self.servers[0].url
        self.evolution.auto_qr = True  # a new socket shows its first QR (Evolution's connect sleeps 2 s for it)
        self.activator.scan_via = self.servers[0].url
        return self

    def stop(self) -> None:
        self._stop.set()
        for server in self.servers:
            server.stop()
        self.salvy.close()

    def adopt_existing(self) -> int:
        """Give the fake Evolution the instances our database already has (a demo pool seeded before the
        sandbox started): connected chips' instances are open, the others closed."""
        from instances.models import Instance

        rows = list(Instance.objects.values_list("name", "chip__is_connected"))
        self.evolution.add_instances([name for name, connected in rows if connected], state="open")
        self.evolution.add_instances([name for name, connected in rows if not connected], state="close")
        return len(rows)

    def urls(self) -> dict[str, str]:
        names = ["evolution", "salvy", "activator", "slack", "consumer"]
        return {name: server.url for name, server in zip(names, self.servers, strict=True)}

    # --- the simulation ----------------------------------------------------------------------------------

    def tick(self, *, now: float | None = None) -> dict[str, int]:
        """One step of the world: codes for new lines, links for finished activations, a little traffic."""
        now = now if now is not None else time.monotonic()
        texted = traffic = 0
        for line_id, line in self.salvy.lines.items():
            if line_id in self._texted or line.get("status") != "active":
                continue
            first_seen = self._seen_at.setdefault(line_id, now)
            if now - first_seen >= self.sms_delay:
                code = f"{self.random.randint(0, 999_999):06d}"
                self.salvy.deliver_sms(line_id, f"Seu código do WhatsApp: {code[:3]}-{code[3:]}", code)
                self._texted.add(line_id)
                texted += 1
        by_number = {}
        for name in self.evolution.instance_names():
            info = self.evolution.instance_info(name)
            if info.get("number"):
                by_number[info["number"].lstrip("+")] = (name, info["state"])
        # Messages between pool numbers (the warmer's conversations) arrive at the other instance.
        number_of = {name: number for number, (name, _state) in by_number.items()}
        sent = self.evolution.sent_messages
        for message in sent[self._sent_seen:]:
            recipient = by_number.get(message["number"].lstrip("+"))
            if recipient and recipient[1] == "open":
                self.evolution.inbound(recipient[0], number_of.get(message["instance"], "5511900000000"),
                                       message["text"])
                traffic += 1
        self._sent_seen = len(sent)
        open_names = [name for name, state in by_number.values() if state == "open"]
        if open_names and self.random.random() < 0.5:
            name = self.random.choice(open_names)
            self.evolution.inbound(name, f"55119{self.random.randint(10_000_000, 99_999_999)}", "Oi, tudo bem?")
            traffic += 1
        traffic += len(self.evolution.deliver_queued())  # receipts WhatsApp sends later (restrictions)
        for message in self.evolution.sent_messages[-20:]:
            if self.random.random() < 0.3:
                self.evolution.ack(message["instance"], message["key_id"], "DELIVERY_ACK")
                traffic += 1
        if self.traffic and self.random.random() < 0.5:
            traffic += self._company_message()
        return {"texted": texted, "traffic": traffic}

    def _company_message(self) -> int:
        """The company writes to one of 60 contacts through the real send service (routing, caps, the
        kill switch, business hours): refusals are part of the show."""
        import uuid

        from common.exceptions import DomainError
        from instances.services import message_send

        contact = f"+55119{self.random.randint(0, 59):08d}"
        try:
            message_send(contact=contact, text=self.random.choice(["Olá! Temos uma vaga para você.",
                                                                   "Bom dia! Podemos conversar hoje?"]),
                         idempotency_key=f"sandbox-{uuid.uuid4().hex}")
        except DomainError:
            return 0
        return 1

    def run_forever(self, *, interval: float = 2.0) -> None:
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:  # the demo world must not die of one bad step
                logger.exception("sandbox tick failed")
