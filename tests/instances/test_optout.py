"""The opt-out classifier against its corpus (no database: instances.optout is pure)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from instances import optout
from instances.optout import OPT_IN, OPT_OUT, Decision, classify, core, normalize
from tests.instances import optout_corpus as corpus


def test_corpus_is_big_enough_and_consistent():
    assert len(corpus.OPT_OUT) >= 40
    assert len(corpus.NOT_OPT_OUT) >= 30
    assert len(corpus.OPT_IN) >= 5
    assert len(corpus.NOT_OPT_IN) >= 5
    for messages in (corpus.OPT_OUT, corpus.NOT_OPT_OUT, corpus.OPT_IN, corpus.NOT_OPT_IN):
        assert len(messages) == len(set(messages))
    assert not set(corpus.OPT_OUT) & set(corpus.NOT_OPT_OUT)
    assert not set(corpus.OPT_IN) & set(corpus.NOT_OPT_IN)


def test_every_opt_out_is_detected():
    missed = [text for text in corpus.OPT_OUT if classify(text).kind != OPT_OUT]
    assert missed == []


def test_no_false_opt_out():
    fired = {text: classify(text).rule for text in corpus.NOT_OPT_OUT + corpus.OPT_IN
             if classify(text).kind == OPT_OUT}
    assert fired == {}


def test_every_opt_in_is_detected():
    missed = [text for text in corpus.OPT_IN if classify(text).kind != OPT_IN]
    assert missed == []


def test_no_false_opt_in():
    fired = {text: classify(text).rule for text in corpus.NOT_OPT_IN + corpus.NOT_OPT_OUT + corpus.OPT_OUT
             if classify(text).kind == OPT_IN}
    assert fired == {}


@pytest.mark.parametrize("text", ["não quero voltar a receber", "nunca mais quero voltar a receber isso"])
def test_a_negated_opt_in_is_an_opt_out(text):
    assert classify(text).kind == OPT_OUT


@pytest.mark.parametrize(("text", "rule"), [
    ("PARAR", "keyword:parar"),
    ("Sair!!", "keyword:sair"),
    ("cancelar por favor", "keyword:cancelar"),
    ("não me mande mais nada", "phrase:dont_send_more"),
    ("quero sair dessa lista", "phrase:leave_list"),
    ("pode me descadastrar", "phrase:unsubscribe_me"),
    ("chega de mensagem", "phrase:enough"),
    ("VOLTAR", "optin_keyword:voltar"),
    ("start", "optin_keyword:start"),
])
def test_the_decision_names_its_rule(text, rule):
    assert classify(text).rule == rule


def test_every_builtin_keyword_alone_or_repeated_names_itself():
    for keywords, kind, prefix in ((optout.KEYWORDS, OPT_OUT, "keyword"), (optout.OPT_IN_KEYWORDS, OPT_IN,
                                                                           "optin_keyword")):
        for keyword in keywords:
            assert classify(keyword) == Decision(kind, f"{prefix}:{keyword}"), keyword
            if " " not in keyword:
                assert classify(f"{keyword} {keyword.upper()} {keyword}!") == Decision(kind, f"{prefix}:{keyword}")
    assert classify("para sair").kind is None  # two keywords are not one repeated
    assert classify("stop stop start").kind is None


def test_decision_is_frozen_and_empty_by_default():
    decision = classify("bom dia, tudo certo com o pedido?")
    assert decision == Decision() == optout.NO_DECISION
    assert (decision.kind, decision.rule, decision.is_opt_out, decision.is_opt_in) == (None, None, False, False)
    assert classify("stop").is_opt_out and classify("start").is_opt_in
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.kind = OPT_OUT  # type: ignore[misc]


@pytest.mark.parametrize("text", ["", "   ", "!!!", "🙏🙏", "por favor", "obrigado"])
def test_nothing_to_read_is_no_decision(text):
    assert classify(text) == Decision()


# --- normalisation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "normalised"), [
    ("Não me mande MAIS nada!!! 🙏", "nao me mande mais nada"),
    ("PARAAAA", "para"),
    ("Sairrr...", "sair"),
    ("naum quero + msgs", "nao quero mais mensagem"),
    ("ñ mande nd", "nao mande nada"),
    ("vc  pode, pfv?", "voce pode por favor"),
    ("Obg, VCS", "obrigado voces"),
    ("tira do zap / wpp", "tira do whatsap whatsap"),
    ("Descadastre-me", "descadastrar me"),
    ("ação, promoção, não", "acao promocao nao"),
    ("isso é spam", "iso e spam"),
    ("mensagens às 18h", "mensagem as 18h"),
    (None, ""),
])
def test_normalize(raw, normalised):
    assert normalize(raw) == normalised


def test_normalize_is_idempotent():
    for text in corpus.OPT_OUT + corpus.NOT_OPT_OUT:
        assert normalize(normalize(text)) == normalize(text)


@pytest.mark.parametrize(("raw", "read"), [
    ("Bom dia! Por favor, parar. Obrigada", "parar"),
    ("oi tudo bem, pfv me tira", "me tira"),
    ("Olá, gostaria de sair por gentileza", "gostaria de sair"),
    ("não, obrigado", "nao"),
])
def test_core_drops_courtesy_and_greetings(raw, read):
    assert core(raw) == read


def test_builtin_rules_are_written_in_normalised_spelling():
    # The message is collapsed ("isso" -> "iso"), so a doubled letter in a pattern could never match.
    for name, pattern in optout.PHRASES + optout.OPT_IN_PHRASES:
        literal = re.sub(r"\\.", "", pattern.pattern)
        assert not re.search(r"([a-z])\1", literal), name
    for keyword in optout.KEYWORDS | optout.OPT_IN_KEYWORDS:
        assert core(keyword) == keyword
    assert not [alias for alias in optout._ALIASES if re.search(r"([a-z])\1", alias)]


# --- operators' rules ----------------------------------------------------------------------------------------

def test_extra_keywords_are_whole_message_matches():
    extra = ["BASTA", "Não Quero"]
    # the rule names the operator's rule as they wrote it, for the admin
    assert classify("basta!!", extra_keywords=extra) == Decision(OPT_OUT, "operator_keyword:BASTA")
    assert classify("Não quero, obrigado", extra_keywords=extra) == Decision(OPT_OUT, "operator_keyword:Não Quero")
    assert classify("basta ligar amanhã", extra_keywords=extra).kind is None
    assert classify("basta!!").kind is None  # only when the operator asked for it


def test_extra_phrases_match_on_word_boundaries_with_wildcards():
    extra = ["tô fora", "sem * zap"]
    assert classify("Tô fora dessa, valeu", extra_phrases=extra) == Decision(OPT_OUT, "operator_phrase:tô fora")
    assert classify("sem mais zap pra mim", extra_phrases=extra) == Decision(OPT_OUT, "operator_phrase:sem * zap")
    assert classify("sem zap", extra_phrases=extra).kind == OPT_OUT
    assert classify("estou forado", extra_phrases=extra).kind is None  # not inside a word
    assert classify("zap sem nada", extra_phrases=extra).kind is None  # the order counts


@pytest.mark.parametrize("useless", ["", "   ", "!!!", "*", "por favor", "obrigado", "🙏"])
def test_an_operator_rule_that_normalises_to_nothing_is_ignored(useless):
    assert classify("bom dia, o pedido chegou", extra_keywords=[useless], extra_phrases=[useless]).kind is None


def test_an_operator_wildcard_spans_at_most_six_words():
    assert classify("sem um dois tres quatro cinco seis zap", extra_phrases=["sem * zap"]).kind == OPT_OUT
    assert classify("sem um dois tres quatro cinco seis sete zap", extra_phrases=["sem * zap"]).kind is None


def test_only_the_start_of_a_very_long_message_is_read():
    assert classify("me tira dessa lista " + "bla " * 2000).kind == OPT_OUT
    assert classify("bla " * 2000 + "me tira dessa lista").kind is None
    hostile = "para de mandar mensagem " * 1000 + "hoje " + "x " * 30000  # backtracks for seconds if read whole
    assert classify(hostile, extra_phrases=["a * b"]).kind == OPT_OUT


def test_builtin_rules_win_over_operator_rules():
    assert classify("PARAR", extra_keywords=["parar"]).rule == "keyword:parar"


def test_opt_out_wins_over_opt_in():
    assert classify("voltar", extra_keywords=["voltar"]).kind == OPT_OUT
