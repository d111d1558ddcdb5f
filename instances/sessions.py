"""What happened to a chip's gateway session, whoever saw it first (a webhook, the periodic check, a failed send).

Webhooks are the fast path and can be lost or reordered; the check reads the gateway's durable truth and calls
the same functions, so a ban whose webhook never arrived ends exactly like one that did. Every function here is
idempotent: applying a fact twice (a retried webhook, the check after the webhook) changes nothing the second time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import current_app
from django.db import connection, transaction
from django.db.models import BooleanField, Exists, ExpressionWrapper, F, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from chips.models import Chip, ChipAlert
from chips.services import Actor, alert_raise, chip_transition
from common.exceptions import TransitionConflict, TransitionNotAllowed
from common.statements import StatementCache
from common.texts import Text
from instances.bindings import bindings_release
from instances.models import DeliveryEvent, Instance, InstanceLink
from instances.pool_full import pool_room_changed

logger = logging.getLogger(__name__)

BAN_CODES = frozenset({402, 403, 406})
LOGGED_OUT = 401
FINAL_CODES = BAN_CODES | {LOGGED_OUT}
RESTART_TASK = "instances.restart_instance"
# A restart heals a dead socket; the check believes an `open` read again only this long after asking for one.
RESTART_SETTLE = timedelta(seconds=30)
S = Instance.State


def _set_connected(chip_id: int, connected: bool, now: datetime) -> None:
    # Plain field update: never touches the protected status column, so it cannot race a transition.
    if Chip.objects.filter(pk=chip_id).exclude(is_connected=connected).update(
            is_connected=connected, connection_changed_at=now, updated_at=now) and connected:
        pool_room_changed()  # a chip back in the pool: this process's routing stops taking it for full


# An open session with nothing left to clear (what an "open" report changes otherwise), and one that is connecting
# (what a "connecting" report sets): each written once, for the conditional writes and the read that spares them.
OPEN_AND_CLEAN = Q(state=S.OPEN, connecting_since=None, dead_socket_at=None, gone_at=None, closing_by_us_at=None)
CONNECTING = Q(state=S.CONNECTING)


def _report_statement(key: None, *, now: datetime, instance_id: int) -> tuple[str, list]:
    waiting = InstanceLink.objects.filter(instance_id=OuterRef("pk"), ended_at__isnull=True)
    query = (Instance.objects.filter(pk=instance_id).order_by()
             .annotate(settled=ExpressionWrapper(OPEN_AND_CLEAN & Q(chip__is_connected=True) & ~Exists(waiting),
                                                 output_field=BooleanField()),
                       connecting=ExpressionWrapper(CONNECTING, output_field=BooleanField()))
             .values("settled", "connecting")).query
    return query.get_compiler(connection=connection).as_sql()


_REPORT = StatementCache(_report_statement)


def session_report_is_news(instance_id: int, state: str, now: datetime) -> bool:
    """Would a reported `state` change anything for the instance? False for an "open" of a session that is open,
    clean and connected with no link waiting on it, and for a "connecting" of one that is connecting: the webhook
    then loads nothing more and opens no transaction (a stuck instance says "connecting" twice a second, and every
    healthy one repeats "open"). One compiled read; the writes below stay conditional, this only spares them."""
    if state not in ("open", "connecting"):
        return True
    rows, _names = _REPORT.fetch(None, now=now, instance_id=instance_id)
    if not rows:
        return True  # gone meanwhile: the caller finds out
    settled, connecting = rows[0]
    return not (settled if state == "open" else connecting)


def session_opened(instance: Instance, now: datetime) -> None:
    """The session is open: the chip may route again (a re-link, a restart that healed a dead socket)."""
    changed = Instance.objects.filter(pk=instance.pk).exclude(OPEN_AND_CLEAN).update(
        state=S.OPEN, connecting_since=None, dead_socket_at=None, restart_requests=0, gone_at=None,
        closing_by_us_at=None, qr_code="", qr_image="", updated_at=now,
        state_changed_at=now if instance.state != S.OPEN else F("state_changed_at"),
    )
    if changed:
        logger.info("instance %s: %s → open", instance.name, instance.state)
        instance.state = S.OPEN
    _set_connected(instance.chip_id, True, now)
    # Every link to the session is over: it is linked, and the chip goes on where its lifecycle says.
    if InstanceLink.objects.filter(instance_id=instance.pk, ended_at__isnull=True).update(
            ended_at=now, end_reason=InstanceLink.End.LINKED, updated_at=now):
        from instances.linking import link_completed

        link_completed(instance, now)


def session_connecting(instance: Instance, now: datetime) -> None:
    """The session is (re)connecting. One UPDATE that touches no row when it already was: an instance that
    cannot reach WhatsApp sends this twice a second, forever (field notes §8)."""
    Instance.objects.filter(pk=instance.pk).exclude(CONNECTING).update(
        state=S.CONNECTING, state_changed_at=now, connecting_since=Coalesce(F("connecting_since"), now),
        updated_at=now)
    instance.state = S.CONNECTING


def session_state_read(instance: Instance, state: str, now: datetime) -> None:
    """A state the gateway reported for the session without a close code (refused, or a live read)."""
    Instance.objects.filter(pk=instance.pk).exclude(state=state).update(state=state, state_changed_at=now,
                                                                        updated_at=now)
    instance.state = state


def session_closed(instance: Instance, *, code: int | None, now: datetime, at: datetime | None = None,
                   source: str) -> bool:
    """A final close (401 logged out, 402/403/406 banned). Returns False when this close was already applied.

    A ban runs the chip's `ban` transition (bindings released, critical alert). A logout the pool caused (its own
    logout/delete of a retired, released or re-linked chip) is recorded as expected and raises nothing; any other
    401 is a critical alert: the chip needs a new link.
    """
    at = at or now
    if (instance.state == S.CLOSE and instance.last_disconnect_code == code and instance.last_disconnect_at
            and abs(at - instance.last_disconnect_at) < timedelta(minutes=10)):
        return False
    by_us = instance.closed_by_us(now)
    with transaction.atomic():
        Instance.objects.filter(pk=instance.pk).update(
            state=S.CLOSE, state_changed_at=now, last_disconnect_code=code, last_disconnect_at=at,
            connecting_since=None, dead_socket_at=None, qr_code="", qr_image="", updated_at=now)
        instance.state, instance.last_disconnect_code, instance.last_disconnect_at = S.CLOSE, code, at
        _set_connected(instance.chip_id, False, now)
        chip = Chip.objects.get(pk=instance.chip_id)
        if code in BAN_CODES:
            DeliveryEvent.objects.create(chip=chip, kind=DeliveryEvent.Kind.DISCONNECTED, detail=f"close {code}",
                                         occurred_at=now)
            _ban(chip, code, now, source)
        elif code == LOGGED_OUT and by_us:
            logger.info("instance %s: 401 close after our own logout/delete (%s): expected", instance.name, source)
        else:
            DeliveryEvent.objects.create(chip=chip, kind=DeliveryEvent.Kind.DISCONNECTED, detail=f"close {code}",
                                         occurred_at=now)
            alert_raise(kind="logged_out", severity=ChipAlert.Severity.CRITICAL, chip=chip,
                        message=Text("alert.logged_out", chip=chip, code=code),
                        action_taken=Text("action.out_until_linked"))
    return True


def _ban(chip: Chip, code: int | None, now: datetime, source: str) -> None:
    if chip.status in Chip.LIVE_STATES:
        try:
            chip_transition(chip=chip.pk, transition="ban", actor=Actor.webhook(source) if source == "evolution"
                            else Actor.task(source), reason=Text("op.session_closed", code=code))
        except (TransitionNotAllowed, TransitionConflict) as exc:
            logger.warning("could not ban chip %s: %s", chip.pk, exc.message)
            return
    elif chip.status != Chip.Status.BANNED:
        return  # a retired chip's old session: nothing to ban
    released = bindings_release(chip_id=chip.pk, reason=f"chip banned ({code})", now=now)
    alert_raise(kind="banned", severity=ChipAlert.Severity.CRITICAL, chip=chip,
                message=Text("alert.banned", chip=chip, code=code),
                action_taken=Text("action.banned", n=released))


def session_gone(instance: Instance, now: datetime, *, source: str) -> bool:
    """The gateway no longer has the session (a 404, absent from its list, a remove event). Returns False when
    already known. The chip leaves routing at once; unless the pool deleted it itself, a critical alert says so
    and how to get out (re-create and re-link from the chip's page)."""
    changed = Instance.objects.filter(pk=instance.pk).exclude(state=S.GONE).update(
        state=S.GONE, state_changed_at=now, gone_at=now, connecting_since=None, dead_socket_at=None,
        qr_code="", qr_image="", updated_at=now)
    if not changed:
        return False
    instance.state = S.GONE
    _set_connected(instance.chip_id, False, now)
    chip = Chip.objects.get(pk=instance.chip_id)
    if chip.status == Chip.Status.RETIRED or instance.closed_by_us(now):
        logger.info("instance %s is gone (%s): the pool deleted it", instance.name, source)
        return True
    logger.warning("instance %s of chip %s is gone from the gateway (%s)", instance.name, chip.pk, source)
    alert_raise(kind="instance_gone", severity=ChipAlert.Severity.CRITICAL, chip=chip,
                dedup_key=f"instance_gone:{chip.pk}",
                message=Text("alert.instance_gone", name=instance.name, chip=chip),
                action_taken=Text("action.relink_gone"))
    return True


def session_socket_dead(instance: Instance, now: datetime) -> None:
    """A send failed with "Connection Closed" while the session may still report open (#2403): the chip leaves
    routing at once and the gateway is asked to restart the session (after commit, by a task)."""
    with transaction.atomic():
        Instance.objects.filter(pk=instance.pk).update(
            dead_socket_at=Coalesce(F("dead_socket_at"), now), restart_requested_at=now,
            restart_requests=F("restart_requests") + 1, updated_at=now)
        _set_connected(instance.chip_id, False, now)
        transaction.on_commit(lambda: _send(RESTART_TASK, instance.pk), robust=True)
    logger.warning("instance %s: dead socket; out of routing, restart requested", instance.name)


def _send(task: str, *args: object) -> None:
    current_app.send_task(task, args=list(args))


def session_marked_closing(instance: Instance, now: datetime | None = None) -> None:
    """The pool is about to log out or delete this session: the close that follows is ours, not an alarm."""
    now = now or timezone.now()
    Instance.objects.filter(pk=instance.pk).update(closing_by_us_at=now, updated_at=now)
    instance.closing_by_us_at = now


def dead_socket_healed(instance: Instance, now: datetime) -> bool:
    """Whether an `open` read may be believed for a session whose socket was found dead: only once a restart had
    time to take effect."""
    if instance.dead_socket_at is None:
        return True
    return instance.restart_requested_at is not None and now - instance.restart_requested_at >= RESTART_SETTLE


def needs_link(instance: Instance) -> bool:
    """The session cannot come back by itself: logged out, gone, refused."""
    return instance.state in (S.GONE, S.REFUSED) or (instance.state == S.CLOSE and instance.last_disconnect_code
                                                     == LOGGED_OUT)


__all__ = [
    "BAN_CODES", "FINAL_CODES", "LOGGED_OUT", "dead_socket_healed", "needs_link", "session_closed",
    "session_connecting", "session_gone", "session_marked_closing", "session_opened", "session_socket_dead",
    "session_state_read",
]
