"""Every admin page an operator opens, rendered in pt-BR over a populated demo pool, reads in Portuguese.

Two nets over the visible text of each page (tags, scripts and styles stripped): a curated list of the English words
operators reported (issue W2 6/7) and generic developer English, and every catalogue message of four words or more
whose English appears verbatim while its translation differs (a string that missed `gettext`, or a stored text
shown without `common.texts`).
"""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils import timezone, translation

from chipfarm.models import ChipHealth, OrchestratorOperation, PoolConfiguration, PoolSnapshot
from chips.models import Chip
from chips.services import alert_raise, chip_transition
from common.texts import Text, stored
from instances.health_signals import ChipFigures, assess
from instances.models import ContactBinding, InstanceLink
from tests.chipfarm.test_admin_permissions import populate
from tests.factories import chip_in_state
from tests.test_i18n import PLACEHOLDER, PO, parse_po

pytestmark = pytest.mark.django_db
S = Chip.Status
PT = {"headers": {"Accept-Language": "pt-BR,pt;q=0.9"}}
DASHBOARD = "/admin/chipfarm/poolconfiguration/dashboard/"

# Words of the report, and developer English in general: none may be visible on a pt-BR page.
ENGLISH = [
    "healthy", "attention", "production", "ready", "warming", "in pipeline", "pipeline", "warming buffer",
    "buffer short", "trust", "line cancelled", "unnecessary", "replace", "promote_ready", "promote_to_ready",
    "promote_to_active", "logged_out", "no_ready_chip", "pool_critical", "early_warning", "Activation",
    "Instances", "Periodic tasks", "Target chip", "Previous chip", "Acknowledged by", "activation #",
    "succeeded", "pending", "Cannot", "guard", "Allowed now", "Transition", "rewarm", "degrade", "cool_down",
    "demo walk", "of chip", "cooling over", "watch", "entered production", "bought by hand", "failed",
    "delivered", "Yes", "None", "Unknown", "reason", "message", "age", "progress",
    "disconnects",
]  # ("status" is Portuguese too.)
ENGLISH_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in ENGLISH) + r")\b", re.IGNORECASE)
# Visible text that is data, not words of ours: user names, the demo's instance names, machine codes in JSON.
# Dotted names are code: task names (celery-beat's task list), event types (message.received).
ALLOWED = re.compile(r"chipfarm-\d+|chip-\d+|own-\d+|https?://\S+|<unknown>|\b[a-z_]+(\.[a-z_]+)+\b")


def visible_text(page: str) -> str:
    page = re.sub(r"<(script|style|template)\b.*?</\1>", " ", page, flags=re.S | re.I)
    page = re.sub(r"<!--.*?-->", " ", page, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    return ALLOWED.sub(" ", re.sub(r"\s+", " ", text))


def english_words(text: str) -> list[str]:
    return sorted({m.group(0) for m in ENGLISH_RE.finditer(text)})


def _catalogue_patterns() -> list[tuple[str, re.Pattern]]:
    """Catalogue messages of 4+ literal words whose pt-BR differs, as regexes over visible text."""
    patterns = []
    for entry in parse_po(PO):
        if not entry.msgid or entry.msgid_plural or entry.msgstr.get("") == entry.msgid:
            continue
        literal = PLACEHOLDER.sub(" ", entry.msgid.replace("%%", "%"))
        if len(re.findall(r"[A-Za-z]{2,}", literal)) < 4:
            continue
        parts = [re.escape(re.sub(r"\s+", " ", p)) for p in PLACEHOLDER.split(entry.msgid.replace("%%", "%"))]
        patterns.append((entry.msgid, re.compile(r".{1,80}?".join(parts).replace(r"\ ", r"\s"))))
    return patterns


CATALOGUE = _catalogue_patterns()


def untranslated_messages(text: str) -> list[str]:
    return [msgid for msgid, pattern in CATALOGUE if pattern.search(text)]


def problems(text: str) -> list[str]:
    return [*english_words(text), *(f"msgid {m!r}" for m in untranslated_messages(text))]


# --- the demo pool -----------------------------------------------------------------------------------------

@pytest.fixture
def demo_pool(settings, fake_slack):
    """Chips in every state; alerts of each kind the pool raises; operations and history with coded reasons;
    bindings, messages, delivery events, warming records, endpoints and deliveries, snapshots, health."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.LANGUAGE_CODE = "pt-br"  # production's default: what the tasks write (Slack texts) is Portuguese
    PoolConfiguration.defaults().save()
    populate("1")
    chips = {status: chip_in_state(status=status, area_code="61") for status in S}
    active, ready = chips[S.ACTIVE], chips[S.READY]
    chip_transition(chip=chips[S.DEGRADED].pk, transition="rewarm", actor=_system(), reason=Text("op.from_admin"))
    figures = ChipFigures(chip_id=active.pk)
    assessment = assess(figures)
    reasons = [Text("health.level", level=Text("level.watch"), reason=Text("health.restricted"))]
    ChipHealth.objects.create(chip=active, level="watch", since=timezone.now(), figures=figures.as_dict(),
                              reasons=assessment.reasons or reasons)
    for kind, code, params in [
        ("auto_provision", "op.warming_buffer_short", {}),
        ("promotion_ready_active", "op.trust", {"trust": 86}),
        ("promotion_warming_ready", "op.ready_by_trust", {"trust": 90, "min": 80, "days": 15}),
        ("cancel", "op.line_cancelled", {"reason": Text("release.unnecessary")}),
        ("demotion", "op.no_replacement", {"reason": Text("op.low_trust", trust=20, threshold=40)}),
        ("resume", "op.cooling_over", {}),
        ("health_watch", "list", {"items": reasons}),
    ]:
        OrchestratorOperation.objects.create(kind=kind, chip=active, target_chip=ready,
                                             **stored("reason", Text(code, **params), 300))
    for kind, message, action in [
        ("logged_out", Text("alert.logged_out", chip=active, code=401), Text("action.out_until_linked")),
        ("no_ready_chip", Text("alert.no_ready_chip", chip=active, reason=Text("op.trust", trust=3)),
         Text("action.degraded_no_replacement")),
        ("pool_critical", Text("alert.pool_critical", reasons=[Text("pool.active_low", n=1, min=3)]),
         Text("action.promoting")),
        ("early_warning", Text("alert.early_warning_watch", chip=active, reasons=reasons), Text("action.watching")),
        ("banned", Text("alert.banned", chip=chips[S.BANNED], code=402), Text("action.banned", n=3)),
    ]:
        alert_raise(kind=kind, severity="critical", message=message, action_taken=action, chip=active,
                    dedup_key=f"pt:{kind}")
    ContactBinding.objects.create(contact="+5561988880000", chip=ready, previous_chip=active,
                                  move_reason="binding expired", expires_at=timezone.now() + timedelta(days=7))
    PoolSnapshot.objects.create(taken_at=timezone.now(), counts={"active": 1, "ready": 1, "warming": 2},
                                health="attention")
    return chips


def _system():
    from chips.services import Actor

    return Actor.system("orchestrator")


# --- the pages -----------------------------------------------------------------------------------------------

def admin_urls() -> list[str]:
    urls = [reverse("admin:index"), DASHBOARD]
    for model, model_admin in admin.site._registry.items():
        info = model._meta.app_label, model._meta.model_name
        try:
            urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        except NoReverseMatch:
            continue
        first = model_admin.get_queryset(_request()).order_by("pk").first()
        if first is not None:
            urls.append(reverse("admin:{}_{}_change".format(*info), args=[first.pk]))
    return urls


def _request():
    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = AnonymousUser()
    return request


def test_every_admin_page_reads_in_portuguese(demo_pool, admin_client):
    urls = admin_urls()
    changes = [u for u in urls if u.endswith("/change/")]
    assert len(changes) >= 0.7 * len(admin.site._registry), "most models need a row for their change page"
    for chip in demo_pool.values():  # the chip page in every state
        urls.append(reverse("admin:chips_chip_change", args=[chip.pk]))
    found = {}
    for url in urls:
        response = admin_client.get(url, follow=True, **PT)
        assert response.status_code == 200, url
        assert response["Content-Language"] == "pt-br", url
        if wrong := problems(visible_text(response.content.decode())):
            found[url] = wrong
    assert not found, "English on pt-BR pages:\n" + "\n".join(f"{u}: {w}" for u, w in found.items())


def test_the_dashboard_and_history_show_coded_texts_in_either_language(demo_pool, admin_client):
    page = visible_text(admin_client.get(DASHBOARD, **PT).content.decode())
    assert "reserva em aquecimento insuficiente" in page and "confiança 86" in page
    assert "linha cancelada: desnecessária" in page
    english = visible_text(admin_client.get(DASHBOARD, headers={"Accept-Language": "en"}).content.decode())
    assert "warming buffer short" in english and "line cancelled: unnecessary" in english
    operation = OrchestratorOperation.objects.get(reason_code="op.line_cancelled")
    assert operation.reason == "line cancelled: unnecessary"  # the plain column keeps English for old readers
    with translation.override("pt-br"):
        assert operation.reason_text == "linha cancelada: desnecessária"


def test_health_instances_refuses_in_portuguese(client):
    body = client.get("/health/instances", **PT).json()
    assert body["code"] == "unauthorized" and body["message"] == client.get(
        "/health/chip-activator", **PT).json()["message"]
    assert not english_words(body["message"])


def test_instance_links_are_read_only_in_the_admin(admin_user):
    model_admin = admin.site._registry.get(InstanceLink)
    if model_admin is None:
        return  # not in the admin at all: nothing to edit
    request = _request()
    request.user = admin_user
    assert not model_admin.has_add_permission(request) and not model_admin.has_change_permission(request)


def test_the_nets_catch_english(demo_pool):
    """The checks above can fail: English words, and a catalogue message left in English."""
    assert english_words("Chip 5: Cannot promote_to_ready (guard)") == ["Cannot", "guard", "promote_to_ready"]
    assert untranslated_messages("aviso: The breakdown is not computed yet.") == [
        "The breakdown is not computed yet."]
    assert untranslated_messages("Chip 7 was banned by WhatsApp (close code 402).")
    assert not problems("O chip 7 foi banido pelo WhatsApp (código de encerramento 402).")
