"""The Slack slash command (``POST /webhooks/slack/commands``): pause, resume and look at the pool from Slack.

The planning documents' runbook stops everything from Slack ("pausar … motivo: emergência"). Slack posts the
command form-encoded and signs it with the app's signing secret (`SLACK_SIGNING_SECRET`):
``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{X-Slack-Request-Timestamp}:{raw body}">``. The signature and its
5-minute window are checked on the raw bytes before anything is parsed or written (`slack_request_verify`).

Whoever runs a command acts as the Django user their Slack account is linked to (`SlackIdentity`, in the admin),
and only while that user is active and in the Operators group: the pause records ``slack:<username>`` as its
actor, like the admin records the username and the API ``api:<key>``. Everyone else is refused and nothing
changes.

Answers are Portuguese whatever the request's language: the operators read them in the incident channel.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from chipfarm.models import SlackIdentity
from chipfarm.pool import pool_status
from chips.models import Chip
from instances.models import RoutingPolicy
from instances.services import sending_pause, sending_resume

logger = logging.getLogger(__name__)

SIGNATURE_VERSION = "v0"
TOLERANCE_SECONDS = 5 * 60
SLACK_LANGUAGE = "pt-br"

# The verbs, Portuguese first (the runbook's words); English and a few spellings are accepted too.
PAUSE = {"pausar", "pause", "parar"}
RESUME = {"retomar", "resume", "continuar"}
STATUS = {"status", "estado", "situação", "situacao"}

# "pausar motivo: emergência", "pausar julia motivo: emergência": the reason is what follows "motivo:".
_REASON_LABEL = re.compile(r"\b(?:motivo|reason)\s*:\s*", re.IGNORECASE)

# `status` shows active, ready and warming against their targets, then these (retired chips only accumulate).
OTHER_STATES = [Chip.Status.COOLING, Chip.Status.DEGRADED, Chip.Status.PROVISIONING, Chip.Status.PENDING,
                Chip.Status.ACTIVATING, Chip.Status.BANNED]


class SlackSignatureError(Exception):
    """The request was not signed with our signing secret, or is too old (a replay)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def slack_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """``v0=<hex>``: what Slack puts in `X-Slack-Signature` for this timestamp and raw body."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slack_request_verify(*, secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
    """Return if Slack signed `body` with `secret` less than 5 minutes ago; raise SlackSignatureError otherwise."""
    if not secret:
        raise ValueError("SLACK_SIGNING_SECRET is not set")
    timestamp = (headers.get("X-Slack-Request-Timestamp") or "").strip()
    signature = (headers.get("X-Slack-Signature") or "").strip()
    if not timestamp:
        raise SlackSignatureError("missing X-Slack-Request-Timestamp header")
    if not signature:
        raise SlackSignatureError("missing X-Slack-Signature header")
    # Unix seconds; a length no clock reaches is refused before int() meets a 5,000-digit number.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise SlackSignatureError("invalid timestamp header")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > TOLERANCE_SECONDS:
        raise SlackSignatureError("stale timestamp")
    expected = slack_signature(secret=secret, timestamp=timestamp, body=body)
    # Bytes on both sides: compare_digest refuses non-ASCII str, and a header may hold anything.
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape")):
        raise SlackSignatureError("no matching signature")


@dataclass(frozen=True)
class SlackCommand:
    """The fields of Slack's slash-command form this module uses."""

    command: str          # "/chipfarm", as the Slack app names it
    text: str             # what follows the command: "pausar incidente 42"
    user_id: str          # the Slack member id: who is acting
    user_name: str = ""
    team_id: str = ""
    channel_name: str = ""

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> SlackCommand:
        return cls(command=(form.get("command") or "").strip() or "/chipfarm", text=(form.get("text") or "").strip(),
                   user_id=(form.get("user_id") or "").strip(), user_name=(form.get("user_name") or "").strip(),
                   team_id=(form.get("team_id") or "").strip(),
                   channel_name=(form.get("channel_name") or "").strip())


@dataclass(frozen=True)
class SlackReply:
    text: str
    in_channel: bool = False  # the whole channel sees pauses and resumes; everything else is for the user only
    changed: bool = False

    def as_dict(self) -> dict[str, str]:
        return {"response_type": "in_channel" if self.in_channel else "ephemeral", "text": self.text}


def slack_command_run(*, command: SlackCommand) -> SlackReply:
    """Run one slash command as the operator linked to its Slack user, and answer in Portuguese."""
    with translation.override(SLACK_LANGUAGE):
        return _run(command)


def _run(command: SlackCommand) -> SlackReply:
    identity = (SlackIdentity.objects.acting().select_related("user").filter(slack_user_id=command.user_id).first()
                if command.user_id else None)
    if identity is None:
        logger.warning("slack command refused: %s (%s, team %s) is not linked to an active operator",
                       command.user_id or "?", command.user_name or "?", command.team_id or "?")
        return SlackReply(_("Sorry, you may not run chipfarm commands: your Slack account is not linked to an "
                            "active operator. Ask an administrator to link it in the admin (Slack identities)."))
    actor = f"slack:{identity.user.get_username()}"
    verb, rest = ([*command.text.split(None, 1), ""])[:2] if command.text else ("", "")
    verb = verb.lower()
    if verb in PAUSE:
        return _pause(command, actor, rest)
    if verb in RESUME:
        return _resume(command, actor)
    if verb in STATUS:
        return SlackReply(_status_text())
    return SlackReply(_help_text(command))


def _pause(command: SlackCommand, actor: str, rest: str) -> SlackReply:
    label = _REASON_LABEL.search(rest)
    reason = (rest[label.end():] if label else rest).strip()
    if not reason:
        example = _("emergency")
        return SlackReply(_("Give a reason to pause sending, for example: %(example)s")
                          % {"example": f"`{command.command} pausar motivo: {example}`"})
    current = RoutingPolicy.objects.filter(pk=1).first()
    if current is not None and current.is_paused:
        return SlackReply(_("Sending is already paused by %(by)s: %(reason)s. Nothing changed.")
                          % {"by": current.paused_by or "?", "reason": current.paused_reason or "?"})
    sending_pause(reason=reason, by=actor)
    logger.warning("sending paused from Slack by %s (%s): %s", actor, command.user_id, reason)
    return SlackReply(_("Sending is PAUSED by %(actor)s: %(reason)s. Every route and send is refused until "
                        "someone runs %(resume)s.") % {"actor": actor, "reason": reason,
                                                      "resume": f"`{command.command} retomar`"},
                      in_channel=True, changed=True)


def _resume(command: SlackCommand, actor: str) -> SlackReply:
    policy = RoutingPolicy.objects.filter(pk=1).first()
    if policy is None or not policy.is_paused:
        return SlackReply(_("Sending was not paused; nothing changed."))
    sending_resume(by=actor)
    logger.warning("sending resumed from Slack by %s (%s)", actor, command.user_id)
    return SlackReply(_("Sending resumed by %(actor)s (it was paused by %(by)s: %(reason)s).")
                      % {"actor": actor, "by": policy.paused_by or "?", "reason": policy.paused_reason or "?"},
                      in_channel=True, changed=True)


def _health_label(health: str) -> str:
    return {"healthy": _("healthy"), "attention": _("attention"), "critical": _("critical")}.get(health, health)


def _status_text() -> str:
    status = pool_status()
    policy = RoutingPolicy.objects.filter(pk=1).first() or RoutingPolicy()
    lines = [_("*Pool: %(health)s*") % {"health": _health_label(status.health)}]
    lines += [f"• {reason}" for reason in status.reasons]
    targets = status.targets
    lines.append(_("Active %(active)d (target %(min)d–%(max)d) · ready %(ready)d (minimum %(ready_min)d) · "
                   "warming %(warming)d (buffer %(buffer)d, %(pipeline)d on the way)")
                 % {"active": status.counts[Chip.Status.ACTIVE], "min": targets["production_min"],
                    "max": targets["production_max"], "ready": status.counts[Chip.Status.READY],
                    "ready_min": targets["ready_min"], "warming": status.counts[Chip.Status.WARMING],
                    "buffer": targets["warmup_buffer"], "pipeline": status.pipeline})
    lines.append(" · ".join(f"{state.label}: {status.counts[state.value]}" for state in OTHER_STATES))
    if policy.is_paused:
        since = timezone.localtime(policy.paused_at, ZoneInfo(settings.BUSINESS_TIMEZONE)) if policy.paused_at else None
        lines.append(_("Sending is PAUSED since %(at)s by %(by)s: %(reason)s")
                     % {"at": f"{since:%d/%m %H:%M}" if since else "?", "by": policy.paused_by or "?",
                        "reason": policy.paused_reason or "?"})
    else:
        lines.append(_("Sending is enabled."))
    return "\n".join(lines)


def _help_text(command: SlackCommand) -> str:
    name = command.command
    return "\n".join([
        _("chipfarm commands:"),
        _("`%(command)s pausar <reason>`: pause all sending (also: `%(command)s pausar motivo: <reason>`)")
        % {"command": name},
        _("`%(command)s retomar`: resume sending") % {"command": name},
        _("`%(command)s status`: the pool's counts and health, and whether sending is paused") % {"command": name},
    ])
