"""Domain texts stored in rows (reasons, alert messages): a code plus parameters, rendered in the reader's language.

A row keeps three things per text: the plain English rendering (`reason`, as before: old rows, search, the API's
field), the code (`reason_code`) and the parameters (`reason_params`, JSON). Writers pass a `Text`:

    chip_transition(..., reason=Text("op.trust", trust=86))

`Text` is a `str` whose value is the English rendering, so code that joins, slices or compares reasons keeps working;
`stored("reason", value, 300)` gives the three columns for a create or an update, and `RenderedText("reason")` on the
model renders them in the active language (the admin, the dashboard, Slack). A row without a code (an operator's own
words, rows from before the codes) shows its plain text, translated when it is one of the fixed phrases below.

Parameters are JSON: numbers and strings as they are, a nested `Text` as {"code", "params"} (rendered in turn), a list
as its items rendered and joined with "; ". Every template lives in TEMPLATES, once: callers name codes.
"""

from __future__ import annotations

import re
from typing import Any

from django.utils import translation
from django.utils.translation import gettext, gettext_lazy
from django.utils.translation import gettext_noop as _

LIST = "list"  # {"items": [...]}: the items rendered and joined with "; " (no template)
CHOICE = "choice"  # {"model": "app.Model", "field": ..., "value": ...}: that field's choice label (no template)

TEMPLATES: dict[str, str] = {
    # --- the pool's health (chipfarm.pool)
    "pool.active_low": _("active %(n)d < production minimum %(min)d"),
    "pool.ready_low": _("ready %(n)d < ready minimum %(min)d"),
    "pool.warming_low": _("warming %(n)d < half the warming buffer %(buffer)d"),
    # --- the orchestrator's reasons (operations and transitions)
    "op.early_warning_stop": _("early warning stop: %(reasons)s"),
    "op.low_trust": _("trust %(trust)s < %(threshold)s"),
    "op.disconnected": _("disconnected for more than %(minutes)s min"),
    "op.no_replacement": _("%(reason)s; no ready chip to replace it"),
    "op.replaces": _("replaces chip %(chip)s (%(reason)s)"),
    "op.replacement_of": _("replacement of chip %(chip)s"),
    "op.bindings_moved": _("%(n)s bindings moved"),
    "op.cooling_over_until": _("cooling over (until %(until)s)"),
    "op.cooling_over": _("cooling over"),
    "op.warming_complete": _("warming complete"),
    "op.ready_by_trust": _("trust %(trust)s >= %(min)s, %(days)s days"),
    "op.below_production_min": _("active below production minimum %(min)s"),
    "op.trust": _("trust %(trust)s"),
    "op.warming_buffer_short": _("warming buffer short"),
    "op.reserve_targets": _("ready_min %(ready_before)s → %(ready_after)s, warmup_buffer %(buffer_before)s → "
                            "%(buffer_after)s: %(losses)s lost a week, lead time %(lead)s days"),
    "op.line_bought": _("line %(line)s bought, instance %(name)s created"),
    "op.provisioning_failed": _("provisioning failed: %(detail)s"),
    "op.no_stock": _("no stock for area code %(ddd)s"),
    "op.error": _("%(kind)s: %(error)s"),
    "op.stuck_provisioning": _("stuck in provisioning for 15 minutes"),
    "op.line_cancelled": _("line cancelled: %(reason)s"),
    "op.no_live_job": _("activating without a live activation job"),
    "op.retried_by_operator": _("retried by an operator"),
    "op.session_closed": _("the gateway closed the session with final code %(code)s"),
    "op.own_number": _("own number added by %(who)s"),
    "op.declared_warm": _("declared warm: its warming starts at a later phase"),
    "op.bought_by_hand": _("bought by hand by %(who)s"),
    "op.cancelled_from_pipeline": _("cancelled from the pipeline by %(who)s"),
    "op.bulk_admin": _("bulk action from the admin"),
    "op.from_admin": _("from the admin"),
    "op.demo_walk": _("demo walk"),
    "op.manual_provision_command": _("manual: provision_chips"),
    # --- the early warning (chipfarm.brain)
    "brain.rest": _("early warning rest %(n)s (%(minutes)s min): %(reasons)s"),
    "brain.rest_again": _("needs a rest again after %(n)d rests in %(days)d days"),
    "brain.clear": _("figures back under the thresholds"),
    "brain.entered_production": _("entered production"),
    "brain.first_step": _("entered production: first step"),
    "brain.clean_days": _("%(days)d clean days at its step; delivered %(share)s%% in the last 24 h"),
    "brain.rested_at": _("rested at %(at)s"),
    # --- early-warning reasons (instances.health_signals.assess)
    "health.level": _("%(level)s: %(reason)s"),
    "health.last_hour": _("last hour"),
    "health.last_day": _("last 24 h"),
    "health.failed": _("failed %(share)s%% of %(n)d sends in the %(window)s (watch %(w)d%%, rest %(r)d%%, "
                       "stop %(s)d%%)"),
    "health.delivered": _("delivered %(share)s%% of %(n)d sends in the last 24 h (watch below %(w)d%%, rest below "
                          "%(r)d%%, stop below %(s)d%%)"),
    "health.too_few": _("%(reason)s (only %(n)d: a rest needs %(m)d)"),
    "health.replies": _("reply rate %(rate)s%% of %(n)d sends in the last 24 h (watch below %(w)d%%)"),
    "health.restrictions": _("%(n)d reach-out restriction(s) in the last 24 h (watch %(w)d, rest %(r)d)"),
    "health.restricted": _("restricted from new contacts now"),
    "level.ok": _("ok"),
    "level.watch": _("watch"),
    "level.rest": _("rest"),
    "level.stop": _("stop"),
    # --- alert messages (ChipAlert.message)
    "alert.step_failed": _("Orchestrator step %(step)s failed: %(error)s"),
    "alert.no_ready_chip": _("Chip %(chip)s was degraded (%(reason)s) and no ready chip can replace it."),
    "alert.provision_budget": _("The daily provisioning budget (%(budget)d) is spent; "
                                "the warming buffer is short by %(deficit)d."),
    "alert.pool_critical": _("The pool is critical: %(reasons)s."),
    "alert.early_warning_watch": _("Chip %(chip)s is getting into trouble: %(reasons)s."),
    "alert.early_warning_rest": _("Chip %(chip)s rests: %(reasons)s."),
    "alert.early_warning_stop": _("Chip %(chip)s is stopped: %(reasons)s."),
    "alert.provisioning_failed": _("Provisioning chip %(chip)s failed after retries: %(detail)s."),
    "alert.release_failed": _("Retired chip %(chip)s could not be fully released after %(n)d tries: %(left)s."),
    "alert.release_left_instance": _("instance %(name)s (%(error)s)"),
    "alert.release_left_line": _("Salvy line %(line)s (%(error)s)"),
    "alert.no_sms_code": _("Chip %(chip)s has waited %(minutes)d minutes for its WhatsApp code: none by "
                           "webhook, none in the line's inbox at Salvy."),
    "alert.activation_orphaned": _("Chip %(chip)s was activating with no live activation job."),
    "alert.logged_out": _("Chip %(chip)s was logged out of WhatsApp (%(code)s): the device was unlinked. "
                          "It needs a new link (the Link button on its page)."),
    "alert.banned": _("Chip %(chip)s was banned by WhatsApp (close code %(code)s)."),
    "alert.instance_gone": _("The gateway no longer has instance %(name)s of chip %(chip)s (deleted outside the pool, "
                             "or the gateway lost its database)."),
    "alert.qr_limit": _("Instance %(name)s stopped offering QR codes (%(message)s): nobody linked it in time."),
    "alert.restricted_coded": _("Chip %(chip)s hit WhatsApp's reach-out restriction (code 463 on a message to "
                                "%(seen)s)."),
    "alert.restricted": _("Chip %(chip)s: first messages to %(n)d new contacts came back as errors within %(hours)d h "
                          "(%(seen)s) — WhatsApp's reach-out restriction."),
    "alert.gateway_server_down": _("Gateway server %(server)s (%(url)s) does not answer: %(error)s."),
    "alert.stuck_link": _("Instance %(name)s has been trying to connect for %(minutes)d minutes without opening "
                          "(WhatsApp unreachable, or a reconnect loop)."),
    "alert.activation_registered_moved": _("The activator registered chip %(chip)s on WhatsApp (job %(job)d), but the "
                                           "chip is %(status)s now: check the number."),
    "alert.activation_failed": _("Activation of chip %(chip)s failed at step %(step)s (attempt %(attempt)d of %(max)d, "
                                 "job %(job)d). Screenshot: %(shot)s. %(message)s"),
    "alert.none": _("none"),
    "alert.activation_gave_up": _("Chip %(chip)s failed activation %(attempts)d times and was retired; its Salvy line "
                                  "is being cancelled (technical-issues)."),
    "alert.activator_unauthorized": _("The chip activator refused our API key (HTTP %(status)s): check "
                                      "CHIP_ACTIVATOR_API_KEY. Submissions are paused; no activation attempt was "
                                      "counted."),
    "alert.endpoint_disabled": _("Webhook endpoint %(url)s was disabled: %(reason)s"),
    # --- what was done about an alert (ChipAlert.action_taken)
    "action.retire_if_stuck": _("will be retired if still provisioning after 15 minutes"),
    "action.clean_by_hand": _("clean it up by hand on the gateway / in Salvy"),
    "action.watching": _("watching; it rests at the rest thresholds"),
    "action.cooling": _("cooling for %(minutes)d min (rest %(n)d in %(days)d days), until %(until)s"),
    "action.degraded_replaced": _("degraded and replaced from the ready reserve"),
    "action.resolved_figures": _("resolved: its figures are back under the thresholds"),
    "action.degraded_no_replacement": _("degraded without replacement"),
    "action.promoting": _("promoting ready chips and provisioning where possible"),
    "action.resolved_pool": _("resolved: the pool left critical"),
    "action.retry_or_cancel": _("retry (read the inbox again) or cancel (retire, line cancelled) from the chip list"),
    "action.back_to_pending": _("back to pending; the next WhatsApp code starts a new activation"),
    "action.out_until_linked": _("out of routing until it is linked again"),
    "action.banned": _("chip marked banned; %(n)d contact bindings released"),
    "action.relink_gone": _("out of routing; re-create and re-link it with the Link button on the chip's page"),
    "action.ask_new_link": _("ask for a new link from the chip's page"),
    "action.no_new_contacts": _("no new contacts until %(until)s; its current contacts still route to it"),
    "action.resolved_server": _("resolved: the server answers again"),
    "action.server_down": _("its %(n)d chips are out of routing until it answers again"),
    "action.stuck_link": _("out of routing while it is not open; re-link it if it does not recover"),
    "action.activator_paused": _("submissions paused for %(minutes)d minutes, then tried again"),
    "action.back_to_pending_code": _("chip back to pending, waiting for a new code"),
    "action.retired_cancel": _("chip retired; Salvy line cancel requested"),
    # --- activation
    "act.job_succeeded": _("activation job %(job)s succeeded in %(seconds)s s"),
    "act.job_failed": _("activation job %(job)s %(status)s at step %(step)s"),
    "act.gave_up": _("activation failed %(n)s times"),
    # --- the allowance (ChipCapacity.allowance_reason)
    "allowance.restriction": _("reach-out restriction at %(at)s"),
    "allowance.not_in_production": _("not in production"),
    # --- why a contact moved chips (ContactBinding.move_reason, written as plain English by the routing statement)
    "route.binding_expired": _("binding expired"),
    "route.circuit_open": _("send circuit open"),
    "route.at_cap": _("chip at its cap"),
    "route.chip_banned": _("chip banned (%(code)s)"),
    # --- Salvy's cancel reasons (chipfarm.provisioning.release_reason)
    "release.whatsapp-ban": _("whatsapp-ban"),
    "release.unnecessary": _("unnecessary"),
    "release.technical-issues": _("technical-issues"),
}

# Fixed phrases old rows (and writers outside the codes, such as the routing statement) store as plain English.
_PHRASES = {text: code for code, text in TEMPLATES.items() if "%(" not in text}
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def _english_pattern(template: str) -> re.Pattern:
    parts = _PLACEHOLDER.split(template.replace("%%", "%"))  # literal, name, literal, name, ...
    body = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+?)" for i, part in enumerate(parts))
    return re.compile(body + r"\Z", re.S)


# Templates with parameters, to read a plain English text back as code + parameters (rows without a code).
_PATTERNS = [(code, _english_pattern(text)) for code, text in TEMPLATES.items()
             if "%(" in text and len(_PLACEHOLDER.findall(text)) == len(set(_PLACEHOLDER.findall(text)))]


def _parsed(plain: str) -> tuple[str, dict] | None:
    for code, pattern in _PATTERNS:
        if (match := pattern.match(plain)) is not None:
            return code, {k: int(v) if v.isdigit() else v for k, v in match.groupdict().items()}
    return None


def _param(value: Any) -> Any:
    if isinstance(value, Text):
        return {"code": value.code, "params": value.params}
    if isinstance(value, (list, tuple)):
        return [_param(v) for v in value]
    if isinstance(value, dict):
        return {k: _param(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _rendered(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"code", "params"}:
        return render(value["code"], value["params"])
    if isinstance(value, list):
        return "; ".join(str(_rendered(v)) for v in value)
    return value


def render(code: str, params: dict | None = None, fallback: str = "") -> str:
    """The text in the active language; the plain `fallback` (translated when it is a fixed phrase) without a code."""
    if code == LIST:
        return _rendered(list((params or {}).get("items") or []))
    if code == CHOICE:
        return _choice_label(**(params or {}))
    template = TEMPLATES.get(code or "")
    if template is None:
        if phrase := _PHRASES.get(fallback):
            return gettext(TEMPLATES[phrase])
        if fallback and (parsed := _parsed(fallback)) is not None:
            try:
                return gettext(TEMPLATES[parsed[0]]) % parsed[1]
            except (TypeError, ValueError):  # a %d parameter read back as text
                return fallback
        return fallback
    try:
        return gettext(template) % {k: _rendered(v) for k, v in (params or {}).items()}
    except (KeyError, TypeError, ValueError):
        return fallback or code


def _choice_label(model: str = "", field: str = "", value: Any = None) -> str:
    from django.apps import apps

    try:
        choices = dict(apps.get_model(model)._meta.get_field(field).flatchoices)
    except (LookupError, ValueError):
        return str(value)
    return str(choices.get(value, value))


def choice(model: str, field: str, value: Any) -> Text:
    """A field's stored value as its choice label: `choice("chips.Chip", "status", "warming")`."""
    return Text(CHOICE, model=model, field=field, value=value)


class Text(str):
    """A registered code and its parameters; as a `str`, its English rendering."""

    code: str
    params: dict

    def __new__(cls, code: str, /, **params: Any) -> Text:
        if code not in TEMPLATES and code not in (LIST, CHOICE):
            raise KeyError(f"unknown text code {code!r}: add it to common.texts.TEMPLATES")
        stored_params = {k: _param(v) for k, v in params.items()}
        with translation.override("en"):
            english = render(code, stored_params)
        obj = super().__new__(cls, english)
        obj.code, obj.params = code, stored_params
        return obj

    def __reduce__(self):  # pickles (Celery, cache) as what it is
        return (_rebuild, (self.code, self.params))

    def rendered(self) -> str:
        """In the active language."""
        return render(self.code, self.params, str.__str__(self))

    __str__ = rendered  # templates, the admin, %s and f-strings show it in the reader's language


def _rebuild(code: str, params: dict) -> Text:
    obj = str.__new__(Text, render_english(code, params))
    obj.code, obj.params = code, params
    return obj


def from_row(code: str, params: dict | None, plain: str) -> Text | str:
    """A stored text back as a `Text` (to nest it in another, to show it later), or its plain text when it has no
    code (a `Text` still when the plain text is one of the fixed phrases)."""
    if code:
        return _rebuild(code, params or {})
    return _rebuild(_PHRASES[plain], {}) if plain in _PHRASES else plain


def render_english(code: str, params: dict) -> str:
    with translation.override("en"):
        return render(code, params)


def joined(items: list) -> Text | str:
    """Texts joined with "; ", kept as codes (an empty list: "")."""
    return Text(LIST, items=list(items)) if items else ""


def stored(field: str, value: str, max_length: int) -> dict[str, Any]:
    """The row's columns for a text: the plain English (cut to `max_length`), its code and parameters."""
    if isinstance(value, Text):
        return {field: str.__str__(value)[:max_length], f"{field}_code": value.code, f"{field}_params": value.params}
    return {field: (value or "")[:max_length], f"{field}_code": "", f"{field}_params": {}}


def text_fields() -> tuple:
    """The code and parameters columns that go with a plain text column: `reason_code, reason_params = text_fields()`.
    """
    from django.db import models

    return (models.CharField(gettext_lazy("text code"), max_length=60, blank=True, default="", editable=False),
            models.JSONField(gettext_lazy("text parameters"), default=dict, blank=True, editable=False))


class RenderedText:
    """`reason_text = RenderedText("reason")`: the row's text in the active language."""

    def __init__(self, field: str):
        self.field = field
        self.admin_order_field = field
        self.owner: type | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner = owner

    @property
    def short_description(self) -> Any:  # the admin's column header: the plain field's verbose name
        return self.owner._meta.get_field(self.field).verbose_name if self.owner else self.field

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return render(getattr(obj, f"{self.field}_code", ""), getattr(obj, f"{self.field}_params", None),
                      getattr(obj, self.field) or "")


def translated_phrase(text: str) -> str:
    """A plain stored phrase in the active language when it is one of the fixed ones; else as it is."""
    return render("", None, text) if text else text


__all__ = ["TEMPLATES", "RenderedText", "Text", "gettext", "joined", "render", "stored", "text_fields",
           "translated_phrase"]
