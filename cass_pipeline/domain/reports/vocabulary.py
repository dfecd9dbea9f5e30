"""A site's report vocabulary as data: the words its reports use for vessels, grades, normal
findings, negations, lesions and section headings, in YAML files, one language a file.

English is built in: the patterns of `lexicon.py`, and `vocabulary/en.yaml` for plain words
("NAD", "clean") and (`typos_of`) the words typing errors are read against. A site adds its
own files (`CASS_REPORT_VOCABULARY`, paths separated by the system's path separator);
`vocabulary/de.yaml` and `vocabulary/fr.yaml` are examples. Adding a word needs no code.
Every word keeps the file it came from: `cass parse-report --explain` names it.

Words of another language: the example files' words (German, French), where their file's
language is not in use, are looked for too; a report that uses them is held for review
(`flags`), not read as if they were English ("keine Plaques" is no plaque).

Typing errors: a vessel or grade word of 5 letters or more is also read with an edit
distance of 1 (2 from 8 letters; a swap of two letters counts 1), never an abbreviation
(a word written in capitals) and never a word that only adds or drops an ending
("marginally", "moderately"). Each such reading is a note for the reviewer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cass_pipeline.domain.anatomy import BRANCHES
from cass_pipeline.domain.reports import lexicon as lx
from cass_pipeline.domain.storage import read_yaml

BUILT_IN = Path(__file__).with_name("vocabulary") / "en.yaml"
#: The example files shipped beside it, one language each.
EXAMPLES = tuple(sorted(p for p in BUILT_IN.parent.glob("*.yaml") if p != BUILT_IN))
#: The file's keys: the concept (`parser.CONCEPTS` label) each list of words is read as.
WORD_LISTS = {"normal": "NORMAL", "negations": "NEG", "nouns": "NOUN"}
#: ...and the keys whose words map to a value: a branch, a grade.
VALUED = {"vessels": "VESSEL", "grades": "GRADE"}
#: What each concept is called where a word is explained.
CONCEPT_NAMES = {
    "VESSEL": "vessel",
    "GRADE": "grade",
    "NORMAL": "normal",
    "NEG": "negation",
    "NOUN": "lesion word",
}
#: The headings a file may name: the impression, and sections that hold no finding.
HEADINGS = ("impression", "not_findings")
#: Concepts whose words are read despite a typing error.
FUZZY_CONCEPTS = ("VESSEL", "GRADE")
MIN_FUZZY_LETTERS, LONG_WORD = 5, 8


class VocabularyError(ValueError):
    """A vocabulary file that cannot be read as one."""


@dataclass(frozen=True)
class Word:
    """One word or phrase of a vocabulary: the concept it is read as, its value (a branch or
    a grade, else empty) and the file it came from."""

    text: str
    concept: str
    value: str
    source: str
    #: False for a word only typing errors are read against (`typos_of`).
    exact: bool = True


@dataclass(frozen=True)
class WordUse:
    """A vocabulary word as a report used it: where, as written, and its edit distance
    (0: as the file spells it)."""

    start_char: int
    end_char: int
    written: str
    word: Word
    distance: int = 0


def key(text: str) -> str:
    """A word as looked up: lower case, one space between words."""
    return " ".join(text.lower().split())


def alternation(texts) -> str:
    """Words or phrases as one regular-expression alternative each (longest first, any
    spacing between the words)."""
    phrases = sorted({key(t) for t in texts}, key=len, reverse=True)
    return "|".join(r"\s+".join(map(re.escape, phrase.split())) for phrase in phrases)


def phrase_pattern(texts: list[str]) -> re.Pattern | None:
    """One expression for whole words or phrases."""
    if not texts:
        return None
    return re.compile(rf"(?<![\w-])(?:{alternation(texts)})(?![\w-])", re.I)


@dataclass(frozen=True)
class VocabularyFile:
    """What one file says: its language, words, headings, and the real words never read as
    typing errors."""

    language: str
    words: list[Word]
    headings: dict[str, list[str]]
    not_typos: list[str]


def read_vocabulary_file(path: Path) -> VocabularyFile:
    """One file's words; VocabularyError naming what is wrong."""
    try:
        raw = read_yaml(path) or {}
    except (OSError, ValueError) as error:
        raise VocabularyError(f"{path}: {error}") from error
    if not isinstance(raw, dict):
        raise VocabularyError(f"{path}: expected a mapping of word lists")
    unknown = set(raw) - {"language", *WORD_LISTS, *VALUED, "headings", "not_typos", "typos_of"}
    if unknown:
        raise VocabularyError(f"{path}: unknown keys {sorted(unknown)}")
    source, words = path.name, []
    for name, concept in WORD_LISTS.items():
        words += [Word(str(t), concept, "", source) for t in raw.get(name) or []]
    for exact, lists in ((True, raw), (False, raw.get("typos_of") or {})):
        for name, concept in VALUED.items():
            for value, texts in (lists.get(name) or {}).items():
                check_value(path, concept, str(value))
                words += [Word(str(t), concept, str(value), source, exact) for t in texts or []]
    headings = raw.get("headings") or {}
    if set(headings) - set(HEADINGS):
        raise VocabularyError(f"{path}: headings are {', '.join(HEADINGS)}")
    named = {kind: [str(t) for t in headings.get(kind) or []] for kind in HEADINGS}
    not_typos = [key(str(t)) for t in raw.get("not_typos") or []]
    return VocabularyFile(str(raw.get("language") or source), words, named, not_typos)


def check_value(path: Path, concept: str, value: str) -> None:
    """A vessel word must name branches (or the dominant side's PDA/PLV), a grade word a
    grade the parser knows."""
    if concept == "VESSEL":
        bad = [b for b in value.split() if b not in BRANCHES and lx.DOMINANT not in b]
        if bad:
            raise VocabularyError(f"{path}: unknown branch {bad[0]!r}")
    elif value not in lx.GRADE_RANGES:
        known = ", ".join(sorted(lx.GRADE_RANGES))
        raise VocabularyError(f"{path}: unknown grade {value!r} (one of {known})")


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """The words of the built-in file and a site's files (a later file's word wins)."""

    words: tuple[Word, ...]
    headings: dict[str, tuple[str, ...]]
    sources: tuple[str, ...]
    not_typos: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset({"en"})

    def patterns(self) -> list[tuple[str, re.Pattern]]:
        """Concept label and the expression of its words."""
        by_concept: dict[str, list[str]] = {}
        for word in (w for w in self.words if w.exact):
            by_concept.setdefault(word.concept, []).append(word.text)
        return [(c, p) for c, texts in by_concept.items() if (p := phrase_pattern(texts))]

    def heading(self, kind: str) -> re.Pattern | None:
        """A line that starts with one of the headings of `kind`, up to its colon."""
        texts = self.headings.get(kind, ())
        if not texts:
            return None
        return re.compile(rf"^[ \t]*(?:{alternation(texts)})\b[^\n:]{{0,20}}:", re.I | re.M)

    @property
    def phrase_words(self) -> frozenset[str]:
        """The words of the phrases typing errors are read against ("left main")."""
        return phrase_words_of(self)

    def word(self, concept: str, written: str) -> Word | None:
        return word_table(self).get((concept, key(written)))

    def fuzzy(self, written: str) -> tuple[Word, int] | None:
        """The vessel or grade word `written` is a typing error of, and the distance."""
        return typo_of(self, key(written))

    def foreign_words(self) -> tuple[Word, ...]:
        """The example files' words in a language not in use that none in use shares, but
        for abbreviations of two letters ("CD", "HS": too often something else)."""
        return foreign_words_of(self)


@lru_cache(maxsize=8)
def foreign_words_of(vocabulary: Vocabulary) -> tuple[Word, ...]:
    own = {key(w.text) for w in vocabulary.words}
    return tuple(
        word
        for path in EXAMPLES
        if (example := read_vocabulary_file(path)).language not in vocabulary.languages
        for word in example.words
        if word.exact and key(word.text) not in own and len(word.text) > 2
    )


@lru_cache(maxsize=1 << 16)  # reports repeat their words: each is looked at once
def typo_of(vocabulary: Vocabulary, text: str) -> tuple[Word, int] | None:
    """`Vocabulary.fuzzy` of a looked-up form."""
    if len(text) < MIN_FUZZY_LETTERS or text in vocabulary.not_typos:
        return None
    best = None
    for target, limit, word in fuzzy_targets(vocabulary):
        if (
            abs(len(target) - len(text)) > limit
            or (target[0] != text[0] and target[1] != text[1])  # typos spare one of two
            or inflected(text, target)
        ):
            continue
        distance = edit_distance(text, target, limit)
        if 0 < distance <= limit and (best is None or distance < best[1]):
            best = (word, distance)
    return best


@lru_cache(maxsize=8)
def phrase_words_of(vocabulary: Vocabulary) -> frozenset[str]:
    return frozenset(
        w for target, *_ in fuzzy_targets(vocabulary) if " " in target for w in target.split()
    )


@lru_cache(maxsize=8)
def word_table(vocabulary: Vocabulary) -> dict[tuple[str, str], Word]:
    return {(w.concept, key(w.text)): w for w in vocabulary.words}


@lru_cache(maxsize=8)
def fuzzy_targets(vocabulary: Vocabulary) -> tuple[tuple[str, int, Word], ...]:
    """The words typing errors are read against, looked-up form and allowed distance first:
    vessel and grade words of 5 letters or more not written in capitals (abbreviations)."""
    targets = []
    for word in vocabulary.words:
        letters = len(word.text.replace(" ", ""))
        if (
            word.concept in FUZZY_CONCEPTS
            and letters >= MIN_FUZZY_LETTERS
            and not word.text.isupper()
        ):
            targets.append((key(word.text), 1 if letters < LONG_WORD else 2, word))
    return tuple(targets)


def inflected(text: str, target: str) -> bool:
    """Whether one only adds letters at the end of the other ("marginally", "moderately")."""
    return text.startswith(target) or target.startswith(text)


def edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance with a swap of two neighbouring letters counting 1 (optimal
    string alignment); anything above `limit` is returned as `limit` + 1."""
    previous2, previous = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return min(previous[-1], limit + 1)


@lru_cache(maxsize=8)
def load_vocabulary(site_files: tuple[str, ...] = ()) -> Vocabulary:
    """The built-in English words, then each site file's (VocabularyError when one cannot
    be read)."""
    words: dict[tuple[str, str], Word] = {}
    headings: dict[str, list[str]] = {kind: [] for kind in HEADINGS}
    not_typos: set[str] = set()
    languages: set[str] = set()
    for path in (BUILT_IN, *map(Path, site_files)):
        file = read_vocabulary_file(Path(path))
        words.update({(w.concept, key(w.text)): w for w in file.words})
        for kind, texts in file.headings.items():
            headings[kind] += texts
        not_typos.update(file.not_typos)
        languages.add(file.language)
    return Vocabulary(
        tuple(words.values()),
        {kind: tuple(texts) for kind, texts in headings.items()},
        (BUILT_IN.name, *(Path(p).name for p in site_files)),
        frozenset(not_typos),
        frozenset(languages),
    )


def site_files(value: str | None) -> tuple[str, ...]:
    """The files a setting names (paths separated by the system's path separator)."""
    return tuple(p for p in (value or "").split(os.pathsep) if p.strip())
