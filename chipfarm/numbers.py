"""Numbers by hand (W2 3/7): a number the company already owns, and lines bought by an operator.

Both are pool decisions, recorded as operations with who asked. An own number needs no Salvy purchase: the pool
creates its session on a gateway server and the chip waits in `pending` for a link (instances.linking); declared
warm (an aged number), its warming starts at a later phase, which its history records as the operator's decision.
"""

from __future__ import annotations

import contextlib
import secrets

from django.db import IntegrityError, connection, transaction
from django.utils.translation import gettext as _

from chipfarm.models import OrchestratorOperation, PoolConfiguration
from chipfarm.orchestrator import bought_today
from chips.models import Chip
from chips.services import Actor, chip_transition
from common.exceptions import DomainError, InvalidInput
from common.texts import Text, joined, stored
from instances.phones import normalize_contact
from instances.servers import gateway_for, server_place
from instances.services import instance_register, webhook_config

Op = OrchestratorOperation.Kind
PURCHASE_LOCK = 7_340_200


class BudgetExceeded(DomainError):
    status_code = 409
    code = "budget_exceeded"


def _own_phone(raw: str) -> str:
    try:
        phone = normalize_contact(raw)
    except ValueError as exc:
        raise InvalidInput(_("phone: %(why)s.") % {"why": exc}, field="phone") from None
    if not phone.startswith("+55"):
        raise InvalidInput(_("phone: the pool takes Brazilian numbers (+55)."), field="phone")
    if Chip.objects.exclude(status=Chip.Status.RETIRED).filter(phone=phone).exists():
        raise InvalidInput(_("phone: %(phone)s is already in the pool.") % {"phone": phone}, field="phone")
    return phone


def chip_add_own(*, phone: str, warm: bool, actor: Actor) -> Chip:
    """Add a number the company owns: its session on the gateway server with the most room, then the chip in
    `pending`, waiting for a link. Invalid or duplicate numbers raise InvalidInput (field "phone") and write
    nothing; a gateway that refuses writes nothing either."""
    phone = _own_phone(phone)
    name = f"own-{phone.lstrip('+')}-{secrets.token_hex(2)}"
    server = server_place()
    with gateway_for(server) as gw:
        gw.create_instance(name, number=phone.lstrip("+"), webhook=webhook_config(gw))
        try:
            with transaction.atomic():
                chip = Chip.objects.create(area_code=phone[3:5], phone=phone, source=Chip.Source.OWN,
                                           declared_warm=warm, instance_name=name)
                instance_register(chip=chip, name=name, server=server)
                reason = joined([Text("op.own_number", who=actor.id or actor.kind),
                                 *([Text("op.declared_warm")] if warm else [])])
                chip = chip_transition(chip=chip, transition="provisioned", actor=actor, reason=reason)
                OrchestratorOperation.objects.create(kind=Op.OWN_NUMBER, chip=chip,
                                                     actor=(actor.id or actor.kind)[:150],
                                                     **stored("reason", reason, 300), metadata={"declared_warm": warm})
        except BaseException as exc:  # nothing written: the session made for it goes too (best effort)
            with contextlib.suppress(Exception):
                gw.delete(name)
            if isinstance(exc, IntegrityError):  # the same number added at the same moment by someone else
                raise InvalidInput(_("phone: %(phone)s is already in the pool.") % {"phone": phone},
                                   field="phone") from None
            raise
    return chip


def lines_buy(*, count: int, area_code: str | None, actor: Actor) -> list[Chip]:
    """Buy `count` lines by hand (in `area_code`, default the pool's), within the daily budget that the automatic
    provisioning shares. Over the budget: BudgetExceeded saying how many are left today."""
    from django.utils import timezone

    config = PoolConfiguration.load()
    area = area_code or config.default_area_code
    if not (len(area) == 2 and area.isdigit() and area[0] != "0"):
        raise InvalidInput(_("area_code: a Brazilian area code has two digits, e.g. 11."), field="area_code")
    if count < 1:
        raise InvalidInput(_("count: buy at least one line."), field="count")
    with transaction.atomic():
        # Serialised with other purchases: two requests cannot both spend the last of the budget.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PURCHASE_LOCK])
        left = max(0, config.provision_daily_budget - bought_today(timezone.now()))
        if count > left:
            raise BudgetExceeded(_("The daily budget allows %(left)d more line(s) today; %(count)d asked.")
                                 % {"left": left, "count": count}, remaining=left)
        from chipfarm.provisioning import chips_start_provisioning

        who = actor.id or actor.kind
        return chips_start_provisioning(count=count, area_code=area, kind=Op.MANUAL_PROVISION, actor=who,
                                        reason=Text("op.bought_by_hand", who=who))
