"""The run of bench/pool_simulation.py: the pool, its clock and its checks (see that module's docstring).

`simulate(days=..., seed=..., brain=...)` runs one pool on the current database and returns its figures; the
bench calls it twice (brain off, brain on), the smoke test (tests/test_pool_simulation.py) once, briefly.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from _pool_world import ANSWER_PROBABILITY, BAN_CODE, World, WorldGateway

START = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # Monday 2 March 2026, 00:00 in São Paulo
CRM_SEED = 500


@dataclass
class Sizes:
    """The pool's targets (production_min, ready_min, warmup_buffer: the pool configuration's defaults), the
    company's daily traffic, how often the cycle runs in business hours, and the activation lead time."""

    production_min: int = 5
    ready: int = 2
    warming: int = 4
    prospecting: int = 12
    follow_ups: int = 48
    step_minutes: int = 60
    activation_days: float = 1.0

    @property
    def production_max(self) -> int:
        return self.production_min + 4


@dataclass
class RunResult:
    brain: bool
    days: int
    days_short: int = 0
    banned: int = 0
    banned_random: int = 0
    troubled: int = 0
    rested: int = 0                # chips the early warning rested or stopped
    rested_in_trouble: int = 0
    rested_then_banned: int = 0
    saved: int = 0                 # rested or stopped in trouble, never banned
    degraded: int = 0
    bought: int = 0
    demanded: int = 0
    sent: int = 0                  # accepted by the gateway
    failed_gateway: int = 0        # the gateway answered 500
    failed_receipts: int = 0       # accepted, then an ERROR receipt
    delivered: int = 0
    refused: Counter = field(default_factory=Counter)
    violations: int = 0
    violation_notes: list[str] = field(default_factory=list)
    cycles: int = 0
    ready_min: int = 0
    warmup_buffer: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.failed_gateway + self.failed_receipts

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


class SimSalvy:
    """The provisioning task's Salvy, in process: every purchase succeeds at once."""

    def list_lines(self):
        return []

    def provision(self, *, area_code: int, name: str):
        from chipfarm.client import SalvyLine

        n = int(name.rsplit("-", 1)[1])
        return SalvyLine(id=f"sim-line-{n}", name=name, phone_number=f"+55{area_code}9{n:08d}", status="active",
                         created_at=None, canceled_at=None, cancel_reason=None, raw={})

    def close(self) -> None:
        pass


BRAIN_OFF = {"CIRCUIT_ENABLED": False, "EARLY_WARNING_ENABLED": False, "NEW_CONTACT_ALLOWANCE_STEPS": [],
             "KIND_MIN_TRUST": {"prospecting": 0, "follow_up": 0, "reply": 0},
             "KIND_HOURLY_SHARE": {"prospecting": 100, "follow_up": 100, "reply": 100}}


def local(day: int, hour: float) -> datetime:
    return START + timedelta(days=day, hours=hour)


def demand(seed: int, day: int, sizes: Sizes, crm: list[str], next_contact: list[int]) -> list[tuple]:
    """The company's messages of one business day: (moment, kind, contact, text), from the seed and the day."""
    rng = random.Random(f"{seed}:traffic:{day}")
    out = []
    for i in range(sizes.prospecting):
        next_contact[0] += 1
        contact = f"+55219{next_contact[0]:08d}"
        out.append((local(day, rng.uniform(8, 20)), "prospecting", contact, f"offer d{day} n{i} to {contact}"))
        crm.append(contact)
    for i in range(sizes.follow_ups):
        contact = rng.choice(crm)
        out.append((local(day, rng.uniform(8, 20)), "follow_up", contact, f"follow-up d{day} n{i} to {contact}"))
    return out


class Simulation:
    """One run: the pool set up at its targets, then day by day the world's events in time order and the cycle at
    each tick; `run()` returns the figures."""

    def __init__(self, *, days: int, seed: int, brain: bool, sizes: Sizes) -> None:
        self.days, self.seed, self.brain, self.sizes = days, seed, brain, sizes
        self.world = World(seed)
        self.gateway = WorldGateway(self.world)
        self.result = RunResult(brain=brain, days=days)
        self.pending_drain = False     # message events stored and not applied yet
        self.pending_inbound = False   # ... among them a contact's message (a reply needs it applied)
        self.decisions: dict[int, list[datetime]] = defaultdict(list)      # chip → moments routed
        self.new_contacts: dict[int, list[datetime]] = defaultdict(list)   # chip → moments a new contact bound
        self.judged_ops = 0
        self.rested: dict[int, bool] = {}                                   # chip → troubled when first rested
        self.answers = 0
        self.keys = itertools.count(1)
        self.short_days: set[int] = set()

    # --- the pool's outside: webhooks, as Evolution posts them ----------------------------------------------

    def webhook(self, event: str, chip_id: int, data: dict) -> None:
        from instances.webhooks import evolution_event_process

        envelope = {"event": event, "instance": self.world.names[chip_id], "data": data}
        evolution_event_process(envelope, json.dumps(envelope).encode())
        if event.startswith("messages."):
            self.pending_drain = True
            self.pending_inbound |= event == "messages.upsert"

    def drain(self) -> None:
        from instances.inbox import receipts_drain

        if self.pending_drain:
            while receipts_drain(0).more:
                pass
            self.pending_drain = self.pending_inbound = False

    def ban(self, chip_id: int, now: datetime, *, random_ban: bool) -> None:
        self.result.banned += 1
        self.result.banned_random += int(random_ban)
        self.webhook("status.instance", chip_id, {"instance": self.world.names[chip_id], "status": "closed",
                                                  "disconnectionAt": now.isoformat(),
                                                  "disconnectionReasonCode": BAN_CODE})
        self.webhook("connection.update", chip_id, {"instance": self.world.names[chip_id], "state": "close",
                                                    "statusReason": BAN_CODE})

    # --- sending --------------------------------------------------------------------------------------------

    def send(self, now: datetime, kind: str, contact: str, text: str) -> None:
        from common.exceptions import DomainError
        from instances.models import OutboundMessage
        from instances.services import message_send

        if kind == "reply" and self.pending_inbound:
            self.drain()  # the drain applies a contact's message seconds after its webhook, before we answer
        self.gateway.kind = kind
        try:
            outcome = message_send(contact=contact, text=text, idempotency_key=f"sim-{next(self.keys)}",
                                   kind=kind, client=self.gateway)
        except DomainError as exc:
            self.result.refused[f"{exc.code}:{kind}"] += 1
            return
        chip_id = outcome.message.chip_id
        self.decisions[chip_id].append(now)
        if outcome.binding in ("new", "moved"):
            self.new_contacts[chip_id].append(now)
            self.check_new_contacts(chip_id, now)
        if outcome.message.status == OutboundMessage.Status.FAILED:
            self.result.failed_gateway += 1
        else:
            self.result.sent += 1
        for banned in self.gateway.banned_now:
            self.ban(banned, now, random_ban=False)
        self.gateway.banned_now.clear()

    def handle(self, event, now: datetime) -> None:
        fate = self.world.fates.get(event.chip_id)
        if event.what == "send":
            self.send(now, **event.data)
        elif event.what == "receipt":
            if event.data["status"] == "ERROR":
                self.result.failed_receipts += 1
            else:
                self.result.delivered += 1
            self.webhook("messages.update", event.chip_id, {
                "keyId": event.data["key"], "remoteJid": event.data["remote"], "fromMe": True,
                "status": event.data["status"], "instanceId": f"sim-{event.chip_id}", "messageId": None})
        elif event.what == "inbound" and fate is not None and not fate.banned:
            self.answers += 1
            self.webhook("messages.upsert", event.chip_id, {
                "key": {"remoteJid": event.data["remote"], "fromMe": False, "id": f"SIMIN{self.answers:010d}"},
                "pushName": "Contato", "status": "DELIVERY_ACK", "message": {"conversation": "oi, pode falar"},
                "messageType": "conversation", "messageTimestamp": int(now.timestamp()),
                "instanceId": f"sim-{event.chip_id}"})
            fate.talked_to.add(event.data["number"])
            answer_at = now + self.world.minutes(2, 15)
            if self.world.rng.random() < ANSWER_PROBABILITY and self.business(answer_at):
                self.result.demanded += 1
                self.world.schedule(answer_at, "send", event.chip_id, kind="reply",
                                    contact="+" + event.data["number"],
                                    text=f"answer {self.answers} to +{event.data['number']}")

    @staticmethod
    def business(moment: datetime) -> bool:
        from instances.hours import is_business_time

        return is_business_time(moment)

    # --- the checks -----------------------------------------------------------------------------------------

    def violation(self, note: str) -> None:
        self.result.violations += 1
        if len(self.result.violation_notes) < 10:
            self.result.violation_notes.append(note)

    def check_new_contacts(self, chip_id: int, now: datetime) -> None:
        from chips.models import Chip
        from instances.caps import caps_in_effect
        from instances.models import ChipCapacity

        chip = Chip.objects.get(pk=chip_id)
        caps = caps_in_effect(chip, ChipCapacity.objects.filter(chip_id=chip_id).first())
        taken = sum(1 for at in self.new_contacts[chip_id] if at > now - timedelta(hours=24))
        if taken > caps.new_contacts_per_day:
            self.violation(f"{now:%m-%d %H:%M} chip {chip_id}: {taken} new contacts in 24 h > "
                           f"{caps.new_contacts_per_day}")

    def check_caps(self, now: datetime) -> None:
        from instances.caps import PRODUCTION_STATES, caps_in_effect, day_window, hour_window, usage_now
        from instances.models import ChipCapacity

        for capacity in ChipCapacity.objects.select_related("chip").filter(chip__status__in=PRODUCTION_STATES):
            caps, used = caps_in_effect(capacity.chip, capacity), usage_now(capacity, now)
            if used.hour > caps.per_hour or used.day > caps.per_day:
                self.violation(f"{now:%m-%d %H:%M} chip {capacity.chip_id}: counters {used.hour}/h {used.day}/day "
                               f"> caps {caps.per_hour}/{caps.per_day}")
            moments = self.decisions.get(capacity.chip_id, [])
            hour = sum(1 for at in moments if hour_window(at) == hour_window(now))
            day = sum(1 for at in moments if day_window(at) == day_window(now))
            if hour > caps.per_hour or day > caps.per_day:
                self.violation(f"{now:%m-%d %H:%M} chip {capacity.chip_id}: {hour} decisions this hour, {day} "
                               f"today > caps {caps.per_hour}/{caps.per_day}")

    # --- the pool's lead times (see the module docstring's shortcuts) ----------------------------------------

    def supply(self, now: datetime) -> None:
        from chipfarm.provisioning import chip_provision
        from chips.models import Chip
        from chips.services import Actor, chip_transition

        S = Chip.Status  # noqa: N806
        for chip_id in Chip.objects.filter(status=S.PROVISIONING).values_list("pk", flat=True):
            chip = chip_provision(chip_id=chip_id, salvy=SimSalvy(), evolution=self.gateway)
            self.world.meet(chip.pk, chip.instance_name, now)
            self.result.bought += 1
        due = now - timedelta(days=self.sizes.activation_days)
        actor = Actor.task("sim.activation")
        for chip_id in Chip.objects.filter(status=S.PENDING, provisioned_at__lte=due).values_list("pk", flat=True):
            chip_transition(chip=chip_id, transition="start_activation", actor=actor, reason="SMS code (sim)")
            chip_transition(chip=chip_id, transition="activation_succeeded", actor=actor, reason="activated (sim)")

    def warm(self, now: datetime, *, daily: bool) -> None:
        from chipfarm.models import PoolConfiguration
        from chips.models import Chip, WarmingPhase

        S = Chip.Status  # noqa: N806
        done = now - timedelta(days=PoolConfiguration.load().warmup_days)
        for chip in Chip.objects.filter(status=S.WARMING, warming_started_at__lte=done).exclude(
                warming_phase=WarmingPhase.final()):
            chip.warming_phase = WarmingPhase.final()
            chip.set_trust(95)
            chip.save(update_fields=["warming_phase", "trust_score", "trust_level", "updated_at"])
            warming_history(chip.pk, now, days=7)
        if daily:
            for chip_id in (Chip.objects.filter(status__in=[S.WARMING, S.READY], warming_phase=WarmingPhase.final())
                            .values_list("pk", flat=True)):
                warming_history(chip_id, now, days=1)

    def judge_rests(self, now: datetime) -> None:
        """Record, for each chip the early warning rests or stops for the first time, whether it was in trouble."""
        from chipfarm.models import OrchestratorOperation

        Op = OrchestratorOperation.Kind  # noqa: N806
        ops = list(OrchestratorOperation.objects.filter(kind__in=[Op.HEALTH_REST, Op.HEALTH_STOP], success=True,
                                                        pk__gt=self.judged_ops).values_list("pk", "chip_id"))
        for pk, chip_id in ops:
            self.judged_ops = max(self.judged_ops, pk)
            fate = self.world.fates.get(chip_id)
            self.rested.setdefault(chip_id, bool(fate and fate.troubled))

    # --- the run --------------------------------------------------------------------------------------------

    def setup(self, now: datetime) -> None:
        from chipfarm.models import PoolConfiguration
        from chips.demo import chip_in_state
        from chips.models import Chip
        from instances.services import instance_register

        s = self.sizes
        config = PoolConfiguration.load()
        config.production_min, config.production_max = s.production_min, s.production_max
        config.ready_min, config.warmup_buffer = s.ready, s.warming
        config.auto_provision, config.auto_reserve = True, self.brain
        config.save()
        plan = [Chip.Status.ACTIVE] * s.production_min + [Chip.Status.READY] * s.ready
        for status in plan:
            # Warmed for warmup_days + 1 (chip_in_state dates the ramp back; its activation too).
            chip = chip_in_state(status=status, trust=95)
            chip.activated_at = chip.warming_started_at
            chip.save(update_fields=["activated_at", "updated_at"])
            instance_register(chip=chip)
            self.world.meet(chip.pk, chip.instance_name, now)
            warming_history(chip.pk, now, days=7)
        for i in range(s.warming):  # spread over the ramp: one finishes every few days
            chip = chip_in_state(status=Chip.Status.WARMING)
            chip.warming_started_at = now - timedelta(days=config.warmup_days * (i + 1) / (s.warming + 1))
            chip.activated_at = chip.warming_started_at
            chip.save(update_fields=["warming_started_at", "activated_at", "updated_at"])
            instance_register(chip=chip)
            self.world.meet(chip.pk, chip.instance_name, now)

    def ticks(self, day: int) -> list[tuple[datetime, bool]]:
        """The day's cycle moments (moment, is business time): every step from 08:00 to 20:00, and at 00:00, 03:00,
        06:00 and 22:00."""
        steps = [(local(day, h), False) for h in (0, 3, 6)]
        minutes = 8 * 60
        while minutes <= 20 * 60:
            moment = local(day, minutes / 60)
            steps.append((moment, self.business(moment - timedelta(seconds=1))))
            minutes += self.sizes.step_minutes
        return [*steps, (local(day, 22), False)]

    def run(self) -> RunResult:
        import time_machine

        from chipfarm.models import PoolConfiguration
        from chipfarm.orchestrator import run_cycle
        from chips.models import Chip
        from warmer.services import trust_recompute

        started = time.perf_counter()
        crm = [f"+55219{n:08d}" for n in range(CRM_SEED)]
        next_contact = [CRM_SEED]
        clock = START
        with time_machine.travel(START, tick=False) as traveller:
            self.setup(START)
            for day in range(self.days):
                if self.business(local(day, 12)):  # no campaign on a national holiday
                    for at, kind, contact, text in demand(self.seed, day, self.sizes, crm, next_contact):
                        self.world.schedule(at, "send", 0, kind=kind, contact=contact, text=text)
                    self.result.demanded += self.sizes.prospecting + self.sizes.follow_ups
                last_hour = None
                for moment, business in self.ticks(day):
                    while (event := self.world.next_due(moment)) is not None:
                        assert event.at >= clock, (event, clock)  # the clock never goes back
                        clock = event.at
                        traveller.move_to(event.at)
                        self.handle(event, event.at)
                    clock = moment
                    traveller.move_to(moment)
                    live = set(Chip.objects.filter(status__in=Chip.LIVE_STATES).values_list("pk", flat=True))
                    for chip_id in self.world.random_bans(moment, live):
                        self.ban(chip_id, moment, random_ban=True)
                    self.drain()
                    self.check_caps(moment)
                    self.supply(moment)
                    self.warm(moment, daily=moment == local(day, 6))
                    if moment.hour // 2 != last_hour:  # the trust recompute: every two hours
                        last_hour = moment.hour // 2
                        ids = list(Chip.objects.filter(status__in=[*Chip.PRODUCTION_STATES, Chip.Status.READY])
                                   .values_list("pk", flat=True))
                        trust_recompute(chip_ids=ids, as_of=moment)
                    report = run_cycle(now=moment)
                    self.result.cycles += 1
                    if business and report.health == "critical":
                        self.short_days.add(day)
                    self.judge_rests(moment)
            config = PoolConfiguration.load()
        r = self.result
        r.days_short = len(self.short_days)
        r.troubled = sum(1 for f in self.world.fates.values() if f.ever_troubled)
        banned = set(Chip.objects.filter(status=Chip.Status.BANNED).values_list("pk", flat=True))
        r.rested = len(self.rested)
        r.rested_in_trouble = sum(self.rested.values())
        r.rested_then_banned = sum(1 for c in self.rested if c in banned)
        r.saved = sum(1 for c, troubled in self.rested.items() if troubled and c not in banned)
        r.degraded = Chip.objects.filter(status=Chip.Status.DEGRADED).count()
        r.ready_min, r.warmup_buffer = config.ready_min, config.warmup_buffer
        r.seconds = time.perf_counter() - started
        return r


def warming_history(chip_id: int, now: datetime, *, days: int) -> None:
    """What the warmer's traffic would have recorded for the chip over the last `days` (see the shortcuts)."""
    from instances.hours import business_day
    from instances.models import DeliveryEvent
    from warmer.models import ChipDailyMetrics

    moments = [now - timedelta(days=d, hours=h) for d in range(days) for h in range(1, 13)]
    ChipDailyMetrics.objects.bulk_create(
        [ChipDailyMetrics(chip_id=chip_id, day=business_day(now - timedelta(days=d)), sent=30) for d in range(days)],
        update_conflicts=True, unique_fields=["chip", "day"], update_fields=["sent"])
    DeliveryEvent.objects.bulk_create([DeliveryEvent(chip_id=chip_id, kind=DeliveryEvent.Kind.INBOUND,
                                                     occurred_at=at) for at in moments])


def reset_shared_state() -> None:
    """What outlives a database flush: send circuits in Redis and the webhook's instance-name cache."""
    from django.core.cache import cache

    from instances import circuit, inbox

    inbox._ids.clear()
    circuit._skip_until = 0.0
    client = cache._cache.get_client(write=True)
    for key in client.scan_iter(cache.make_key("circuit:*")):
        client.delete(key)


def simulate(*, days: int, seed: int, brain: bool, sizes: Sizes | None = None, flush: bool = True) -> RunResult:
    """One run on the current database, flushed first unless `flush` is False (a test's empty database)."""
    from django.core.management import call_command
    from django.test.utils import override_settings

    if flush:
        call_command("flush", interactive=False, verbosity=0)
    reset_shared_state()
    overrides = {"GATEWAY_EVENT_SHARDS": 1, **({} if brain else BRAIN_OFF)}
    with override_settings(**overrides):
        return Simulation(days=days, seed=seed, brain=brain, sizes=sizes or Sizes()).run()


