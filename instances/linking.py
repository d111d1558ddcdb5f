"""Linking a chip's session to a phone: the link the pool serves (contracts/chip-activator.md, last section).

Evolution's ``instance/connect`` needs the gateway's secret key, answers JSON, and sits on an internal address:
it is no URL to hand to another machine (field notes §6). So the pool serves one link per linking, carrying an
unguessable token and nothing else: ``GET`` answers the current QR as a PNG (what an emulator's camera or a
screen needs), or with ``Accept: application/json`` the raw QR string, the 8-character pairing code, when the
code expires and the session's state. Before the code expires (45 s), the pool asks the gateway for a fresh one.
Once linked, ended or expired: 410. Unknown token: 404.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import segno
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from chips.models import Chip
from common.exceptions import DomainError, NotFound
from instances import sessions
from instances.gateway import GatewayError
from instances.models import Instance, InstanceLink
from instances.servers import gateway_for

logger = logging.getLogger(__name__)
# Ask for a fresh code this long before the current one dies, so a scanner never gets a dead code.
REFRESH_BEFORE = timedelta(seconds=10)
S = Instance.State


class LinkGone(DomainError):
    status_code = 410
    code = "link_gone"


class LinkUnavailable(DomainError):
    status_code = 503
    code = "link_unavailable"


def link_url(link: InstanceLink) -> str:
    """The absolute URL of a link (PUBLIC_BASE_URL + the contract's path)."""
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/activation/link/{link.token}"


def link_start(*, instance: Instance, purpose: str, valid_for: timedelta, requested_by: str = "",
               now: datetime | None = None) -> InstanceLink:
    """Open a link for the session (a newer one supersedes any open link of the same session).

    A session the gateway lost is created again first (same name, our webhook). No code is asked for yet: the
    first GET of the link starts pairing (with the chip's number, so the gateway also offers a pairing code).
    """
    from instances.services import instance_create

    now = now or timezone.now()
    chip = instance.chip
    if instance.state == S.GONE:
        Instance.objects.filter(pk=instance.pk).update(state=S.UNKNOWN, gone_at=None, state_changed_at=now,
                                                       updated_at=now)
        instance_create(chip=chip, name=instance.name)
        instance.refresh_from_db()
    for _attempt in range(2):
        try:
            with transaction.atomic():
                InstanceLink.objects.filter(instance=instance, ended_at__isnull=True).update(
                    ended_at=now, end_reason=InstanceLink.End.SUPERSEDED, updated_at=now)
                link = InstanceLink.objects.create(token=secrets.token_urlsafe(32), instance=instance,
                                                   purpose=purpose, requested_by=requested_by[:150],
                                                   expires_at=now + valid_for)
            break
        except IntegrityError:  # a concurrent start won the one-open-link slot: supersede it
            continue
    else:  # pragma: no cover - two lost races in a row
        raise LinkUnavailable(_("The link is being created by someone else; try again."))
    logger.info("link %s opened for instance %s (%s)", link.pk, instance.name, purpose)
    return link


def _refresh_code(instance: Instance, *, now: datetime) -> None:
    """Ask the session's gateway for its current QR (starting a socket when it is closed) and store it."""
    with gateway_for(instance.server) as gw:
        try:
            info = gw.connect(instance.name, number=(instance.chip.phone or "").lstrip("+") or None)
        except GatewayError as exc:
            if exc.kind == "not_found":
                sessions.session_gone(instance, now, source="connect answered 404")
            raise LinkUnavailable(_("The gateway could not give a code now (%(kind)s); try again in a moment.")
                                  % {"kind": exc.kind}) from None
    if info.state == "open":
        sessions.session_opened(instance, now)
        return
    updates = {"updated_at": now}
    if info.code:
        updates.update(qr_code=info.code[:2000], qr_image=info.image or "", qr_updated_at=now,
                       pairing_code=(info.pairing_code or "")[:16])
    Instance.objects.filter(pk=instance.pk).update(**updates)
    sessions.session_connecting(instance, now)
    instance.refresh_from_db()


@dataclass(frozen=True)
class LinkCode:
    code: str | None
    pairing_code: str | None
    expires_at: datetime | None
    state: str

    def png(self) -> bytes:
        qr = segno.make(self.code or "", error="m")
        from io import BytesIO

        out = BytesIO()
        qr.save(out, kind="png", scale=8, border=4)
        return out.getvalue()


def link_end(*, link: InstanceLink, reason: str, now: datetime | None = None) -> None:
    now = now or timezone.now()
    InstanceLink.objects.filter(pk=link.pk, ended_at__isnull=True).update(ended_at=now, end_reason=reason,
                                                                        updated_at=now)


def links_end_for(instance: Instance, *, reason: str, now: datetime) -> int:
    """End the session's open links (it opened: every link to it is over)."""
    return InstanceLink.objects.filter(instance=instance, ended_at__isnull=True).update(
        ended_at=now, end_reason=reason, updated_at=now)


def link_current(*, token: str, now: datetime | None = None) -> LinkCode:
    """The code to show for a link now; LinkGone once linked, ended or expired; NotFound for a token we never gave.

    A code about to expire is replaced by a fresh one from the gateway before it is answered.
    """
    now = now or timezone.now()
    link = InstanceLink.objects.select_related("instance", "instance__chip", "instance__server").filter(
        token=token[:64]).first()
    if link is None:
        raise NotFound(_("No such link."))
    if link.ended_at is not None:
        raise LinkGone(_("This link is over (%(reason)s).") % {"reason": link.get_end_reason_display()})
    if link.expires_at <= now:
        link_end(link=link, reason=InstanceLink.End.EXPIRED, now=now)
        raise LinkGone(_("This link expired."))
    instance = link.instance
    if instance.state == S.OPEN:
        link_end(link=link, reason=InstanceLink.End.LINKED, now=now)
        raise LinkGone(_("The number is linked already."))
    if instance.chip.status == Chip.Status.RETIRED:
        link_end(link=link, reason=InstanceLink.End.CANCELLED, now=now)
        raise LinkGone(_("This chip is retired."))
    if not instance.qr_code or instance.qr_updated_at is None or (
            now - instance.qr_updated_at >= Instance.QR_TTL - REFRESH_BEFORE):
        _refresh_code(instance, now=now)
        if instance.state == S.OPEN:
            link_end(link=link, reason=InstanceLink.End.LINKED, now=now)
            raise LinkGone(_("The number is linked already."))
    live = instance.qr_is_live(now)
    return LinkCode(code=instance.qr_code if live else None,
                    pairing_code=(instance.pairing_code or None) if live else None,
                    expires_at=instance.qr_updated_at + Instance.QR_TTL if live else None,
                    state=instance.state)


class NothingToLink(DomainError):
    status_code = 409
    code = "nothing_to_link"


def chip_link(*, chip: Chip, requested_by: str, now: datetime | None = None) -> InstanceLink:
    """Start linking (or re-linking) a chip from the admin or the API: its own number waiting in `pending`, or a
    session that cannot come back by itself (logged out, gone, refused, closed). Refused (409) for a chip whose
    session is open, for an activation in progress (the activator has its own link) and for a retired chip."""
    instance = Instance.objects.select_related("chip", "server").filter(chip=chip).first()
    if instance is None or chip.status in (Chip.Status.RETIRED, Chip.Status.BANNED, Chip.Status.PROVISIONING):
        raise NothingToLink(_("Chip %(chip)s has no session that can be linked.") % {"chip": chip})
    if chip.status == Chip.Status.ACTIVATING:
        raise NothingToLink(_("Chip %(chip)s is being activated; its activation has a link of its own.")
                            % {"chip": chip})
    if instance.state == S.OPEN and chip.is_connected:
        raise NothingToLink(_("Chip %(chip)s is linked already.") % {"chip": chip})
    purpose = (InstanceLink.Purpose.OWN_NUMBER if chip.status == Chip.Status.PENDING
               else InstanceLink.Purpose.RELINK)
    return link_start(instance=instance, purpose=purpose, requested_by=requested_by, now=now,
                      valid_for=timedelta(minutes=settings.LINK_VALID_MINUTES))


def link_completed(instance: Instance, now: datetime) -> None:
    """The session opened while a link was open: the chip goes on where its lifecycle says — a number the
    company owns starts warming (later for one declared warm), a degraded chip rewarms. Others just route again."""
    from chips.services import Actor, chip_transition

    chip = Chip.objects.get(pk=instance.chip_id)
    actor = Actor.system("link")
    try:
        if chip.status == Chip.Status.PENDING and chip.source == Chip.Source.OWN:
            params = {}
            if chip.declared_warm:
                params = {"phase": settings.WARM_NUMBER_PHASE,
                          "started_at": now - timedelta(days=settings.WARM_NUMBER_DAYS)}
            chip_transition(chip=chip.pk, transition="linked", actor=actor, params=params,
                            reason=_("linked by QR / pairing code") + (
                                "; " + _("declared warm: starts at %(phase)s") % {"phase": params["phase"]}
                                if params else ""))
        elif chip.status == Chip.Status.DEGRADED:
            chip_transition(chip=chip.pk, transition="rewarm", actor=actor, reason=_("re-linked"))
    except DomainError as exc:
        logger.warning("chip %s: could not go on after its link opened: %s", chip.pk, exc.message)
