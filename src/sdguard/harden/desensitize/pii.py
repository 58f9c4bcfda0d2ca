"""Personal data in captions: found with Microsoft Presidio, replaced, masked or the record dropped.

Web captions carry what their pages carried: e-mail addresses, phone numbers, links, now and then
a card number or an IBAN, and names. A model trained on them can give them back (Carlini et al.
2023 extract training captions' subjects; Somepalli et al. 2023 show caption-specific copying), so
they are removed before training.

Recognition is Presidio's (``presidio-analyzer``; https://microsoft.github.io/presidio/):

- without an NLP model, a regex-only registry: Presidio's pattern recognizers for
  ``EMAIL_ADDRESS``, ``PHONE_NUMBER`` (Google's ``phonenumbers`` matcher, Presidio's default
  regions US, GB, DE, FR, IL, IN, CA, BR), ``URL``, ``CREDIT_CARD`` (Luhn checksum),
  ``IP_ADDRESS`` (v4 and v6) and ``IBAN_CODE`` (ISO 13616 checksum), behind Presidio's
  ``NoOpNlpEngine`` (its analyzer needs an NLP engine; this one loads nothing);
- with ``--spacy-model DIR`` (a local spaCy pipeline: nothing is downloaded), Presidio's
  ``SpacyNlpEngine`` and ``SpacyRecognizer`` add ``PERSON`` and ``LOCATION`` (spaCy's PERSON,
  GPE, LOC) and the context words of the pattern recognizers.

Replacing and masking are Presidio's anonymizer operators (``presidio-anonymizer``: ``replace``
with ``<ENTITY_TYPE>`` or the user's text, ``mask`` with ``*`` over the whole entity); ``drop``
leaves the record out of the output.

sdguard's own parts, and why:

- overlapping findings are resolved before anything is changed: Presidio's URL pattern matches
  inside e-mail addresses (``jane.do`` and ``example.com`` in ``jane.doe@example.com``), and each
  would be counted and replaced. The higher score wins, then the longer span;
- a URL's trailing sentence punctuation (``.../gallery.``, ``?y=1,``) is not part of it, its port
  and path are (Presidio's pattern stops at ``:8080``), and a match inside a word is none
  (``103045.jp`` in ``IMG_20190512_103045.jpg``: ``.jp`` is a top-level domain); brackets around
  any finding (``[+33 1 42 68 53 00]``) are not part of it;
- Mastercard's 2-series card numbers (2221-2720, since 2017), which Presidio's pattern lacks, are
  one more pattern of its card recognizer (with its Luhn check);
- the e-mail recognizer's domain check (``tldextract``) reads the public-suffix list from the
  snapshot in its package instead of trying to download it (offline, it logs a traceback for
  every caption).

The manifest records each finding's type, offsets and score, never its text.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ...core.errors import InputError, reason, require

#: the entity types the regex-only registry finds, with what they are
REGEX_ENTITIES: dict[str, str] = {
    "EMAIL_ADDRESS": "e-mail addresses",
    "PHONE_NUMBER": "phone numbers (Presidio's default regions)",
    "URL": "web addresses",
    "CREDIT_CARD": "payment card numbers with a valid Luhn checksum",
    "IP_ADDRESS": "IPv4 and IPv6 addresses",
    "IBAN_CODE": "IBANs with a valid checksum",
}
#: the entity types a spaCy model adds (``--spacy-model``)
NLP_ENTITIES: dict[str, str] = {"PERSON": "names of people", "LOCATION": "places (spaCy's GPE and LOC)"}
ACTIONS = ("replace", "mask", "drop", "off")
_URL_TRAILING = ".,;:!?)]}'\""
_PORT = re.compile(r":\d{1,5}(?:[/?#][^\s]*)?")
#: Mastercard's 2-series (BINs 2221-2720, issued since 2017), which Presidio's card pattern lacks
_MASTERCARD_2 = r"\b(2(?:22[1-9]|2[3-9]\d|[3-6]\d{2}|7[01]\d|720))[- ]?(\d{4})[- ]?(\d{4})[- ]?(\d{4})\b"


@dataclass(frozen=True)
class Finding:
    """One entity found in a caption: its type, character span and Presidio's score."""

    entity: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict:
        return {"entity": self.entity, "start": self.start, "end": self.end, "score": round(self.score, 3)}


def parse_policy(items: Sequence[str], entities: Iterable[str], argument: str = "--pii") -> dict[str, str]:
    """The action per entity type from ``items``: ``ACTION`` for every type, ``TYPE=ACTION`` for
    one (later items win). An unknown action or type is one sentence naming ``argument``."""
    entities = list(entities)
    policy = dict.fromkeys(entities, "replace")
    for item in items:
        name, sep, action = item.rpartition("=")
        action = action.strip().lower()
        if action not in ACTIONS:
            raise InputError.bad(argument, item, f"is not a policy: the actions are {', '.join(ACTIONS)} "
                                 "(ACTION for every entity type, TYPE=ACTION for one)")
        if not sep:
            policy = dict.fromkeys(entities, action)
            continue
        entity = name.strip().upper()
        if entity not in entities:
            raise InputError.bad(argument, item, f"names an entity type that is not searched for "
                                 f"({', '.join(entities)})")
        policy[entity] = action
    return policy


def check_entities(names: Sequence[str], spacy_model: str | None, argument: str = "--entity") -> list[str]:
    """The entity types to search for (upper case): ``names``, or every type available (the
    regex ones, and the spaCy ones with a model). An unknown type is one sentence."""
    known = dict(REGEX_ENTITIES)
    if spacy_model:
        known.update(NLP_ENTITIES)
    if not names:
        return list(known)
    out = []
    for name in names:
        entity = name.strip().upper()
        if entity not in known:
            hint = " (PERSON and LOCATION need --spacy-model)" if entity in NLP_ENTITIES else ""
            raise InputError.bad(argument, name, f"is not a known entity type{hint}; the types are "
                                 f"{', '.join(known)}")
        if entity not in out:
            out.append(entity)
    return out


def resolve_overlaps(findings: Sequence[Finding]) -> list[Finding]:
    """Non-overlapping findings in text order: of two that overlap, the higher score stays, then
    the longer (an e-mail address over the URL pattern's match inside it)."""
    kept: list[Finding] = []
    for f in sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def _tidy(text: str, f: Finding) -> Finding | None:
    """``f`` without the brackets around it, a URL with the port Presidio's pattern stops at and
    without trailing sentence punctuation; None for a URL match inside a word (``103045.jp`` in
    ``IMG_103045.jpg``, where ``.jp`` is a top-level domain)."""
    start, end = f.start, f.end
    if f.entity == "URL":
        if (start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_-")) or \
                (end < len(text) and (text[end].isalnum() or text[end] == "_")):
            return None
        port = _PORT.match(text, end)
        if port:
            end = port.end()
        while end > start and text[end - 1] in _URL_TRAILING:
            end -= 1
    while start < end and (text[start] in "[{" or (text[start] == "(" and ")" not in text[start:end])):
        start += 1
    while end > start and (text[end - 1] in "]}" or (text[end - 1] == ")" and "(" not in text[start:end])):
        end -= 1
    return Finding(f.entity, start, end, f.score) if (start, end) != (f.start, f.end) else f


def _offline_email_recognizer(cls):
    """Presidio's e-mail recognizer with its domain check on the packaged public-suffix list."""
    import tldextract

    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    class OfflineEmailRecognizer(cls):
        def validate_result(self, pattern_text: str):  # noqa: D102 - Presidio's hook
            return extract(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def _spacy_engine(model: str):
    spacy = require("spacy", "desensitize", "person and location names")
    if not (Path(model).is_dir() or spacy.util.is_package(model)):
        raise InputError.bad("--spacy-model", model, "is neither a spaCy pipeline folder nor an installed spaCy "
                             "package (models are not downloaded)")
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
    try:
        engine.load()
    except Exception as exc:  # noqa: BLE001 - spaCy raises OSError, ValueError, config errors
        why = reason(exc)
        raise InputError.bad("--spacy-model", model, f"could not be loaded as a spaCy pipeline ({why})") from None
    return engine


def _remove(_text: str) -> str:
    return ""


class PiiScrubber:
    """Find ``entities`` in captions and apply ``policy`` (type -> replace | mask | drop | off).

    ``replacement``: the text put in place of an entity (default Presidio's ``<ENTITY_TYPE>``);
    ``min_score``: findings scored below it are ignored (Presidio's default threshold is 0).
    """

    def __init__(self, entities: Sequence[str], policy: dict[str, str], *, spacy_model: str | None = None,
                 replacement: str | None = None, min_score: float = 0.0):
        require("presidio_analyzer", "desensitize", "finding personal data in captions")
        require("presidio_anonymizer", "desensitize", "replacing personal data in captions")
        from presidio_analyzer import AnalyzerEngine, Pattern, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            SpacyRecognizer,
            UrlRecognizer,
        )
        from presidio_anonymizer import AnonymizerEngine

        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        self.entities = list(entities)
        self.policy = {e: policy.get(e, "replace") for e in self.entities}
        self.replacement, self.min_score = replacement, min_score
        cards = CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS,
                                               Pattern("Mastercard 2-series", _MASTERCARD_2, 0.3)])
        recognizers = [_offline_email_recognizer(EmailRecognizer), PhoneRecognizer(), UrlRecognizer(), cards,
                       IpRecognizer(), IbanRecognizer()]
        if spacy_model:
            engine = _spacy_engine(spacy_model)
            recognizers.append(SpacyRecognizer(supported_entities=list(NLP_ENTITIES)))
        else:
            engine = NoOpNlpEngine([{"lang_code": "en", "model_name": "regex-only"}])
        self._active = [e for e in self.entities if self.policy[e] != "off"]
        self.analyzer = AnalyzerEngine(registry=RecognizerRegistry(recognizers=recognizers), nlp_engine=engine,
                                       default_score_threshold=min_score)
        self.anonymizer = AnonymizerEngine()
        self.spacy_model = spacy_model

    def config(self) -> dict:
        return {"entities": self.entities, "policy": self.policy, "spacy_model": self.spacy_model,
                "replacement": "<ENTITY_TYPE>" if self.replacement is None else self.replacement,
                "min_score": self.min_score, "engine": "spacy" if self.spacy_model else "regex-only (NoOpNlpEngine)"}

    def analyze(self, text: str) -> list[Finding]:
        """The entities of ``text`` (the searched types whose action is not ``off``), overlaps resolved."""
        if not text or not self._active:
            return []
        results = self.analyzer.analyze(text, language="en", entities=self._active)
        found = [_tidy(text, Finding(r.entity_type, r.start, r.end, float(r.score))) for r in results]
        return resolve_overlaps([f for f in found if f is not None and f.end > f.start and f.score >= self.min_score])

    def apply(self, text: str, findings: Sequence[Finding]) -> tuple[str | None, list[Finding]]:
        """``(new text, findings acted on)``; the text is None when a finding's action is ``drop``."""
        if not findings:
            return text, []
        if any(self.policy[f.entity] == "drop" for f in findings):
            return None, list(findings)
        from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

        operators = {}
        for e in {f.entity for f in findings}:
            if self.policy[e] == "mask":
                # chars_to_mask beyond the entity's length masks all of it
                operators[e] = OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": len(text),
                                                       "from_end": False})
            elif self.replacement == "":  # Presidio's replace treats an empty new_value as its default
                operators[e] = OperatorConfig("custom", {"lambda": _remove})
            else:
                value = f"<{e}>" if self.replacement is None else self.replacement
                operators[e] = OperatorConfig("replace", {"new_value": value})
        results = [RecognizerResult(f.entity, f.start, f.end, f.score) for f in findings]
        new = self.anonymizer.anonymize(text, results, operators=operators).text
        return " ".join(new.split()) if self.replacement == "" else new, list(findings)
