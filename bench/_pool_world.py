"""The world of bench/pool_simulation.py: what WhatsApp and the company's contacts do to the pool's chips.

Hidden from the pool, each chip has a fate drawn from its own random stream (`random.Random(f"{seed}:chip:{n}")`
for the n-th chip the run creates), so both runs of one seed give their n-th chip the same fate:

- **Getting into trouble.** Every message a chip sends adds to its exposure (EXPOSURE_FIRST_CONTACT for a message
  to a contact it was just bound to — cold outreach is what people report — EXPOSURE_MESSAGE for any other); when
  the exposure passes a threshold drawn from Exp(1), the chip is *troubled*.
- **Trouble climbs with sending.** A troubled chip's severity starts at TROUBLE_START and grows by its own `growth`
  (U(GROWTH)) per message it sends, three times that for a first contact. Every message fails with probability
  BASE_FAILURE + severity (at most MAX_FAILURE): a quarter of the failures at the gateway (HTTP 500, which the send
  circuit counts), the rest as a `messages.update` ERROR receipt a few minutes later.
- **A ban.** When the severity reaches the chip's `ban_at` (U(BAN_AT)), WhatsApp bans the number.
- **Stopping helps.** The severity decays with time, sending or not (WhatsApp forgets reports with a time
  constant of DECAY_HOURS); a troubled chip whose severity falls under RECOVERED is healthy again (a new threshold
  is drawn). So a chip that keeps sending while troubled is banned; one taken out of traffic in time is not (a
  rest of an hour or two only slows the climb: it is the sending that is punished, not the time).
- **Random bans.** Any chip with a number may be banned at random: its moment is drawn once, Exp(RANDOM_BAN_PER_DAY)
  days after its creation.

Delivered messages get a DELIVERY_ACK receipt 1-20 minutes later; a delivered message's contact replies with
probability REPLY_PROBABILITY[kind] within two hours (`messages.upsert`), and the company answers such a reply
(a `reply` message) with probability ANSWER_PROBABILITY. A ban reaches the pool as the gateway reports it: a
`status.instance` with disconnectionReasonCode 403 and a `connection.update` close with statusReason 403.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from _setup import NullGateway

# Calibrated once, on the world and the brain-off pool only: at the bench's default traffic (about 12 messages a
# chip a day) a troubled chip that keeps that pace reaches its ban in two to four days, and the reactive pool (brain
# off, the default targets) loses about one chip a week. (A first guess at twice these exposures lost two a week.)
EXPOSURE_FIRST_CONTACT = 0.005
EXPOSURE_MESSAGE = 0.0005
TROUBLE_START = 0.03
GROWTH = (0.008, 0.016)
BASE_FAILURE = 0.02
MAX_FAILURE = 0.8
GATEWAY_SHARE_OF_FAILURES = 0.25
BAN_AT = (0.35, 0.55)
DECAY_HOURS = 72.0
RECOVERED = 0.02
RANDOM_BAN_PER_DAY = 0.003
REPLY_PROBABILITY = {"prospecting": 0.2, "follow_up": 0.4, "reply": 0.3}
ANSWER_PROBABILITY = 0.6
BAN_CODE = 403


@dataclass
class Fate:
    """One chip's hidden state (the pool never reads it)."""

    rng: random.Random
    created_at: datetime
    growth: float = 0.0
    ban_at: float = 0.0
    threshold: float = 0.0
    random_ban_at: datetime | None = None
    exposure: float = 0.0
    severity: float = 0.0     # 0: healthy
    touched_at: datetime | None = None
    banned: bool = False
    ever_troubled: bool = False
    troubles: int = 0
    talked_to: set[str] = field(default_factory=set)  # numbers the chip has chats with (WhatsApp's view)

    def __post_init__(self) -> None:
        self.growth = self.rng.uniform(*GROWTH)
        self.ban_at = self.rng.uniform(*BAN_AT)
        self.threshold = self.rng.expovariate(1.0)
        self.random_ban_at = self.created_at + timedelta(days=self.rng.expovariate(RANDOM_BAN_PER_DAY))

    @property
    def troubled(self) -> bool:
        return self.severity > 0

    def decay(self, now: datetime) -> None:
        if self.touched_at is not None and self.severity > 0:
            hours = max(0.0, (now - self.touched_at).total_seconds() / 3600)
            self.severity *= math.exp(-hours / DECAY_HOURS)
            if self.severity < RECOVERED:  # healthy again: its exposure starts over
                self.severity, self.exposure, self.threshold = 0.0, 0.0, self.rng.expovariate(1.0)
        self.touched_at = now

    def send(self, *, first_contact: bool, now: datetime) -> bool:
        """One message leaves the chip: True when it fails. Moves the exposure, the trouble and the ban."""
        self.decay(now)
        if not self.troubled:
            self.exposure += EXPOSURE_FIRST_CONTACT if first_contact else EXPOSURE_MESSAGE
            if self.exposure >= self.threshold:
                self.severity, self.ever_troubled = TROUBLE_START, True
                self.troubles += 1
        failed = self.rng.random() < min(MAX_FAILURE, BASE_FAILURE + self.severity)
        if self.troubled:
            self.severity += self.growth * (3 if first_contact else 1)
            if self.severity >= self.ban_at:
                self.banned = True
        return failed


@dataclass(order=True)
class Event:
    at: datetime
    seq: int
    what: str = field(compare=False)            # send | receipt | inbound
    chip_id: int = field(compare=False)
    data: dict = field(compare=False, default_factory=dict)


class World:
    """The fates of a run's chips and the events WhatsApp and the contacts will cause, in time order."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.fates: dict[int, Fate] = {}
        self.names: dict[int, str] = {}
        self.chip_of: dict[str, int] = {}
        self.events: list[Event] = []
        self._seq = itertools.count()
        self.rng = random.Random(f"{seed}:contacts")  # receipts' delays, replies: outcome-driven noise

    def meet(self, chip_id: int, name: str, now: datetime) -> Fate:
        """The chip's fate (drawn when the world first sees the chip, from the chip's own stream)."""
        fate = self.fates.get(chip_id)
        if fate is None:
            n = len(self.fates)
            fate = self.fates[chip_id] = Fate(rng=random.Random(f"{self.seed}:chip:{n}"), created_at=now)
        self.names[chip_id] = name
        self.chip_of[name] = chip_id
        return fate

    def schedule(self, at: datetime, what: str, chip_id: int, **data) -> None:
        heapq.heappush(self.events, Event(at=at, seq=next(self._seq), what=what, chip_id=chip_id, data=data))

    def next_due(self, until: datetime) -> Event | None:
        """The earliest event at or before `until` (None: none left). One at a time: handling an event may schedule
        another before `until` (a receipt, a reply, an answer), which must come before the later ones."""
        return heapq.heappop(self.events) if self.events and self.events[0].at <= until else None

    def minutes(self, low: float, high: float) -> timedelta:
        return timedelta(minutes=self.rng.uniform(low, high))

    def random_bans(self, now: datetime, live: set[int]) -> list[int]:
        """Live chips whose random ban moment has come (each is banned once)."""
        hits = []
        for chip_id in sorted(live):
            fate = self.fates.get(chip_id)
            if fate and not fate.banned and fate.random_ban_at <= now:
                fate.banned = True
                hits.append(chip_id)
        return hits


class WorldGateway(NullGateway):
    """The pool's gateway seam (instances.gateway's interface, the null gateway of bench/warmer_dispatch.py) with
    the world behind it: a send may fail at once (HTTP 500) or later (an ERROR receipt), and is what moves the
    chip's hidden trouble; it also answers the provisioning calls (create_instance, set_webhook) in process."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self.kind = "follow_up"  # the kind of the message being sent (the company's traffic sets it)
        self.banned_now: list[int] = []

    def send_text(self, name, *, number, text, delay_ms=None):
        from django.utils import timezone

        from instances.gateway import GatewayError

        chip_id, kind = self.world.chip_of[name], self.kind
        now = timezone.now()
        fate = self.world.fates[chip_id]
        first_contact = number not in fate.talked_to
        fate.talked_to.add(number)
        was_banned = fate.banned
        failed = fate.send(first_contact=first_contact, now=now)
        if fate.banned and not was_banned:
            self.banned_now.append(chip_id)
        world = self.world
        if failed and world.rng.random() < GATEWAY_SHARE_OF_FAILURES:
            raise GatewayError("server", operation="sendText", instance=name, status_code=500,
                               messages=["Internal Server Error"])
        result = super().send_text(name, number=number, text=text, delay_ms=delay_ms)
        remote = f"{number}@s.whatsapp.net"
        if failed:
            world.schedule(now + world.minutes(1, 30), "receipt", chip_id, key=result.message_id, status="ERROR",
                           remote=remote)
        else:
            world.schedule(now + world.minutes(1, 20), "receipt", chip_id, key=result.message_id,
                           status="DELIVERY_ACK", remote=remote)
            if world.rng.random() < REPLY_PROBABILITY[kind]:
                world.schedule(now + world.minutes(5, 120), "inbound", chip_id, number=number, remote=remote)
        return result

    def create_instance(self, name, *, number=None, webhook=None, qrcode=False):
        return {"instance": {"instanceName": name}}

    def set_webhook(self, name, config):
        return None

    def webhook_config(self, *, url, secret):
        from instances.gateway import WebhookConfig

        return WebhookConfig(url=url, secret=secret, events=("MESSAGES_UPDATE", "MESSAGES_UPSERT",
                                                              "CONNECTION_UPDATE"))
