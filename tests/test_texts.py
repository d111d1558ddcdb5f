"""common.texts: a stored text is a code plus parameters, English in its plain column, rendered in the reader's
language, with the plain text as the fallback for rows without a code."""

from __future__ import annotations

import pickle
import re

import pytest
from django.utils import translation

from common.texts import TEMPLATES, Text, choice, from_row, joined, render, stored


@pytest.fixture(autouse=True)
def _english_after():
    yield
    translation.deactivate()


def test_a_text_is_its_english_and_renders_in_the_active_language():
    text = Text("op.line_cancelled", reason=Text("release.unnecessary"))
    assert text == "line cancelled: unnecessary"  # as a str: the English, for logs, joins and old comparisons
    assert text.params == {"reason": {"code": "release.unnecessary", "params": {}}}
    with translation.override("pt-br"):
        assert str(text) == "linha cancelada: desnecessária"
        assert f"{text}" == "linha cancelada: desnecessária"
    with translation.override("en"):
        assert str(text) == "line cancelled: unnecessary"


def test_stored_gives_the_three_columns_and_render_reads_them_back():
    columns = stored("reason", Text("op.ready_by_trust", trust=90, min=80, days=15), 300)
    assert columns == {"reason": "trust 90 >= 80, 15 days", "reason_code": "op.ready_by_trust",
                       "reason_params": {"trust": 90, "min": 80, "days": 15}}
    with translation.override("pt-br"):
        assert render(columns["reason_code"], columns["reason_params"], columns["reason"]) == (
            "confiança 90 >= 80, 15 dias")
    assert stored("reason", "  an operator's words", 10) == {"reason": "  an opera", "reason_code": "",
                                                              "reason_params": {}}


def test_rows_without_a_code_show_their_plain_text_translated_when_it_is_a_fixed_phrase():
    with translation.override("pt-br"):
        assert render("", {}, "warming buffer short") == "reserva em aquecimento insuficiente"
        assert render("", {}, "free words of an operator") == "free words of an operator"
        assert render("op.trust", {"wrong": 1}, "trust 3") == "trust 3"  # a template changed since: the plain text
        assert str(from_row("", {}, "cooling over")) == "fim do resfriamento"
        # Plain English written before the codes (or by the routing statement) is read back through the templates.
        assert render("", {}, "replacement of chip 12") == "substituição do chip 12"
        assert render("", {}, "trust 86") == "confiança 86"


def test_lists_choices_and_pickling():
    items = joined([Text("pool.active_low", n=1, min=3), Text("pool.ready_low", n=0, min=2)])
    assert items == "active 1 < production minimum 3; ready 0 < ready minimum 2"
    assert joined([]) == ""
    with translation.override("pt-br"):
        assert str(choice("chips.Chip", "status", "warming")) == "Aquecimento"
        again = pickle.loads(pickle.dumps(items))
        assert isinstance(again, Text) and str(again) == str(items)


def test_codes_are_registered_and_templates_are_catalogue_messages():
    with pytest.raises(KeyError):
        Text("op.no_such_code")
    with translation.override("pt-br"):
        untranslated = [code for code, template in TEMPLATES.items()
                        if translation.gettext(template) == template and re.search(r"[a-z]{3}", re.sub(
                            r"%\(\w+\)[sd]", "", template))]
    assert not untranslated
