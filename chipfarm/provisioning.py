"""Buying lines and giving them back: Salvy line → Evolution instance → the chip's `provisioned`."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from chipfarm.client import SalvyClient, SalvyError
from chipfarm.models import ChipRelease, OrchestratorOperation
from chips.models import Chip, ChipAlert
from chips.services import Actor, alert_raise, chip_transition
from instances.gateway import Gateway, GatewayError, gateway
from instances.services import instance_create

logger = logging.getLogger(__name__)
ACTOR = Actor.task("chipfarm.provision_chip")
STUCK_AFTER = timedelta(minutes=15)
Op = OrchestratorOperation.Kind


def instance_name_for(chip: Chip) -> str:
    return f"chipfarm-{chip.pk}"


def chips_start_provisioning(*, count: int, area_code: str, reason: str, kind: str = Op.AUTO_PROVISION
                             ) -> list[Chip]:
    """Create `count` chips in provisioning and queue their purchase after commit."""
    from chipfarm.tasks import provision_chip

    chips = []
    with transaction.atomic():
        for _ in range(count):
            chip = Chip.objects.create(area_code=area_code)
            OrchestratorOperation.objects.create(kind=kind, chip=chip, reason=reason,
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
    own_salvy, own_evolution = salvy is None, evolution is None
    salvy = salvy or SalvyClient()
    evolution = evolution or gateway()
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
                                   reason=f"line {chip.provider_line_id} bought, instance {name} created")
    finally:
        if own_salvy:
            salvy.close()
        if own_evolution:
            evolution.close()
    return chip


def provisioning_failed(*, chip_id: int, error: Exception) -> None:
    """Retries are spent: tell the operators. The stuck-provisioning sweeper retires the chip later."""
    chip = Chip.objects.filter(pk=chip_id).first()
    kind = getattr(error, "kind", error.__class__.__name__)
    detail = (_("no stock for area code %(ddd)s") % {"ddd": chip.area_code} if chip and kind == "no_stock"
              else f"{kind}: {error}")
    OrchestratorOperation.objects.create(kind=Op.AUTO_PROVISION, chip=chip, success=False, error=str(error)[:2000],
                                         reason=f"provisioning failed: {detail}"[:300])
    alert_raise(kind="provisioning_failed", severity=ChipAlert.Severity.WARNING, chip=chip,
                message=_("Provisioning chip %(chip)s failed after retries: %(detail)s.")
                % {"chip": chip_id, "detail": detail},
                action_taken=_("will be retired if still provisioning after 15 minutes"))


def sweep_stuck_provisioning(*, now=None) -> int:
    """Chips stuck in provisioning for 15 minutes are retired (their line, if any, is then cancelled)."""
    now = now or timezone.now()
    stuck = list(Chip.objects.filter(status=Chip.Status.PROVISIONING, created_at__lt=now - STUCK_AFTER)
                 .values_list("pk", flat=True)[:50])
    for chip_id in stuck:
        try:
            chip_transition(chip=chip_id, transition="retire", actor=Actor.task("chipfarm.sweep_provisioning"),
                            reason="stuck in provisioning for 15 minutes")
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


def chip_release(*, chip_id: int, reason: str | None = None, salvy: SalvyClient | None = None,
                 evolution: Gateway | None = None) -> ChipRelease:
    """Delete the retired chip's Evolution instance and cancel its Salvy line; each step once."""
    chip = Chip.objects.get(pk=chip_id)
    release, _created = ChipRelease.objects.get_or_create(
        chip=chip, defaults={"reason": reason or release_reason(chip)}
    )
    if release.done:
        return release
    own_salvy, own_evolution = salvy is None, evolution is None
    salvy = salvy or SalvyClient()
    evolution = evolution or gateway()
    now = timezone.now()
    try:
        if release.instance_deleted_at is None:
            if chip.instance_name:
                try:
                    evolution.delete(chip.instance_name)
                except GatewayError as exc:
                    if exc.kind != "not_found":
                        raise
            ChipRelease.objects.filter(pk=release.pk).update(instance_deleted_at=now, updated_at=now)
        if release.line_canceled_at is None:
            if chip.provider_line_id:
                try:
                    salvy.cancel(chip.provider_line_id, reason=release.reason)
                except SalvyError as exc:
                    if exc.kind != "not_found" and exc.code != "already_canceled":
                        raise
                OrchestratorOperation.objects.create(kind=Op.CANCEL, chip=chip,
                                                     reason=f"line cancelled: {release.reason}",
                                                     metadata={"line": chip.provider_line_id})
            ChipRelease.objects.filter(pk=release.pk).update(line_canceled_at=now, updated_at=now)
    except (SalvyError, GatewayError) as exc:
        ChipRelease.objects.filter(pk=release.pk).update(attempts=release.attempts + 1, last_error=str(exc)[:300],
                                                         updated_at=now)
        raise
    finally:
        if own_salvy:
            salvy.close()
        if own_evolution:
            evolution.close()
    release.refresh_from_db()
    return release
