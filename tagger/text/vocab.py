"""The label vocabulary for text generation, plural forms and the ``mentions_all`` validator."""
from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from ..errors import ConfigError
from ..method.hierarchy import is_ancestor
from ..method.names import fold

__all__ = ["TermClash", "TermInside", "Vocabulary", "fold", "mentions", "mentions_all", "name_problem", "plural", "same_term",
           "term_clashes", "term_keys", "terms_inside", "word_stems"]

logger = logging.getLogger(__name__)

#: Characters that change how text around them is displayed (bidirectional embeddings, overrides,
#: isolates and marks): a label holding one can read differently from what it is.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: ``|`` separates the levels of a hierarchical keyword (``lr:hierarchicalSubject``) in photo tools.
HIERARCHY_SEPARATOR = "|"

# Irregular nouns that come up in common label sets; everything else uses the simple rules.
_IRREGULAR_PLURALS: dict[str, str] = {
    "person": "people", "man": "men", "woman": "women", "child": "children",
    "mouse": "mice", "goose": "geese", "foot": "feet", "tooth": "teeth",
    "sheep": "sheep", "deer": "deer", "fish": "fish", "knife": "knives",
    "leaf": "leaves", "shelf": "shelves", "wolf": "wolves", "scarf": "scarves",
}


def _is_noncharacter(c: str) -> bool:
    code = ord(c)
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a label or synonym (None when it can): it holds a control character
    (C0, C1, line or paragraph separator), a surrogate, a Unicode non-character (U+FFFE, U+FFFF...),
    a bidirectional control (e.g. U+202E, which flips how the label reads) or ``|`` (a hierarchy
    level in photo tools). Such characters cannot be written to XML or would change the label's
    meaning in the tools that read the tags."""
    for c in name:
        cat = unicodedata.category(c)
        if c == HIERARCHY_SEPARATOR:
            return "holds '|', which photo tools read as a hierarchy level (use a parent label instead)"
        if cat in ("Cc", "Zl", "Zp"):
            return f"holds a control character (U+{ord(c):04X}): one line of text, no newline or tab"
        if cat == "Cs" or _is_noncharacter(c):
            return f"holds U+{ord(c):04X}, which is not a character (no text format can hold it)"
        if c in BIDI_CONTROLS:
            return f"holds the bidirectional control U+{ord(c):04X}, which changes how the label reads"
    if name.strip() and not any(unicodedata.category(c)[0] in "LN" or unicodedata.category(c) == "So" for c in name):
        return "has no word (no letter, digit or symbol, only punctuation): no sentence could name it"
    return None


def plural(phrase: str, overrides: Mapping[str, str] | None = None) -> str:
    """Plural of a noun phrase: its last word is pluralised (``lightning bolt`` -> ``lightning bolts``)."""
    if overrides and phrase in overrides:
        return overrides[phrase]
    head, sep, last = phrase.rpartition(" ")
    low = last.lower()
    if low in _IRREGULAR_PLURALS:
        word = _IRREGULAR_PLURALS[low]
    elif low.endswith(("s", "x", "z", "sh", "ch")):
        word = last + "es"
    elif len(low) > 1 and low.endswith("y") and low[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return head + sep + word


def _word_forms(word: str) -> list[str]:
    """Accepted surface forms of a phrase's last word: itself and its plausible plurals."""
    low = word.lower()
    forms = {low, low + "s", low + "es"}
    if low.endswith("y"):
        forms.add(low[:-1] + "ies")
    if low.endswith("fe"):
        forms.add(low[:-2] + "ves")
    elif low.endswith("f"):
        forms.add(low[:-1] + "ves")
    if low in _IRREGULAR_PLURALS:
        forms.add(_IRREGULAR_PLURALS[low])
    return sorted(forms, key=len, reverse=True)


#: Scripts written without spaces between words (kana, half-width ones too, Han and its extensions,
#: Thai, Lao, Myanmar, Khmer): :func:`_spaced` puts spaces around their letters, so that a letter of
#: theirs beside a term is a word boundary.
_UNSPACED = re.compile("([\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
                       "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\U00020000-\U0003134f])")
#: Hangul: Korean puts spaces between words but attaches particles to their ends (``고양이가``), so a
#: term ending in Hangul needs a boundary before it only.
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")


def _spaced(text: str) -> str:
    """``text`` in NFC with a space either side of each letter of a script written without spaces."""
    return _UNSPACED.sub(r" \1 ", unicodedata.normalize("NFC", text))


def _term_words(term: str) -> list[str]:
    """A term's words as the validator reads them: NFC, lower-cased, each letter of a script written
    without spaces a word of its own (:func:`_spaced`); ConfigError when it has none."""
    words = [w for w in re.split(r"[\s\-_]+", _spaced(term).strip().lower()) if w]
    if not words:
        raise ConfigError(f"empty label or synonym {term!r}")
    return words


@lru_cache(maxsize=1 << 17)  # a vocabulary of 10^4 labels is validated several times per nightly
def _term_pattern(term: str) -> re.Pattern[str]:
    """Whole-phrase, case-insensitive pattern for a term and its simple plurals, matched against
    :func:`_spaced` text by :func:`_found` (:func:`mentions` prepares the sentence).

    Words may be separated by spaces, hyphens, underscores or nothing (``motor bike`` matches
    ``motorbike`` and ``motor_bike``); a
    letter or digit may not touch the phrase (``ring`` is not in ``Göring``), except one of a script
    written without spaces (``猫`` in ``黑猫``) or a Korean particle after a Hangul term.
    """
    words = _term_words(term)
    parts = [re.escape(w) for w in words[:-1]]
    parts.append("(?:" + "|".join(re.escape(f) for f in _word_forms(words[-1])) + ")")
    after = "" if _HANGUL.match(words[-1][-1]) else r"(?![^\W_])"
    # the boundaries are plain classes outside the case-insensitive part: compiled in ~0.1 ms
    return re.compile(r"(?<![^\W_])(?i:" + r"[\s\-_]*".join(parts) + ")" + after)


def _is_mark(c: str) -> bool:
    return unicodedata.category(c)[0] == "M"


def _found(pattern: re.Pattern[str], text: str) -> bool:
    """Whether ``pattern`` occurs in ``text`` with no combining mark (an accent, a vowel sign, a
    virama) right before or after it: a mark belongs to the word it sits in (``कम`` is not in
    ``कमाना``). Checked here rather than in the pattern, which stays cheap to compile."""
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        a, b = m.span()
        if not (a and _is_mark(text[a - 1])) and not (b < len(text) and _is_mark(text[b])):
            return True
        pos = a + 1
    return False


def _surface_keys(term: str) -> list[str]:
    """The spellings, words run together and case-folded, that the pattern of ``term`` accepts
    (``motor bike`` -> ``motorbike``, ``motorbikes``, ...): two terms sharing one may be the same."""
    words = _term_words(term)
    head = "".join(words[:-1])
    return [head + form for form in _word_forms(words[-1])]


def _spelling(term: str) -> str:
    """A term's words run together, case-folded, NFC (``Motor-bike`` -> ``motorbike``)."""
    return "".join(_term_words(term))


def same_term(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` name the same thing to the validator: the pattern of one matches the
    whole of the other (``Ring`` and ``ring``, ``ring`` and ``rings``, ``motor bike`` and ``motorbike``),
    so a sentence naming one is taken to name the other."""
    a, b = (_spaced(t.strip()).strip() for t in (a, b))
    return bool(_term_pattern(a).fullmatch(b) or _term_pattern(b).fullmatch(a))


@dataclass(frozen=True)
class TermClash:
    """``term`` of ``label`` names the same thing as ``other_term`` of ``other`` (a name or a synonym)."""

    label: str
    term: str
    other: str
    other_term: str

    @property
    def exact(self) -> bool:
        """The same words (case, spaces and hyphens aside), not only a plural of the other."""
        return _spelling(self.term) == _spelling(self.other_term)

    def describe(self) -> str:
        """The clash in words, for an error or warning line."""
        what = "label" if self.term == self.label else f"synonym {self.term!r} of"
        if self.other_term == self.other:
            where = f"the label {self.other!r}"
        else:
            where = f"the synonym {self.other_term!r} of {self.other!r}"
        if not self.exact:
            return (f"{what} {self.label!r} reads as a singular or plural of {where}: a sentence naming one "
                    "counts as naming the other")
        same = "is" if self.term == self.other_term else "names the same thing as"
        return (f"{what} {self.label!r} {same} {where}: a sentence naming it would be about both labels "
                "(each label's name and synonyms must name only it)")


def term_clashes(terms: Mapping[str, Sequence[str]], edited: Iterable[str] | None = None) -> list[TermClash]:
    """Terms of the ``edited`` labels (default: all) that name the same thing as a term of another label.

    ``terms`` maps each label to its synonyms (its name is a term too). Indexed by spelling: a
    vocabulary of 10^4 labels is checked in about a second, one label's edit against it in a third."""
    by_key: dict[str, list[tuple[str, str]]] = {}
    for label, syns in terms.items():
        for term in dict.fromkeys((label, *syns)):
            for key in _surface_keys(term):
                by_key.setdefault(key, []).append((label, term))
    out: list[TermClash] = []
    for label in (terms if edited is None else edited):
        for term in dict.fromkeys((label, *terms.get(label, ()))):
            seen: set[tuple[str, str]] = set()
            for key in _surface_keys(term):
                for other, other_term in by_key.get(key, ()):
                    if other != label and (other, other_term) not in seen and same_term(term, other_term):
                        seen.add((other, other_term))
                        out.append(TermClash(label, term, other, other_term))
    return out


@dataclass(frozen=True)
class TermInside:
    """``term`` of ``label`` lies inside ``outer_term`` of another label, ``outer`` (``tree`` inside
    ``palm tree``, ``shape`` inside circle's synonym ``round shape``)."""

    label: str
    term: str
    outer: str
    outer_term: str

    def describe(self) -> str:
        """The containment in words, for a warning line."""
        inner = f"the label {self.label!r}" if self.term == self.label else \
            f"{self.term!r} (a synonym of {self.label!r})"
        outer = f"the label {self.outer!r}" if self.outer_term == self.outer else \
            f"{self.outer_term!r} (a synonym of {self.outer!r})"
        return (f"{inner} lies inside {outer}: a sentence naming {self.outer!r} so names {self.label!r} too; if "
                f"every {self.outer} is a {self.label}, make it a parent (`tagger labels set {self.outer!r} "
                f"--parent {self.label!r}`), else rename one")


def _singulars(word: str) -> set[str]:
    """Words whose plural ``word`` may be (a superset: ``trees`` -> ``tree``, ``tre``...)."""
    out = {word}
    for end, rep in (("s", ""), ("es", ""), ("ies", "y"), ("ves", "f"), ("ves", "fe")):
        if word.endswith(end):
            out.add(word[:-len(end)] + rep)
    out.update(k for k, v in _IRREGULAR_PLURALS.items() if v == word)
    return out


def word_stems(term: str) -> set[str]:
    """Every word of ``term`` (folded: NFKC, case-folded) and the words it may be the plural of
    (``sports cars``: ``sports``, ``sport``, ``cars``, ``car``...): two terms sharing one share a word."""
    return {s for w in _term_words(fold(term)) for s in _singulars(w)}


def term_keys(term: str) -> set[str]:
    """The folded spellings, words run together, that name ``term`` to the validator (``bow tie``:
    ``bowtie``, ``bowties``...): two terms sharing one name the same thing (``bowtie``)."""
    return set(_surface_keys(fold(term)))


def _pieces(term: str) -> list[str]:
    """A term's words cut at punctuation and symbols too (``dot.ted``: ``dot``, ``ted``; ``star!``:
    ``star``), where the validator's pattern finds a shorter term inside it: the index of :func:`terms_inside`."""
    words = _term_words(term)
    cut = ["".join(" " if unicodedata.category(c)[0] in "PS" else c for c in w).split() for w in words]
    return [p for ps in cut for p in ps] or words


def terms_inside(terms: Mapping[str, Sequence[str]], edited: Iterable[str] | None = None,
                 parents: Mapping[str, Sequence[str]] | None = None) -> list[TermInside]:
    """Where a term (name or synonym) of one label lies inside a longer term of another, one of the two
    among the ``edited`` labels (default: all); a label inside a descendant's term is left out (the
    hierarchy makes the descendant's sentences positives for it). Indexed by word, confirmed by the
    validator's own pattern."""
    holding: dict[str, list[tuple[str, str]]] = {}  # a word (or its singular) -> the terms holding it
    starting: dict[str, list[tuple[str, str]]] = {}  # a first word -> the terms starting with it
    for label, syns in terms.items():
        for term in dict.fromkeys((label, *syns)):
            ws = _pieces(term)
            starting.setdefault(ws[0], []).append((label, term))
            for key in {k for w in ws for k in _singulars(w)}:
                holding.setdefault(key, []).append((label, term))
    found: dict[tuple[str, str, str, str], None] = {}
    for label in (terms if edited is None else [e for e in edited if e in terms]):
        for term in dict.fromkeys((label, *terms[label])):
            ws = _pieces(term)
            for other, o_term in holding.get(ws[0], ()):  # term inside a longer one
                found[(label, term, other, o_term)] = None
            for other, o_term in (p for w in ws for k in _singulars(w) for p in starting.get(k, ())):
                found[(other, o_term, label, term)] = None  # a shorter one inside term
    return [TermInside(*key) for key in found
            if key[0] != key[2] and len(key[1]) < len(key[3]) and not same_term(key[1], key[3])
            and _found(_term_pattern(key[1]), _spaced(key[3])) and not is_ancestor(parents or {}, key[0], key[2])]


def mentions(sentence: str, label: str, synonyms: Mapping[str, Sequence[str]] | None = None) -> bool:
    """Whether ``sentence`` mentions ``label`` or one of its synonyms as a whole word or phrase."""
    return _mentions(_spaced(sentence), label, synonyms)


def _mentions(text: str, label: str, synonyms: Mapping[str, Sequence[str]] | None) -> bool:
    return any(_found(_term_pattern(t), text) for t in (label, *((synonyms or {}).get(label, ()))))


def mentions_all(sentence: str, labels: Iterable[str],
                 synonyms: Mapping[str, Sequence[str]] | None = None) -> bool:
    """Whether every label (or a synonym, or a simple plural of either) appears in ``sentence``."""
    text = _spaced(sentence)
    return all(_mentions(text, lab, synonyms) for lab in labels)


@dataclass(frozen=True)
class Vocabulary:
    """Class names with their synonyms and optional plural overrides."""

    labels: tuple[str, ...]
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    plurals: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None,
               plurals: Mapping[str, str] | None = None) -> "Vocabulary":
        """Validate and normalise: labels unique and non-empty; synonyms of other labels are ignored."""
        labs = tuple(str(x) for x in labels)
        if not labs:
            raise ConfigError("the vocabulary has no labels")
        folded: dict[str, str] = {}
        for lab in labs:
            other = folded.get(fold(lab))
            if other is not None:
                why = "twice" if other == lab else f"and {other!r} (they differ only by case or width)"
                raise ConfigError(f"duplicate labels in the vocabulary: {lab!r} {why}")
            folded[fold(lab)] = lab
            problem = name_problem(lab)
            if problem:
                raise ConfigError(f"label {lab!r} {problem}")
        given = synonyms or {}
        syn = {k: tuple(str(s) for s in given[k]) for k in labs if k in given}
        if len(syn) < len(given):
            logger.debug("ignoring synonyms of %d label(s) outside the vocabulary", len(given) - len(syn))
        for term in (*labs, *(s for v in syn.values() for s in v)):
            problem = name_problem(term)
            if problem:
                raise ConfigError(f"label or synonym {term!r} {problem}")
            _term_words(term)  # its pattern is compiled when first matched (10^4 labels: seconds)
        return cls(labs, syn, dict(plurals or {}))

    def names(self, label: str) -> tuple[str, ...]:
        """The label followed by its synonyms."""
        return (label, *self.synonyms.get(label, ()))

    def plural(self, name: str) -> str:
        """Plural of a label or synonym, honouring the overrides."""
        return plural(name, self.plurals)

    def mentions_all(self, sentence: str, labels: Iterable[str]) -> bool:
        """:func:`mentions_all` with this vocabulary's synonyms."""
        return mentions_all(sentence, labels, self.synonyms)

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (stable order) used in corpus configs and ids."""
        return {"labels": list(self.labels),
                "synonyms": {k: list(self.synonyms[k]) for k in self.labels if k in self.synonyms},
                "plurals": dict(sorted(self.plurals.items()))}
