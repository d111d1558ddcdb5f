"""Opt-out (and opt-in) in WhatsApp replies, as Brazilians really write it. Pure: no database, no Django.

``classify(text)`` returns a ``Decision``: ``kind`` is ``"opt_out"``, ``"opt_in"`` or ``None``, and ``rule``
names what matched (``keyword:parar``, ``phrase:stop_sending``, ``operator_phrase:...``) for the audit trail.

Precision comes first: a false opt-out silences a real customer on every chip of the pool, a missed one only
costs another message and the next, clearer reply. So a rule fires only when the message asks to stop *receiving
messages*; declining an offer ("não tenho interesse"), ending a purchase ("não quero mais nada, obrigado"),
cancelling an order ("cancela o pedido") or limiting the hours ("não mande mensagem de madrugada") do not.

Normalisation (``normalize``): lower case, accents dropped (NFKD), "+" read as "mais", punctuation and emojis
dropped, every run of a repeated letter collapsed ("Paraaaa" -> "para", "isso" -> "iso": the built-in patterns
are written in that collapsed spelling), then chat spellings read as words ("n"/"naum" -> "nao", "vc" -> "voce",
"msg"/"mensagens" -> "mensagem", "nd" -> "nada", "pfv" -> "por favor", "obg" -> "obrigado", "zap"/"wpp" ->
"whatsap", every "descad..." -> "descadastrar"). Courtesy ("por favor", "obrigado") is then dropped anywhere and
greetings ("oi", "bom dia", "tudo bem") at the start: what is left is the *core* the rules read.

Opt-out fires on:

* a whole-message keyword: the core IS one of ``KEYWORDS`` (PARAR, PARE, PARA, SAIR, CANCELAR, DESCADASTRAR,
  STOP, UNSUBSCRIBE, "quero sair", "pode parar", "me tira", "não perturbe"...), or that word repeated
  ("para para para"). Inside a sentence these words mean other things ("vou sair do trabalho", "para amanhã");
* a phrase (``PHRASES``): stop sending ("para de me mandar mensagem"), don't send more ("não me mande mais
  nada"), don't want to receive ("não quero mais receber"), remove me ("me tira dessa lista", "remover meu
  número", "pode me descadastrar"), enough ("chega de mensagem"), leave me alone, I'll block/report as spam.
  What is sent must be messages or advertising, or left unsaid: "para de mandar áudio" or "não manda mais o
  boleto pelo correio" are about something else. A third person or a negation before "para" ("minha filha não
  para de mandar mensagem") does not fire; neither does a send/receive phrase followed anywhere by a time, another
  channel, an exception, a kind of message or a wish to be answered ("de madrugada", "por sms", "além do
  reembolso", "de cobrança", "quero um atendente"; ``_LIMITS``): those limit the messages, they do not refuse
  them. A list qualified by anything but messaging ("lista de espera", "lista do evento") is not the mailing list.

Keywords answer questions too: a bare "Cancelar" replying to "confirma ou cancela?" opts out (CANCELAR is a
keyword by requirement), so a flow should never ask a question answered by PARAR, SAIR, CANCELAR or STOP.

Deliberately not: "não quero mais" alone, "não tenho interesse", "chega!", "cancela", "sai", "isso é spam?",
"vou denunciar vocês no Procon" (a complaint still wants an answer), "não me mande mensagem agora", and calls
("para de me ligar", "não quero receber ligação"): a call is not a message.

Opt-in (checked only when no opt-out rule fired, and never in a message with "não"/"nunca"): the keywords
VOLTAR and START (``OPT_IN_KEYWORDS``), "quero voltar a receber (as mensagens)", "pode voltar a mandar",
"quero receber as mensagens de novo", "me coloca na lista de novo". Not "vou voltar amanhã".

Operators add opt-out rules per call: ``extra_keywords`` are whole-message keywords and ``extra_phrases``
phrases found anywhere on word boundaries, where ``*`` stands for up to six words ("para * mandar"). Both are
normalised like the message; one that normalises to nothing (only punctuation or courtesy) is ignored.

Only the first ``MAX_CHARS`` characters of the normalised message are read: a reply that long is a conversation,
not an opt-out, and the cap bounds the time the patterns can take on a hostile 64 KB message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

OPT_OUT = "opt_out"
OPT_IN = "opt_in"
MAX_CHARS = 2000


@dataclass(frozen=True)
class Decision:
    """What a reply asks for; ``Decision()`` (falsy ``kind``) when it asks for neither."""

    kind: Literal["opt_out", "opt_in"] | None = None
    rule: str | None = None  # "keyword:parar", "phrase:stop_sending", "operator_keyword:...", "optin_keyword:..."

    @property
    def is_opt_out(self) -> bool:
        return self.kind == OPT_OUT

    @property
    def is_opt_in(self) -> bool:
        return self.kind == OPT_IN


NO_DECISION = Decision()

# --- normalisation -------------------------------------------------------------------------------------------

_REPEATS = re.compile(r"([a-z])\1+")
_ALIASES = {
    **dict.fromkeys(("n", "naum", "nau", "nao", "nan"), "nao"),
    **dict.fromkeys(("vc", "voce", "ce"), "voce"),
    **dict.fromkeys(("vcs", "voces"), "voces"),
    **dict.fromkeys(("msg", "msgs", "mgs", "mensagens", "mensagen", "mensage", "mensages", "mesagem", "mesagens",
                     "mensajem", "mensajens"), "mensagem"),
    **dict.fromkeys(("nd", "nda"), "nada"),
    **dict.fromkeys(("qro", "qero", "kero", "qer"), "quero"),
    **dict.fromkeys(("q", "qe", "ke"), "que"),
    **dict.fromkeys(("pfv", "pf", "pfvr", "pfvor", "porfavor", "pls", "plz", "plis"), "por favor"),
    **dict.fromkeys(("obg", "obgd", "obgda", "obrigada", "brigado", "brigada", "vlw", "valeu", "grato", "grata"),
                    "obrigado"),
    **dict.fromkeys(("zap", "zapzap", "wp", "wap", "whats", "wats", "watsap", "whatsap"), "whatsap"),
    **dict.fromkeys(("aki", "aq"), "aqui"),
    "canselar": "cancelar",
    **dict.fromkeys(("desinscrever", "desinscreve", "desinscrevam"), "descadastrar"),
}
_COURTESY = re.compile(r"\b(?:por favor|por gentileza|obrigado|desde ja)\b")
_GREETING = re.compile(r"^(?:(?:oi|ola|ei|opa|ok|bom dia|boa tarde|boa noite|tudo bem|tudo bom|td bem|favor|gentileza|"
                       r"gente|pesoal|amigo|amiga|moco|moca|senhor|senhora) )+")


def normalize(text: str) -> str:
    """Lower case, no accents, no punctuation/emojis, repeated letters collapsed, chat spellings read as words."""
    ascii_text = unicodedata.normalize("NFKD", (text or "").replace("+", " mais ")).encode("ascii", "ignore")
    words = _REPEATS.sub(r"\1", re.sub(r"[^a-z0-9]+", " ", ascii_text.decode().lower())).split()
    return " ".join("descadastrar" if w.startswith("descad") else _ALIASES.get(w, w) for w in words)


def core(text: str) -> str:
    """``normalize`` without courtesy anywhere nor greetings at the start: the text the rules read."""
    plain = " ".join(_COURTESY.sub(" ", normalize(text)).split())
    return _GREETING.sub("", plain + " ").strip()


# --- built-in rules (written in normalised, collapsed spelling: "iso" for "isso", "esa" for "essa") ---------

KEYWORDS = frozenset(core(k) for k in (
    "parar", "pare", "para", "parem", "sair", "cancelar", "descadastrar", "stop", "unsubscribe", "remove me",
    "descadastrar me", "me descadastrar", "quero sair", "eu quero sair", "desejo sair", "gostaria de sair",
    "pode parar", "podem parar", "quero descadastrar", "pode descadastrar", "gostaria de descadastrar",
    "me remove", "me remova", "me removam", "me tira", "me tire", "me tirem", "me exclui", "me exclua",
    "nao perturbe", "nao perturbem", "stop sending", "stop messaging",
))
OPT_IN_KEYWORDS = frozenset(core(k) for k in (
    "voltar", "start", "quero voltar", "voltar a receber", "quero voltar a receber", "unstop",
))


def _not_after(*words: str) -> str:
    return "".join(rf"(?<!\b{w} )" for w in words)


# A list, unless qualified by something that is not messaging: "lista de espera", "lista do evento".
_LIST = (r"lista(?! (?:de|do|da|dos|das) (?!(?:transmisao|contatos?|envios?|disparos?|mensagem|whatsap|promoc[a-z]*|"
         r"ofertas?|novidades?|voces?|novo)\b))")
_SEND = r"(?:mand|envi)(?:arem|ando|ar|am|em|a|e)"
_SEND_IMP = r"(?:mande|mandem|manda|mandar|envie|enviem|envia|enviar|fique mandando|fiquem mandando|fica mandando)"
_DET = r"(?:(?:mais|nenhuma|nenhum|esa|esas|ese|eses|esta|estas|este|as|os|a|o|suas|seus|tanta|tantas|qualquer) )*"
_STUFF = (r"(?:mensagem|propagandas?|promoc[a-z]*|ofertas?|spam|anuncios?|publicidade|marketing|campanhas?|"
          r"novidades?|links?|conteudos?|coisas?|nada|iso|isto|whatsap|ese tipo de mensagem)")
_ADS = r"(?:propagandas?|promoc[a-z]*|ofertas?|spam|anuncios?|publicidade|marketing|ese tipo de mensagem)"
_WHERE = (r"(?:aqui|pra mim|para mim|por aqui|pelo whatsap|no meu (?:numero|celular|whatsap|telefone)|"
          r"ne(?:s|st)e numero)")
_TAIL = rf"(?: {_DET}{_STUFF}\b| {_WHERE}\b| mais\b|$)"
_FROM_WHO = r"(?: (?:de voces|de voce|daqui|de ?(?:s|st)e numero|de ?(?:s|st)a empresa)\b)"
_TAIL_RECEIVE = rf"(?:{_TAIL}|{_FROM_WHO})"
# Anywhere after a send/receive phrase, these words limit the messages instead of refusing them: a time ("de
# madrugada"), another channel ("por sms"), an exception ("além do reembolso"), a kind of message ("de cobrança",
# "repetida", "de voz"), a wish to be answered ("quero um atendente").
_LIMITS = (r"(?!.*\b(?:alem|exceto|salvo|menos|a nao ser|antes de|so se|sem (?:confirmar|avisar|perguntar|resposta)|"
           r"hoje|amanha|depois|mais tarde|madrugada|de manha|de noite|a noite|a tarde|cedo|horario|enquanto|"
           r"fim de semana|domingos?|sabados?|feriados?|durante|semana que vem|agendad[a-z]*|"
           r"e ?mail|sms|coreio|carta|telegram|instagram|facebok|prefiro|so (?:mensagem|texto|por|pelo)|"
           r"cobranca|repetid[a-z]*|duplicad[a-z]*|erad[a-z]*|bugad[a-z]*|mesma|de voz|audios?|"
           r"atendente|atendimento|humano|ninguem respond[a-z]*|me respond[a-z]*)\b)")
_STOP = (r"\b" + _not_after("nao", "nunca", "ele", "ela", "eles", "elas", "que", "se", "quando", "ap", "aplicativo",
                            "sistema", "site", "celular", "telefone", "maquina", "quero", "vou", "preciso", "poso",
                            "falando", "falou", "dise", "diz", "dizendo", "pediu")
         + r"(?:para|pare|parem|parar)")
_FROM_TARGET = rf"(?:{_LIST}|cadastro|base|mailing|contatos?|envios?|transmisao|whatsap|disparos?|grupo de transmisao)"
_FROM = rf"(?:da|de|do|dos|das|desa|dese|desta|deste|da sua|de sua|dos seus|das suas|na|nesa|nesta) {_FROM_TARGET}"
_REMOVE = (r"(?:tira|tire|tirem|tirar|remove|remova|removam|remover|exclui|exclua|excluam|excluir|retira|retire|"
           r"retirem|retirar|apaga|apague|apaguem|apagar|deleta|delete|deletar|descadastrar)")
_MY_NUMBER = r"(?:o )?(?:meu|noso) (?:numero|contato|telefone|celular|whatsap)\b"

PHRASES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(pattern)) for name, pattern in (
    ("stop_sending", rf"{_STOP} de (?:me |nos )?(?:ficar )?(?:me |nos )?{_SEND}(?: me| nos)?{_TAIL}{_LIMITS}"),
    ("stop_that", rf"{_STOP} com {_DET}(?:mensagem|propaganda|spam|promoc[a-z]*)\b{_LIMITS}"),
    ("stop_bothering", rf"{_STOP} de (?:(?:me|nos) (?:ficar )?(?:encher|incomodar|perturbar|importunar|procurar|"
                       rf"contatar|chamar)\b(?! de\b)|encher o saco\b){_LIMITS}"),
    ("stop_receiving", rf"\b(?:parar|deixar) de receber(?: mais)?{_TAIL_RECEIVE}{_LIMITS}"),
    ("dont_want_to_receive", r"\b(?:(?:nao|nunca mais) (?:quero|desejo|gostaria de|pretendo|"
                             r"tenho (?:mais )?interese (?:em|de))|"
                             r"(?:gostaria de|prefiro|quero|desejo|pra|para) nao) (?:mais )?(?:voltar a )?receber"
                             rf"(?: mais)?{_TAIL_RECEIVE}{_LIMITS}"),
    ("dont_send_more", rf"\b(?:nao|nunca) (?:me |nos )?{_SEND_IMP}(?: me| nos)? mais{_TAIL}{_LIMITS}"),
    ("never_send_again", rf"\bnunca mais (?:me |nos )?{_SEND_IMP}{_TAIL}{_LIMITS}"),
    ("dont_send_ads", rf"\bnao (?:me |nos )?{_SEND_IMP}(?: me| nos)? {_DET}{_ADS}\b{_LIMITS}"),
    ("dont_want_that_you_send", rf"\bnao quero (?:mais )?que (?:voces? )?(?:me |nos )?(?:mande|mandem|envie|enviem|"
                                rf"fique mandando|fiquem mandando)(?: mais)?{_TAIL}{_LIMITS}"),
    ("dont_want_messages", rf"\bnao (?:quero|desejo|gostaria de|aceito) (?:mais )?(?:receber )?{_DET}"
                           rf"(?:mensagem|{_ADS})\b{_LIMITS}"),
    ("dont_want_contact", r"\bnao (?:quero|desejo) (?:mais )?(?:ser (?:contatad|contactad|incomodad|perturbad|"
                          r"importunad)[oa]s?\b|contato(?: (?:com|de) (?:voces?|a empresa|esa empresa))?$|"
                          rf"(?:nada|saber) (?:com|de) (?:voces?|a empresa|esa empresa)\b{_LIMITS})"),
    ("no_more_contact", r"\bnao (?:entre|entrem) (?:mais em contato|em contato comigo)\b"),
    ("dont_call_me_again", r"\bnao me (?:procure|procurem|contate|contatem|contacte|chame|chamem) mais\b(?! de\b)"),
    ("leave_me_alone", r"\b(?:me (?:deixa|deixe|deixem|deixar)|deixa me|deixem me) em paz\b"),
    ("dont_bother_me", r"\bnao me (?:incomode|incomodem|perturbe|perturbem|importune|importunem)\b|"
                       r"^nao (?:incomode|incomodem|perturbe|perturbem)(?: mais)?$"),
    ("unsubscribe_me", r"\bme descadastrar\b(?! (?:d[oa]|n[oa]|em) (?:ap|aplicativo|site|plano|curso|cartao|conta|"
                       r"programa|evento|sorteio|clube|loja|portal|sistema)\b)"
                       rf"|\bdescadastrar (?:me\b|{_MY_NUMBER}|(?:ese|este) numero\b|{_FROM}|daqui\b)"
                       r"|\b(?:quero|gostaria de|pode|podem|desejo|preciso|queria) descadastrar$"),
    ("remove_me", rf"\bme {_REMOVE} (?:{_FROM}|daqui\b|diso\b)|\bme {_REMOVE}$"),
    # "remova meu telefone antigo", "tira meu número do pedido e coloca o da minha esposa": updates, not opt-outs.
    ("remove_my_number", rf"\b{_REMOVE} {_MY_NUMBER}"
                         r"(?! (?:antigo|velho|fixo|anterior|erado|de trabalho|comercial|residencial)\b)"
                         rf"(?! (?:d[oa]s?|n[oa]s?) (?!{_FROM_TARGET}))"
                         r"(?!.*\b(?:coloca|colocar|troca|trocar|substitui|substituir|atualiza|atualizar)\b)"
                         rf"|\b{_REMOVE} (?:ese|este) numero {_FROM}"),
    ("remove_from_list", rf"\b{_REMOVE} (?:da|desa|desta|da sua|de sua) (?:{_LIST} de (?:transmisao|contatos|envio)|"
                         rf"{_LIST}$)"),
    ("removed_from_list", rf"\bser (?:removid|retirad|excluid|descadastrad|tirad)[oa]s? (?:{_FROM}|daqui\b)|"
                          r"\bquero ser (?:removid|retirad|excluid|descadastrad)[oa]s?$"),
    ("leave_list", rf"\bsair {_FROM}"),
    ("enough", rf"\bchega de {_DET}(?:mensagem|{_ADS}|whatsap|(?:me )?(?:mandar|encher|incomodar|"
               rf"perturbar)|encher o saco)\b{_LIMITS}"),
    ("cancel_messages", r"\bcancel(?:ar|a|e|em) (?:o |os |meu |minha |a |as )?"
                        r"(?:recebimento|envio|inscricao|cadastro)s? "
                        rf"(?:de |das |dos |da |do |em |na )?{_DET}(?:mensagem|{_ADS}|whatsap|{_LIST})\b{_LIMITS}"),
    ("block_you", r"\bvou te bloquear(?=$| (?:aqui|no whatsap|de vez|agora|se|caso|ja)\b)"
                  r"|\bvou (?:te |lhe |lhes )?bloquear (?:voces?|ese numero|este numero|"
                  r"ese contato|este contato|seu numero|o numero de voces|ese whatsap)\b"),
    ("report_spam", r"\b(?:denunci|report|marc)[a-z]* (?:(?:voces?|ese numero|iso) )?(?:como|por) spam\b"),
    ("stop_english", r"\bstop (?:sending|mesaging|texting|contacting)\b"),
))

OPT_IN_PHRASES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(pattern)) for name, pattern in (
    ("resume_receiving", r"\b(?:(?:quero|gostaria de|desejo|pode|podem|poso) )?voltar a (?:receber|me mandar|mandar|"
                         rf"me enviar|enviar)(?: {_DET}(?:mensagem|promoc[a-z]*|ofertas?|novidades?|noticias?|"
                         rf"propaganda))?(?: de voces| daqui)?$"),
    ("receive_again", rf"\b(?:quero|gostaria de|desejo|pode|podem|poso) receber {_DET}(?:mensagem|novidades?|"
                      rf"promoc[a-z]*|ofertas?) (?:de novo|novamente)\b"),
    ("add_me_back", r"\bme (?:coloca|coloque|colocar|adiciona|adicione|adicionar|inclui|inclua|incluir|poe|bota|"
                    rf"cadastra|cadastre|cadastrar|inscreve|inscreva|inscrever) (?:de novo |novamente |de volta )?"
                    rf"(?:na|nesa|na sua) {_LIST}\b"),
))
_NEGATION = re.compile(r"\b(?:nao|nunca|jamais)\b")


def _is_keyword(message: str, words: set[str], keyword: str) -> bool:
    """The message is the keyword, or that one word repeated ("para para para"); `words`: the message's words."""
    return bool(keyword) and (message == keyword or words == {keyword})


def _keyword_of(message: str, words: set[str], keywords: frozenset[str]) -> str | None:
    """The first keyword, in sorted order, that `_is_keyword` matches: only the message itself or its one repeated
    word can be one, so two set lookups instead of a pass over every keyword."""
    found = [k for k in (message, *(words if len(words) == 1 else ())) if k in keywords]
    return min(found) if found else None


@lru_cache(maxsize=256)
def _operator_pattern(phrase: str) -> re.Pattern[str] | None:
    parts = [core(part) for part in phrase.split("*")]
    parts = [re.escape(part) for part in parts if part]
    return re.compile(r"(?<!\S)" + r" (?:\S+ ){0,6}".join(parts) + r"(?!\S)") if parts else None


def classify(text: str, *, extra_keywords: Iterable[str] = (), extra_phrases: Iterable[str] = ()) -> Decision:
    """Whether a reply asks to stop receiving messages (``opt_out``), to receive them again (``opt_in``), or neither."""
    message = core(text)[:MAX_CHARS]
    if not message:
        return NO_DECISION
    words = set(message.split())
    keyword = _keyword_of(message, words, KEYWORDS)
    if keyword is not None:
        return Decision(OPT_OUT, f"keyword:{keyword}")
    for keyword in extra_keywords:
        if _is_keyword(message, words, core(keyword)):
            return Decision(OPT_OUT, f"operator_keyword:{keyword}")
    for name, pattern in PHRASES:
        if pattern.search(message):
            return Decision(OPT_OUT, f"phrase:{name}")
    for phrase in extra_phrases:
        operator = _operator_pattern(phrase)
        if operator is not None and operator.search(message):
            return Decision(OPT_OUT, f"operator_phrase:{phrase}")
    keyword = _keyword_of(message, words, OPT_IN_KEYWORDS)
    if keyword is not None:
        return Decision(OPT_IN, f"optin_keyword:{keyword}")
    if not _NEGATION.search(message):
        for name, pattern in OPT_IN_PHRASES:
            if pattern.search(message):
                return Decision(OPT_IN, f"optin_phrase:{name}")
    return NO_DECISION
