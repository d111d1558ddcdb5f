"""The pt-BR translation: complete, compiled, and what operators see in the admin."""

from __future__ import annotations

import gettext as gnu_gettext
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext, ngettext

from chips.demo import chip_in_state
from chips.models import Chip

LC_MESSAGES = Path(django_settings.BASE_DIR) / "locale" / "pt_BR" / "LC_MESSAGES"
PO = LC_MESSAGES / "django.po"
MO = LC_MESSAGES / "django.mo"
CHANGELIST = reverse("admin:chips_chip_changelist")
DASHBOARD = "/admin/chipfarm/poolconfiguration/dashboard/"
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|\{\w*\}")


@pytest.fixture(autouse=True)
def _no_language_left_active():
    """A request activates its language on this thread; leave nothing active for the next test."""
    yield
    translation.deactivate()


# --- the catalogue --------------------------------------------------------------------------------------------

@dataclass
class Entry:
    line: int
    flags: set[str] = field(default_factory=set)
    msgid: str = ""
    msgid_plural: str | None = None
    msgstr: dict[str, str] = field(default_factory=dict)  # "" for singular entries, "0"/"1" for plural forms


def _unquote(text: str) -> str:
    body = text.strip()
    assert body.startswith('"') and body.endswith('"'), body
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body[1:-1])


def parse_po(path: Path) -> list[Entry]:
    """A small .po reader: enough for the entries makemessages writes (no msgctxt, no obsolete #~ kept)."""
    entries: list[Entry] = []
    current: Entry | None = None
    key: tuple[str, str] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            current, key = None, None
            continue
        if current is None:
            current = Entry(line=number)
            entries.append(current)
        if line.startswith("#,"):
            current.flags |= {f.strip() for f in line[2:].split(",")}
        elif line.startswith("#"):
            continue
        elif m := re.match(r'^msgid (".*")$', line):
            current.msgid, key = _unquote(m.group(1)), ("msgid", "")
        elif m := re.match(r'^msgid_plural (".*")$', line):
            current.msgid_plural, key = _unquote(m.group(1)), ("msgid_plural", "")
        elif m := re.match(r'^msgstr(?:\[(\d)\])? (".*")$', line):
            current.msgstr[m.group(1) or ""], key = _unquote(m.group(2)), ("msgstr", m.group(1) or "")
        elif line.startswith('"') and key is not None:
            part = _unquote(line)
            if key[0] == "msgid":
                current.msgid += part
            elif key[0] == "msgid_plural":
                current.msgid_plural = (current.msgid_plural or "") + part
            else:
                current.msgstr[key[1]] += part
        else:
            raise AssertionError(f"{path}:{number}: unexpected line {line!r}")
    return entries


@pytest.fixture(scope="module")
def po_entries() -> list[Entry]:
    assert PO.exists(), f"{PO} is missing: run makemessages -l pt_BR"
    return parse_po(PO)


def test_header_declares_brazilian_portuguese_plural_rule(po_entries):
    header = next(e for e in po_entries if e.msgid == "")
    assert "fuzzy" not in header.flags
    assert "Language: pt_BR\n" in header.msgstr[""]
    assert "Plural-Forms: nplurals=2; plural=(n > 1);\n" in header.msgstr[""]


def test_every_entry_is_translated_and_none_is_fuzzy(po_entries):
    messages = [e for e in po_entries if e.msgid]
    assert len(messages) > 100
    fuzzy = [f"line {e.line}: {e.msgid!r}" for e in messages if "fuzzy" in e.flags]
    empty = [f"line {e.line}: {e.msgid!r}" for e in messages if not all(e.msgstr.values()) or not e.msgstr]
    assert not fuzzy, "fuzzy entries:\n" + "\n".join(fuzzy)
    assert not empty, "untranslated entries:\n" + "\n".join(empty)


def test_plural_entries_have_both_forms(po_entries):
    plurals = [e for e in po_entries if e.msgid_plural is not None]
    assert plurals
    for entry in plurals:
        assert set(entry.msgstr) == {"0", "1"}, entry.msgid


def test_translations_keep_the_placeholders(po_entries):
    for entry in (e for e in po_entries if e.msgid):
        for form, text in entry.msgstr.items():
            source = entry.msgid_plural if form == "1" and entry.msgid_plural else entry.msgid
            assert sorted(PLACEHOLDER.findall(text)) == sorted(PLACEHOLDER.findall(source)), (
                f"line {entry.line}: {entry.msgid!r} → {text!r}"
            )


def test_compiled_catalogue_matches_the_po(po_entries):
    """The .mo is compiled from the current .po: every message comes back translated from it."""
    assert MO.exists(), f"{MO} is missing: run compilemessages -l pt_BR"
    with MO.open("rb") as fh:
        catalogue = gnu_gettext.GNUTranslations(fh)
    stale = []
    for entry in (e for e in po_entries if e.msgid):
        if entry.msgid_plural is None:
            if catalogue.gettext(entry.msgid) != entry.msgstr[""]:
                stale.append(entry.msgid)
        elif (catalogue.ngettext(entry.msgid, entry.msgid_plural, 1) != entry.msgstr["0"]
              or catalogue.ngettext(entry.msgid, entry.msgid_plural, 2) != entry.msgstr["1"]):
            stale.append(entry.msgid)
    assert not stale, "the .mo is out of date for: " + ", ".join(map(repr, stale[:20]))


def test_django_serves_the_translation():
    with translation.override("pt-br"):
        assert gettext("Promote to ready") == "Promover para pronto"
        assert gettext("Pool dashboard") == "Painel do pool"
        assert gettext("trust score") == "pontuação de confiança"
        assert str(Chip._meta.verbose_name_plural) == "chips"
        assert str(Chip.Status.PENDING.label) == "Aguardando ativação"
        # pt-BR: 0 and 1 are singular.
        for n, word in [(0, "alerta reconhecido"), (1, "alerta reconhecido"), (2, "alertas reconhecidos")]:
            text = ngettext("%(count)d alert acknowledged.", "%(count)d alerts acknowledged.", n) % {"count": n}
            assert text == f"{n} {word}."
    with translation.override("en"):
        assert gettext("Promote to ready") == "Promote to ready"


# --- what operators see ---------------------------------------------------------------------------------------

@pytest.fixture
def portuguese(settings):
    settings.LANGUAGE_CODE = "pt-br"


@pytest.mark.django_db
def test_chips_changelist_is_in_portuguese_by_default(portuguese, admin_client):
    chip_in_state(status=Chip.Status.WARMING)
    response = admin_client.get(CHANGELIST)
    page = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Language"] == "pt-br"
    assert '<html lang="pt-br"' in page
    assert "Promover para pronto</option>" in page  # the bulk action's label
    assert "Aposentar</option>" in page
    assert "Selecione chip para visualizar" in page  # the model's verbose name, in Django's own sentence
    assert "Pontuação de confiança" in page and "nível de confiança" in page  # the column, the filter
    assert ">Aquecimento</span>" in page  # the status badge
    assert "Promote to ready" not in page and "Trust score" not in page


@pytest.mark.django_db
def test_accept_language_header_picks_portuguese(admin_client):
    page = admin_client.get(CHANGELIST, headers={"Accept-Language": "pt-BR,pt;q=0.9"}).content.decode()
    assert "Promover para pronto</option>" in page
    assert "Selecione chip para visualizar" in page


@pytest.mark.django_db
def test_pool_dashboard_is_in_portuguese(portuguese, admin_client):
    chip_in_state(status=Chip.Status.ACTIVE)
    response = admin_client.get(DASHBOARD)
    page = response.content.decode()
    assert response.status_code == 200
    assert "<title>Painel do pool | " in page
    assert "Executar um ciclo agora</button>" in page
    assert "Pausar todos os envios</button>" in page
    assert "Chips por estado" in page and "Alertas abertos" in page
    assert "Run a cycle now" not in page and "Pool dashboard" not in page

    response = admin_client.post(DASHBOARD, {"action": "pause", "reason": "incidente"}, follow=True)
    page = response.content.decode()
    assert "Os envios estão pausados." in page  # the message_user text
    assert "Os envios estão PAUSADOS" in page and "Retomar os envios</button>" in page

    index = admin_client.get(reverse("admin:index")).content.decode()
    assert "Painel do pool" in index


@pytest.mark.django_db
def test_english_when_english_is_requested(portuguese, admin_client):
    chip_in_state(status=Chip.Status.WARMING)
    english = {"headers": {"Accept-Language": "en"}}

    page = admin_client.get(CHANGELIST, **english).content.decode()
    assert "Promote to ready</option>" in page and "Select chip to view" in page
    assert "Trust score" in page and ">Warming</span>" in page
    assert "Promover para pronto" not in page

    page = admin_client.get(DASHBOARD, **english).content.decode()
    assert "<title>Pool dashboard | " in page
    assert "Run a cycle now</button>" in page and "Pause all sending</button>" in page
    assert "Painel do pool" not in page


@pytest.mark.django_db
def test_english_is_the_test_default(admin_client):
    """config/settings/test.py keeps tests in English; nothing leaks from the Portuguese tests."""
    page = admin_client.get(DASHBOARD).content.decode()
    assert "Run a cycle now</button>" in page and "Executar um ciclo agora" not in page
