"""Buying lines and giving them back: Salvy line → Evolution instance → the chip's `provisioned`."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chipfarm.client import SalvyClient, SalvyError
from chipfarm.models import ChipRelease, OrchestratorOperation
from chips.models import Chip, ChipAlert
from chips.services import Actor, alert_raise, chip_transition
from common.texts import TEMPLATES, Text, stored
from instances.gateway import Gateway, GatewayError
from instances.maintenance import instance_release
from instances.models import Instance
from instances.servers import gateway_for
from instances.services import instance_create

logger = logging.getLogger(__name__)
ACTOR = Actor.task("chipfarm.provision_chip")
STUCK_AFTER = timedelta(minutes=15)
Op = OrchestratorOperation.Kind


def instance_name_for(chip: Chip) -> str:
    return f"chipfarm-{chip.pk}"


def chips_start_provisioning(*, count: int, area_code: str, reason: str, kind: str = Op.AUTO_PROVISION,
                             actor: str = "") -> list[Chip]:
    """Create `count` chips in provisioning and queue their purchase after commit."""
    from chipfarm.tasks import provision_chip

    chips = []
    with transaction.atomic():
        for _ in range(count):
            chip = Chip.objects.create(area_code=area_code)
            OrchestratorOperation.objects.create(kind=kind, chip=chip, **stored("reason", reason, 300),
                                                 actor=actor[:150],
                                                 metadata={"area_code": area_code})
            provision_chip.delay_on_commit(chip.pk)
            chips.append(chip)
    return chips


def chip_provision(*, chip_id: int, salvy: SalvyClient | None = None, evolution: Gateway | None = None
                   ) -> Chip:
    """Buy the chip's line (once), create its Evolution instance with our webhook, then `provisioned`.

    Idempotent: a redelivered task finds the line already recorded on the chip (or, if the process died
    between the purchase and our write, finds it in Salvy's list by its name) and never buys twice.
    """
    chip = Chip.objects.get(pk=chip_id)
    if chip.status != Chip.Status.PROVISIONING:
        return chip
    name = instance_name_for(chip)
    own_salvy = salvy is None
    salvy = salvy or SalvyClient()
    try:
        if not chip.provider_line_id:
            line = next((ln for ln in salvy.list_lines() if ln.name == name and ln.status != "canceled"), None)
            line = line or salvy.provision(area_code=int(chip.area_code), name=name)
            Chip.objects.filter(pk=chip.pk).update(provider_line_id=line.id, phone=line.phone_number,
                                                   instance_name=name, updated_at=timezone.now())
            chip.refresh_from_db()
        instance_create(chip=chip, name=name, gw=evolution)
        with transaction.atomic():
            chip = chip_transition(chip=chip.pk, transition="provisioned", actor=ACTOR,
                                   reason=Text("op.line_bought", line=chip.provider_line_id, name=name))
    finally:
        if own_salvy:
            salvy.close()
    return chip


def provisioning_failed(*, chip_id: int, error: Exception) -> None:
    """Retries are spent: tell the operators. The stuck-provisioning sweeper retires the chip later."""
    chip = Chip.objects.filter(pk=chip_id).first()
    kind = getattr(error, "kind", error.__class__.__name__)
    detail = (Text("op.no_stock", ddd=chip.area_code) if chip and kind == "no_stock"
              else Text("op.error", kind=kind, error=str(error)[:200]))
    OrchestratorOperation.objects.create(kind=Op.AUTO_PROVISION, chip=chip, success=False, error=str(error)[:2000],
                                         **stored("reason", Text("op.provisioning_failed", detail=detail), 300))
    alert_raise(kind="provisioning_failed", severity=ChipAlert.Severity.WARNING, chip=chip,
                message=Text("alert.provisioning_failed", chip=chip_id, detail=detail),
                action_taken=Text("action.retire_if_stuck"))


def sweep_stuck_provisioning(*, now=None) -> int:
    """Chips stuck in provisioning for 15 minutes are retired (their line, if any, is then cancelled)."""
    now = now or timezone.now()
    stuck = list(Chip.objects.filter(status=Chip.Status.PROVISIONING, created_at__lt=now - STUCK_AFTER)
                 .values_list("pk", flat=True)[:50])
    for chip_id in stuck:
        try:
            chip_transition(chip=chip_id, transition="retire", actor=Actor.task("chipfarm.sweep_provisioning"),
                            reason=Text("op.stuck_provisioning"))
        except Exception as exc:  # a conflict means someone else moved it: fine
            logger.warning("could not retire stuck chip %s: %s", chip_id, exc)
    return len(stuck)


def release_reason(chip: Chip) -> str:
    """Salvy's cancel reason for a retired chip."""
    if chip.banned_at:
        return "whatsapp-ban"
    if chip.activation_attempts >= 3 or chip.provisioned_at is None:
        return "technical-issues"
    return "unnecessary"


# Seconds before the next try of a release side that failed (then a warning alert, RELEASE_MAX_ATTEMPTS).
RELEASE_BACKOFF = (60, 300, 900, 3600, 3 * 3600, 6 * 3600)


def _release_backoff(attempts: int) -> timedelta:
    return timedelta(seconds=RELEASE_BACKOFF[min(attempts, len(RELEASE_BACKOFF)) - 1])


def chip_release(*, chip_id: int, reason: str | None = None, salvy: SalvyClient | None = None,
                 evolution: Gateway | None = None, now=None) -> ChipRelease:
    """Give back a retired chip's outside resources: log out and delete its session, cancel its Salvy line.

    The two sides are independent: the line is cancelled in the same run whatever the gateway answered (a 400 on
    delete must not keep paying for the line). A side that failed is counted and retried at `next_attempt_at`
    with backoff by the release sweep; after RELEASE_MAX_ATTEMPTS a warning alert names what is left.
    """
    chip = Chip.objects.get(pk=chip_id)
    release, _created = ChipRelease.objects.get_or_create(
        chip=chip, defaults={"reason": reason or release_reason(chip)}
    )
    if release.done:
        return release
    now = now or timezone.now()
    own_salvy, own_evolution = salvy is None, evolution is None
    updates: dict = {}
    try:
        if release.instance_deleted_at is None:
            instance = Instance.objects.filter(chip=chip).first()
            try:
                if instance is not None:
                    evolution = evolution or gateway_for(instance.server)
                    instance_release(instance=instance, gw=evolution, attempt=release.instance_attempts + 1)
            except GatewayError as exc:
                updates.update(instance_attempts=release.instance_attempts + 1, instance_error=str(exc)[:300])
            else:
                updates.update(instance_deleted_at=now, instance_error="")
        if release.line_canceled_at is None:
            try:
                if chip.provider_line_id:
                    salvy = salvy or SalvyClient()
                    _cancel_line(salvy, chip, release.reason)
            except SalvyError as exc:
                updates.update(line_attempts=release.line_attempts + 1, line_error=str(exc)[:300])
            else:
                updates.update(line_canceled_at=now, line_error="")
    finally:
        if own_salvy and salvy is not None:
            salvy.close()
        if own_evolution and evolution is not None:
            evolution.close()
    for name, value in updates.items():
        setattr(release, name, value)
    failed = max(release.instance_attempts if release.instance_deleted_at is None else 0,
                 release.line_attempts if release.line_canceled_at is None else 0)
    if release.done:
        release.next_attempt_at = None
    elif failed >= settings.RELEASE_MAX_ATTEMPTS:
        release.next_attempt_at, release.gave_up_at = None, now
        _release_gave_up(release, chip)
    else:
        release.next_attempt_at = now + _release_backoff(max(1, failed))
    release.save()
    return release


def _cancel_line(salvy: SalvyClient, chip: Chip, reason: str) -> None:
    try:
        salvy.cancel(chip.provider_line_id, reason=reason)
    except SalvyError as exc:
        if exc.kind != "not_found" and exc.code != "already_canceled":
            raise
    why = Text(f"release.{reason}") if f"release.{reason}" in TEMPLATES else reason
    OrchestratorOperation.objects.create(kind=Op.CANCEL, chip=chip, **stored("reason", Text("op.line_cancelled",
                                                                                             reason=why), 300),
                                         metadata={"line": chip.provider_line_id})


def _release_gave_up(release: ChipRelease, chip: Chip) -> None:
    left = []
    if release.instance_deleted_at is None:
        left.append(Text("alert.release_left_instance", name=chip.instance_name, error=release.instance_error))
    if release.line_canceled_at is None:
        left.append(Text("alert.release_left_line", line=chip.provider_line_id, error=release.line_error))
    alert_raise(kind="release_failed", severity=ChipAlert.Severity.WARNING, chip=chip,
                message=Text("alert.release_failed", chip=chip, n=settings.RELEASE_MAX_ATTEMPTS, left=left),
                action_taken=Text("action.clean_by_hand"))


def releases_sweep(*, now=None, limit: int = 50) -> list[int]:
    """Queue the due retries of unfinished releases (claimed with SKIP LOCKED: two sweeps never queue one twice)."""
    from chipfarm.tasks import release_chip

    now = now or timezone.now()
    with transaction.atomic():
        due = list(ChipRelease.objects.select_for_update(skip_locked=True)
                   .filter(gave_up_at__isnull=True, next_attempt_at__lte=now)
                   .order_by("next_attempt_at").values_list("pk", "chip_id")[:limit])
        if due:
            # Claimed: the task's own run sets the real next attempt; a lost task is picked again in 10 minutes.
            ChipRelease.objects.filter(pk__in=[pk for pk, _ in due]).update(
                next_attempt_at=now + timedelta(minutes=10), updated_at=now)
            for _pk, chip_id in due:
                release_chip.delay_on_commit(chip_id)
    return [chip_id for _pk, chip_id in due]


def chip_release_summary(chip: Chip) -> dict | None:
    """The chip API's `release`: for a retired chip, what is given back and what is still pending."""
    release = ChipRelease.objects.filter(chip_id=chip.pk).first()
    if release is None:
        return None if chip.status != Chip.Status.RETIRED else {
            "reason": release_reason(chip), "pending": ["instance", "line"], "instance_deleted_at": None,
            "line_canceled_at": None, "next_attempt_at": None, "gave_up_at": None, "last_error": ""}
    return {"reason": release.reason, "pending": release.pending, "instance_deleted_at": release.instance_deleted_at,
            "line_canceled_at": release.line_canceled_at, "next_attempt_at": release.next_attempt_at,
            "gave_up_at": release.gave_up_at, "last_error": release.instance_error or release.line_error}
