"""Rule-based spaCy pipeline that turns a de-identified CCTA report into findings per branch.

Pipeline: `spacy.blank("en")` + `cass_sentences` (sentence ends at . ! ? and at line breaks
that do not just wrap a sentence) +
`cass_concepts` (the regular expressions of `lexicon.py` as spans in `doc.spans["concepts"]`).
`read_report` then works clause by clause (clauses end at ";" and at but/however/although/
except), with these rules:

- A finding is negated by a negation cue at most 4 tokens before it, no comma between (or
  only words that qualify a plaque: "no focal or diffuse calcified or noncalcified
  plaque"), with no other finding in between but nouns or "occlusion" listed with it ("no
  significant stenosis or occlusion"; "no stenosis >50%" is the range below 50%); by
  "excluded", "ruled out", "absent", "not seen", "-free" after it in the clause ("plaque was
  not identified", "plaque-free"), "excluded"/"ruled out" also right before it; "none" after
  a colon negates only the finding that labels the line ("Stenosis of the LAD: none").
  Negation never crosses a clause ("no significant stenosis; mild plaque in the LCx"). A cue
  that negates nothing in a clause that grades a branch is unread evidence (kind
  "negation"), and so is a word of a language not in use (kind "foreign",
  `Vocabulary.foreign_words`): both hold the report (`Clause.loose_negations` says where
  such a cue counts).
- A finding attaches to the vessel(s) after it when a preposition links them ("mild stenosis
  of the LAD and D1") or the vessel follows at once ("normal D1"), not to a landmark
  ("70% just proximal to D1", "beyond the first diagonal"); otherwise to the vessel(s)
  just before it ("LAD, LCx and RCA are normal", "LAD: 70-90%"); otherwise to the line's label
  vessel ("LAD: no stenosis; mild plaque distally"), or to the vessels of the sentence's
  previous clause ("no stenosis in the LAD but mild plaque distally"); "it", "its", "the
  stent", "the lesion" refer to the last vessel named. A line's label goes on over the
  sentences of its line ("RCA: Dominant. Mild plaque."); the vessel a branch arises from is
  not the one its finding speaks of ("the PDA arises from the circumflex and is normal").
- Modifiers (stent, graft, bridge, high-risk plaque, non-diagnostic) attach the same way.
- Percent stenosis expressions inside a clause that describes a myocardial bridge with
  systolic compression belong to the bridge and are dropped.
- Sections that hold no finding of today's study are not read for findings: history and
  indication (a relative's stenosis, a past intervention), technique (phases in percent),
  calcium scoring, a template's key; each runs from its heading to a blank line or the next
  labelled line. The calcium score and the dominance are still read from them. A template's
  option whose box is not ticked ("[ ] RCA: 25-49%", "LAD: [x] normal [ ] 50-69%")
  states nothing.
- A grade word that labels a line ("Most severe: ...") or speaks of calcium ("severe
  calcification", not "severe calcified stenosis") grades no stenosis; the CAD-RADS version
  ("CAD-RADS 2.0 category 4A") is not the category.
- A finding the study cannot rule out ("... cannot be excluded", "cannot exclude ...") is no
  finding: its branch is non-diagnostic (modifier N) and gets no label.
- A grade given for an earlier study ("previously 50-69%", "50-69% on the prior study") is
  not today's, unless the report says it is unchanged.
- Mentions after an addendum or corrected-impression heading revise (`ReportReading.revises`):
  the labels take their grades in place of the earlier ones for the branches they name.
- Dictation: a line that starts with a vessel's name starts a sentence, and so do
  "impression", "findings", "conclusion"; a finding right before a vessel that has its own
  grade ("lad less than 25 percent diagonal normal") is not that vessel's; a preposition links
  a finding to the vessel after it only when nothing but "the" or a position word stands
  between ("stenosis in the mid segment the circumflex is normal" does not link).
- Tables: where a table's header names segments ("| Segment |", "Seg<TAB>", "| # |"), the
  number in a row's first cell is the SCCT segment; a bare number in a column headed
  "stenosis" or "%" is a percent; a row without a finding ("absent", "n/a") gives its branch
  no label.
- A finding placed on a vessel that a graft names as its destination ("SVG to OM1: 70%") is
  the graft's (`Mention.on_graft`), not the native branch's, unless "native" stands before
  that vessel with no graft between; a graft named elsewhere in the sentence changes
  nothing.
- Coded rows ("seg01_pRCA=0", "pLAD=75") read as segment and percent; legend lines
  ("n.e. = not evaluable") and a category stated for an earlier study are not read; "no
  more than" does not negate, "plaque burden" is not a grade, "patent" beside a stent
  speaks of the stent.
- Coverage: every vessel, percentage, segment and grade word of a read sentence that no
  finding used is listed in `ReportReading.unread` (`flags.coverage_flags` holds the report
  when it is grade evidence on a branch without a label).
- Report-level facts: an anomalous origin (modifier E), ischaemia from a CT-FFR value or in
  words (I+, I-, I+/-) and the segment involvement score (plaque burden P1-P4 without a
  calcium score).
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass, field

from cass_pipeline.domain.anatomy import SCCT_SEGMENTS
from cass_pipeline.domain.reports import lexicon as lx
from cass_pipeline.domain.reports.spacy_light import Doc, Language, Span, spacy
from cass_pipeline.domain.reports.vocabulary import (
    MIN_FUZZY_LETTERS,
    Vocabulary,
    WordUse,
    key,
    load_vocabulary,
    phrase_pattern,
)

LABEL_LINE = re.compile(r"[^\n:.]{0,40}:")
FINDING_LABELS = {"PCT", "GRADE", "OCCLUSION", "IRREG", "NORMAL", "NOUN"}
MODIFIER_LABELS = {"STENT", "GRAFT", "BRIDGE", "HRP", "NONDIAG"}
VESSEL_LABELS = {"VESSEL", "SEGMENT"}
#: Findings a negation cue negates in a list after the first ("no plaque, stenosis or
#: occlusion").
LISTED = {"NOUN", "OCCLUSION"}
#: Concept label and expression, in priority order for overlaps of equal length.
CONCEPTS: list[tuple[str, re.Pattern]] = [
    ("NONDIAG", lx.NONDIAGNOSTIC_REGEX),
    ("CADRADS", lx.CAD_RADS_REGEX),
    ("CALCIUM", lx.CALCIUM_REGEX),
    ("DOMINANCE", lx.DOMINANCE_REGEX),
    ("SEGMENT", lx.SEGMENT_REGEX),
    ("PCT", lx.PERCENT_REGEX),
    ("OCCLUSION", lx.OCCLUSION_REGEX),
    ("IRREG", lx.IRREGULARITY_REGEX),
    ("HRP", lx.HRP_REGEX),
    ("GRADE", lx.GRADE_REGEX),
    ("BRIDGE", lx.BRIDGE_REGEX),
    ("STENT", lx.STENT_REGEX),
    ("GRAFT", lx.GRAFT_REGEX),
    ("VESSEL", lx.VESSEL_REGEX),
    ("NORMAL", lx.NORMAL_REGEX),
    ("NOUN", lx.NOUN_REGEX),
    ("NOTEXCLUDED", lx.NOT_EXCLUDED_REGEX),
    ("UNCERTAIN", lx.UNCERTAIN_REGEX),
    ("NEG", lx.NEGATION_REGEX),
    ("POSTNEG", lx.POST_NEGATION_REGEX),
    ("PRIOR_BEFORE", lx.PRIOR_BEFORE_REGEX),
    ("PRIOR_AFTER", lx.PRIOR_AFTER_REGEX),
    ("PRONOUN", lx.PRONOUN_REGEX),
    ("BREAK", lx.CLAUSE_BREAK_REGEX),
]
#: A word of a language not in use (`Vocabulary.foreign_words`): never read, always unread.
FOREIGN = "FOREIGN"
PRIORITY = {label: i for i, label in enumerate([*(label for label, _ in CONCEPTS), FOREIGN])}
ABBREVIATIONS = {"approx", "dr", "e.g", "i.e", "vs", "no", "seg", "ca", "prof", "st"}
MODIFIER_CODES = {"STENT": "S", "GRAFT": "G", "HRP": "HRP", "NONDIAG": "N", "BRIDGE": "bridge"}
#: Concepts that are facts of today's study wherever they stand (a technique line may state
#: the dominance, the calcium section holds the score).
FACTS = {"CALCIUM", "DOMINANCE"}
POST_HEDGE = re.compile(r"\?")
PREPOSITIONS = {"of", "in", "at", "involving", "within", "along", "affecting", "throughout", "on"}
#: Words between a graft and the vessel it goes to ("SVG to the OM1", "LIMA-LAD").
GRAFT_LINK = {"to", "the", "-", "onto", "on", "of", "graft", "grafts"}
#: How a mention found its branches (`Clause.targets`).
PLACED_AFTER = "the vessel after it (linked by a preposition, or at once)"
PLACED_BEFORE = "the vessel named before it in the clause"
PLACED_LATER = "the vessel named later in the clause"
PLACED_BY_LABEL = "the line's label, or the vessel of the clause before"
PLACED_BY_PRONOUN = "the last vessel named ('it', 'this vessel')"
#: ...when the clause before named several: the reader may have meant another one.
PLACED_BY_DOUBTFUL_PRONOUN = "the last of several vessels named ('its'): doubtful"
UNPLACED = "no vessel"
#: What names the vessel a branch arises from, not the one a finding speaks of.
ORIGIN = re.compile(r"\b(?:aris(?:es|ing)|originat(?:es|ing))\s+from(?:\s+the)?\s*$", re.I)
#: Words that start a section, so a sentence, even dictated without punctuation.
HEADING_WORDS = {"impression", "conclusion", "findings", "summary"}
#: Words after which a line that starts with a vessel's name still wraps the sentence.
CONNECTIVES = PREPOSITIONS | lx.COORDINATION | {"a", "an", "with"}


@Language.component("cass_sentences")
def cass_sentences(doc: Doc) -> Doc:
    """Sentences end at . ! ? (not after common abbreviations) and at line breaks, except
    where a wrapped line goes on: it starts in lower case, is not a "label:" line, the line
    before did not end with . ! ? or :, and it does not start with a vessel's name (as a
    dictated line does) unless the line before ended with "of", "the", "and"..."""
    before, previous, last = "", "", ""
    text = doc.text
    for token in doc:
        if token.i == 0:
            token.is_sent_start = True
        else:
            ends = previous in {".", "!", "?"} and before.rstrip(".") not in ABBREVIATIONS
            line_break = "\n" in previous
            wrapped = (
                line_break
                and token.text[:1].islower()
                and last not in {".", "!", "?", ":"}
                and not LABEL_LINE.match(text, token.idx)
                and not lx.CODED_ROW.match(text, token.idx)
                and (last.lower() in CONNECTIVES or not lx.VESSEL_REGEX.match(text, token.idx))
            )
            heading = token.lower_ in HEADING_WORDS and before not in {"the", "my", "an"}
            token.is_sent_start = ends or (line_break and not wrapped) or heading
        before, previous = previous.lower(), token.text_with_ws
        if previous.endswith(" "):
            previous = previous[:-1]
        if not token.is_space:
            last = token.text
    return doc


def table_cells(line: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of each cell of a pipe or tab table's line, stripped."""
    cells, position = [], 0
    for i, part in enumerate(re.split(r"[|\t]", line.rstrip("\n"))):
        text = part.strip()
        if not (i == 0 and not text and line.lstrip().startswith("|")):
            offset = position + len(part) - len(part.lstrip())
            cells.append((offset, offset + len(text), text))
        position += len(part) + 1
    return cells


def table_concepts(text: str) -> list[tuple[int, int, str]]:
    """Concepts a table's layout gives: the first cell's number where the header names
    segments (an SCCT segment), a bare number in a column headed "stenosis" or "%" (a
    percent); and a coded row's segment and value ("seg01_pRCA=0", "pRCA=70")."""
    found, header, position = [], None, 0
    for line in text.splitlines(keepends=True):
        if "|" not in line and "\t" not in line:
            header = None
        elif header is None:
            names = [cell for _, _, cell in table_cells(line)]
            header = (
                bool(lx.SEGMENT_TABLE_HEADER.match(line)),
                next((i for i, n in enumerate(names) if lx.PERCENT_COLUMN.search(n)), None),
            )
        else:
            cells = table_cells(line)
            if header[0] and cells and cells[0][2].isdigit():
                found.append((position + cells[0][0], position + cells[0][1], "SEGMENT"))
            column = header[1]
            if column is not None and column < len(cells) and cells[column][2].isdigit():
                found.append((position + cells[column][0], position + cells[column][1], "PCT"))
        position += len(line)
    for row in lx.CODED_ROW.finditer(text):
        value = (*row.span("value"), "PCT") if row.group("value") else (*row.span("ne"), "NONDIAG")
        found += [(*row.span("seg"), "SEGMENT"), value]
    for row in lx.CODED_VESSEL.finditer(text):
        if lx.VESSEL_REGEX.fullmatch(row.group("name")):
            found.append((*row.span("value"), "PCT"))
    return found


def stripped(match: re.Match) -> tuple[int, int]:
    """A match's span without the spaces at its ends."""
    start, end = match.span()
    text = match.group(0)
    return start + len(text) - len(text.lstrip()), end - (len(text) - len(text.rstrip()))


#: A word of letters (the windows typing errors are looked for in).
LETTERS = re.compile(r"[^\W\d_]+")


def typo_candidates(text: str, used: bytearray, vocabulary: Vocabulary) -> list[WordUse]:
    """Runs of one to three words that no concept took and that are a vessel or grade word
    of the vocabulary with a typing error ("Diagnol", "Lef main", "Rigth coronary"); a run
    of several words only where one of them belongs to such a phrase ("main", "coronary")."""
    words = [(m.start(), m.end(), m.group(0).lower()) for m in LETTERS.finditer(text)]
    phrase_words = vocabulary.phrase_words
    found = []
    for size in (3, 2, 1):
        for i in range(len(words) - size + 1):
            run = words[i : i + size]
            start, end = run[0][0], run[-1][1]
            if (
                end - start < MIN_FUZZY_LETTERS
                or (size > 1 and not any(w in phrase_words for *_, w in run))
                or any(used[start:end])
                or any(text[a[1] : b[0]].strip() for a, b in itertools.pairwise(run))
            ):
                continue
            if (match := vocabulary.fuzzy(text[start:end])) is not None:
                found.append(WordUse(start, end, text[start:end], *match))
                used[start:end] = b"\x01" * (end - start)
    return found


@Language.factory("cass_concepts", default_config={"site_files": []})
def make_concepts(nlp: Language, name: str, site_files: list[str]):
    """The concept component over the built-in English vocabulary and a site's files."""
    vocabulary = load_vocabulary(tuple(site_files))
    own_patterns = vocabulary.patterns()
    foreign = {
        key(w.text): w
        for w in vocabulary.foreign_words()
        if not any(pattern.fullmatch(w.text) for _, pattern in CONCEPTS)
    }
    foreign_pattern = phrase_pattern(list(foreign))

    def cass_concepts(doc: Doc) -> Doc:
        """Every lexicon and vocabulary match as a labelled span (a vocabulary word's branch
        or grade as its `kb_id`); overlaps go to the longest, then by priority, the built-in
        pattern before a file's word; then the vessel and grade words with a typing error.
        The vocabulary words used are in `doc.user_data["cass_words"]`."""
        text = doc.text
        candidates = [(a, b, label, None) for a, b, label in table_concepts(text)]
        for label, pattern in CONCEPTS:
            candidates += [(*stripped(m), label, None) for m in pattern.finditer(text)]
        for label, pattern in own_patterns:
            for m in pattern.finditer(text):
                word = vocabulary.word(label, m.group(0))
                candidates.append((*m.span(), label, WordUse(*m.span(), m.group(0), word)))
        for m in foreign_pattern.finditer(text) if foreign_pattern else ():
            word = foreign[key(m.group(0))]
            candidates.append((*m.span(), FOREIGN, WordUse(*m.span(), m.group(0), word)))
        candidates.sort(key=lambda c: (c[0] - c[1], PRIORITY[c[2]], c[3] is not None, c[0]))
        used = bytearray(len(text) + 1)
        chosen: list[tuple[int, int, str, WordUse | None]] = []
        for start, end, label, use in candidates:
            if end > start and not any(used[start:end]):
                used[start:end] = b"\x01" * (end - start)
                chosen.append((start, end, label, use))
        chosen += [
            (u.start_char, u.end_char, u.word.concept, u)
            for u in typo_candidates(text, used, vocabulary)
        ]
        spans, words = [], []
        for start, end, label, use in chosen:
            value = (use.word.source if label == FOREIGN else use.word.value) if use else ""
            span = doc.char_span(start, end, label=label, kb_id=value, alignment_mode="expand")
            if span is not None:
                spans.append(span)
                words += [use] if use and label != FOREIGN else []
        doc.spans["concepts"] = sorted(spans, key=lambda s: (s.start_char, s.end_char))
        doc.user_data["cass_words"] = sorted(words, key=lambda u: u.start_char)
        doc.user_data["cass_vocabulary"] = vocabulary
        return doc

    return cass_concepts


def build_nlp(site_files: tuple[str, ...] = ()) -> Language:
    """The report pipeline: blank English tokenizer plus the two rule components, reading
    the built-in vocabulary and a site's files."""
    nlp = spacy.blank("en")
    infixes = [*nlp.Defaults.infixes, r"[=_;|]"]  # coded rows: "seg01_pRCA=0;seg02_mRCA=30"
    nlp.tokenizer.infix_finditer = spacy.util.compile_infix_regex(infixes).finditer
    nlp.add_pipe("cass_sentences")
    nlp.add_pipe("cass_concepts", config={"site_files": list(site_files)})
    return nlp


@dataclass
class Mention:
    """One finding or modifier, where it is in the text and which branches it speaks about."""

    sentence_index: int
    start_char: int
    end_char: int
    text: str
    concept: str
    branches: list[str]
    #: The rule that placed it on its branches (`cass parse-report --explain` shows it).
    placed_by: str = ""
    grade: str | None = None
    pct_low: int | None = None
    pct_high: int | None = None
    negated: bool = False
    uncertain: bool = False
    modifier: str | None = None
    bare_50: bool = False
    #: A finding about a bypass graft ("SVG to OM1: 70%"), not about the native branch.
    on_graft: bool = False


@dataclass(frozen=True)
class Unread:
    """Evidence a read sentence holds that no label used: a vessel, a percentage, a segment
    or a grade word, or a word of a language not in use (`source`: its file), with the
    branches its sentence names."""

    start_char: int
    end_char: int
    text: str
    kind: str
    sentence_index: int
    branches: tuple[str, ...]
    source: str = ""


@dataclass
class ReportReading:
    """All mentions of one report plus report-level facts."""

    mentions: list[Mention] = field(default_factory=list)
    dominance: str = "right"
    calcium_score: float | None = None
    stated_cad_rads: str | None = None
    stated_modifiers: list[str] = field(default_factory=list)
    globally_normal: bool = False
    #: Report-level modifiers the text states: an anomalous origin (E), ischaemia (I+, I-,
    #: I+/-) from a CT-FFR value or in words, and the segment involvement score.
    anomalous: bool = False
    ischaemia: str | None = None
    segment_involvement: int | None = None
    #: Where an addendum or corrected impression starts (its grades revise the earlier ones).
    revision_start: int | None = None
    #: Where the impression (conclusion, opinion) starts, if the report has one.
    impression_start: int | None = None
    #: Where the stated CAD-RADS category is written.
    stated_span: tuple[int, int] | None = None
    #: The words of a vocabulary file read (a site's, or a typing error of any).
    words: list[WordUse] = field(default_factory=list)
    #: The evidence no label used (the coverage check, `unread_evidence`).
    unread: list[Unread] = field(default_factory=list)
    #: The text read and its sentences (character spans, by `Mention.sentence_index`).
    text: str = ""
    sentences: list[tuple[int, int]] = field(default_factory=list)

    def sentence_of(self, mention: Mention | Unread) -> str:
        """The text of the sentence a mention (or an unread piece of evidence) stands in."""
        start, end = self.sentences[mention.sentence_index]
        return self.text[start:end].strip()

    def revises(self, mention: Mention) -> bool:
        return self.revision_start is not None and mention.start_char >= self.revision_start


def grade_range(word: str) -> tuple[int, int]:
    key = re.sub(r"[\s-]+", "-", word.lower())
    key = {
        "hemodynamically-significant": "significant",
        "haemodynamically-significant": "significant",
    }.get(key, key)
    return lx.GRADE_RANGES[key]


def value_of(span: Span) -> tuple[int, int, str | None, bool] | None:
    """(low, high, grade word, bare 50%) a finding span stands for, None when not readable."""
    text, label = span.text, span.label_
    if label == "GRADE" and span.kb_id_:  # a vocabulary file's grade word
        return (*grade_range(span.kb_id_), span.kb_id_, False)
    if label == "PCT" and text.isdigit():  # a bare number in a table's percent column
        value = int(text)
        return (value, value, None, value == 50) if value <= 100 else None
    if label == "PCT":
        m = lx.PERCENT_REGEX.search(text)
        if m is None:
            return None
        if m.group("a") is not None:
            low, high = sorted((lx.number(m.group("a")), lx.number(m.group("b"))))
            return (low, high, None, False) if high <= 100 else None
        value, cmp = lx.number(m.group("c")), (m.group("cmp1") or "").lower().strip()
        if value > 100:
            return None
        if cmp in {"<", "less than", "under"}:
            return (1, value - 1, None, False) if value > 1 else (0, 0, None, False)
        if cmp in {"<=", "≤", "up to"}:
            return 1, value, None, False
        if cmp in {">", "greater than", "more than", "over"}:
            return (min(value + 1, 100), 99 if value < 99 else 100, None, False)
        if cmp in {">=", "≥", "at least"} or m.group("plus"):
            return value, max(value, 99), None, False
        return value, value, None, value == 50
    if label == "GRADE":
        m = lx.GRADE_REGEX.search(re.sub(r"ly$", "", text, flags=re.I))  # "mildly narrowed"
        if m is None:
            return None
        words = [lx.CLIPPED_GRADES.get(w.lower(), w) for w in (m.group("g1"), m.group("g2")) if w]
        if m.group("neg"):
            return (
                *grade_range(
                    "non-" + ("obstructive" if "obstr" in words[0].lower() else "significant")
                ),
                "non-significant",
                False,
            )
        ranges = [grade_range(w) for w in words]
        worst = max(range(len(words)), key=lambda i: ranges[i])
        return (*ranges[worst], re.sub(r"\s+", "-", words[worst].lower()), False)
    if label == "OCCLUSION":
        m = lx.OCCLUSION_REGEX.search(text)
        grade = "subtotal" if m and m.group("sub") else "occluded"
        return (*grade_range(grade), grade, False)
    if label == "IRREG":
        return (*grade_range("minimal"), "minimal", False)
    if label == "NORMAL":
        return (*grade_range("normal"), "normal", False)
    return None


def segment_numbers(text: str) -> set[int]:
    """The segments a mention lists: "1-4 and 16" is 1, 2, 3, 4 and 16 ("6-18", too wide
    for a range, is 6 and 18)."""
    numbers: set[int] = set()
    for item in lx.SEGMENT_ITEMS.finditer(text):
        first = int(item.group(1))
        last = int(item.group(2)) if item.group(2) else first
        numbers |= set(range(first, last + 1)) if 0 < last - first < 18 else {first, last}
    return numbers


def branches_of(span: Span, dominance: str) -> list[str]:
    """Canonical branches a vessel or segment mention names."""
    if span.label_ == "SEGMENT" and span.text.isdigit():
        return [SCCT_SEGMENTS[int(span.text)]] if int(span.text) in SCCT_SEGMENTS else []
    if span.label_ == "SEGMENT":
        return sorted({SCCT_SEGMENTS[n] for n in segment_numbers(span.text) if n in SCCT_SEGMENTS})
    side = "LCX" if dominance == "left" else "RCA"
    if span.kb_id_:  # a vocabulary file's vessel word
        return span.kb_id_.replace(lx.DOMINANT, side).split()
    m = lx.VESSEL_REGEX.search(span.text)
    if m is None:
        return []
    index = int(m.lastgroup[1:])
    return lx.VESSEL_PATTERNS[index][1].replace(lx.DOMINANT, side).split()


def is_landmark(doc: Doc, vessel: Span, floor: int) -> bool:
    """Whether the words before a vessel (from token `floor` on) make it a landmark of a
    finding, not its place ("just proximal to D1"); not where a stent of that vessel is the
    landmark ("just distal to the RCA stent")."""
    return bool(
        lx.LANDMARK.search(doc[max(floor, vessel.start - 6) : vessel.start].text)
        and not lx.STENT_REGEX.match(doc[vessel.end : vessel.end + 1].text)
    )


def gap_words(doc: Doc, left: Span, right: Span) -> list[str]:
    return [t.lower_ for t in doc[left.end : right.start] if not t.is_space]


def clauses_of(sentence: Span, concepts: list[Span]) -> list[list[Span]]:
    """The sentence's concept spans grouped by clause (split at BREAK spans and ';')."""
    clauses, current = [], []
    for span in concepts:
        if span.label_ == "BREAK":
            clauses.append(current)
            current = []
        else:
            current.append(span)
    clauses.append(current)
    return [c for c in clauses if c]


def non_finding_ranges(text: str, vocabulary: Vocabulary) -> list[tuple[int, int]]:
    """Character ranges of the sections that hold no finding of today's study (history,
    indication, technique, calcium scoring, a key): from the heading to a blank line, the
    next line that starts with another label ("FINDINGS:", "LAD:", "Dominance:") or a coded
    row ("seg01_pRCA=0"); legend lines
    that define terms ("n.e. = not evaluable", "3 = 50-69%"); and the options of a template
    whose box is not ticked ("[ ] 70-99%", to the next box or the line's end)."""
    ranges = []
    own = vocabulary.heading("not_findings")
    headings = [lx.NON_FINDING_HEADING, *([own] if own else [])]

    def is_heading(position: int) -> bool:
        return any(h.match(text, position) for h in headings)

    starts = sorted((m for h in headings for m in h.finditer(text)), key=lambda m: m.start())
    for heading in starts:
        blank = text.find("\n\n", heading.end())
        later = next(
            (
                m.start()
                for m in lx.LINE_LABEL.finditer(text, heading.end())
                if not is_heading(m.start())
            ),
            -1,
        )
        coded = lx.CODED_ROW.search(text, heading.end())
        ends = [e for e in (blank, later, coded.start() if coded else -1) if e >= 0]
        ranges.append((heading.start(), min(ends, default=len(text))))
    legends = [
        m.span()
        for m in lx.LEGEND_LINE.finditer(text)
        if not lx.CODED_ROW.match(text, m.start())
        and not lx.VESSEL_REGEX.search(m.group(0).split("=")[0])
        and not lx.SEGMENT_REGEX.search(m.group(0).split("=")[0])
    ]
    return ranges + legends + [option.span() for option in lx.UNTICKED_OPTION.finditer(text)]


def read_report(doc: Doc) -> ReportReading:
    """Mentions with their branches, negation and uncertainty, plus report-level facts."""
    reading = ReportReading(text=doc.text)  # Doc.text joins every token: read it once
    text = reading.text
    vocabulary = doc.user_data["cass_vocabulary"]
    skipped = non_finding_ranges(text, vocabulary)

    def is_skipped(position: int) -> bool:
        return any(a <= position < b for a, b in skipped)

    concepts = [
        c for c in doc.spans["concepts"] if c.label_ in FACTS or not is_skipped(c.start_char)
    ]
    revision = lx.REVISION_HEADING.search(text)
    reading.revision_start = revision.start() if revision else None
    headings = [lx.IMPRESSION_HEADING, *filter(None, [vocabulary.heading("impression")])]
    impressions = [m.start() for h in headings if (m := h.search(text))]
    reading.impression_start = min(impressions, default=None)
    reading.words = [u for u in doc.user_data["cass_words"] if not is_skipped(u.start_char)]
    sentences = list(doc.sents)  # Doc.sents walks every token: once
    reading.sentences = [(s.start_char, s.end_char) for s in sentences]
    for span in concepts:
        if span.label_ == "DOMINANCE":
            m = lx.DOMINANCE_REGEX.search(span.text)
            side = (m.group("a") or m.group("b") or "").lower()
            reading.dominance = "left" if side.startswith("left") else "right"
        elif span.label_ == "CALCIUM" and reading.calcium_score is None:
            m = lx.CALCIUM_REGEX.search(span.text)
            value = m.group("value").lower()
            reading.calcium_score = (
                0.0 if value in {"zero", "nil"} else float(value.replace(",", "."))
            )
        elif span.label_ == "CADRADS" and not of_an_earlier_study(reading, span):
            m = lx.CAD_RADS_REGEX.search(span.text)
            reading.stated_cad_rads = m.group("cat").upper()
            reading.stated_span = (span.start_char, span.end_char)
            reading.stated_modifiers = [
                code.strip().upper() for code in m.group("mods").split("/") if code.strip()
            ]
    last_vessels: list[str] = []
    reading.globally_normal = any(
        not is_skipped(m.start()) for m in lx.GLOBAL_NORMAL_REGEX.finditer(text)
    )
    read_stated_modifiers(text, is_skipped, reading)
    line_header: list[str] = []
    set_aside: list[Span] = []
    negations: list[Unread] = []  # cues that negate nothing (`Clause.loose_negations`)
    for s_index, sentence in enumerate(sentences):
        if is_skipped(sentence.start_char):
            continue
        inside = [c for c in concepts if c.start >= sentence.start and c.end <= sentence.end]
        header = label_vessels(doc, sentence, inside, reading.dominance)
        if starts_a_line(text, sentence.start_char):
            line_header = header
        elif not header and not any(
            c.label_ in VESSEL_LABELS and not is_landmark(doc, c, sentence.start) for c in inside
        ):
            header = line_header  # "RCA: Dominant. Mild plaque.": the line's label goes on
        context = header  # a clause naming no vessel speaks of the last one named before it
        for concepts_of_clause in clauses_of(sentence, inside):
            clause = Clause(
                doc,
                text,
                sentence.text,
                concepts_of_clause,
                reading.dominance,
                context,
                last_vessels,
            )
            found = clause.mentions(s_index)
            reading.mentions += found
            set_aside += clause.set_aside
            graded = tuple(sorted({b for m in found if not m.negated for b in m.branches}))
            negations += [
                Unread(cue.start_char, cue.end_char, cue.text, "negation", s_index, graded)
                for cue in clause.loose_negations(found)
            ]
            named = [
                b
                for c in concepts_of_clause
                if c.label_ in VESSEL_LABELS
                for b in branches_of(c, reading.dominance)
            ]
            if named:
                last_vessels = named[-1:]
                context = header or sorted(set(named))
    reading.unread = unread_evidence(doc, reading, sentences, concepts, set_aside, is_skipped)
    reading.unread += negations
    return reading


#: The evidence the coverage check follows, by concept.
EVIDENCE = {"VESSEL": "vessel", "SEGMENT": "segment", "PCT": "percent", "GRADE": "grade"}
EVIDENCE |= {"OCCLUSION": "grade", FOREIGN: "foreign"}
#: A line that may hold codes: an underscore, or "=".
CODED_LINE = re.compile(r"^[^\n]*[_=][^\n]*$", re.M)
#: A coded value no concept took ("pRCA=0", "RCA: 70"): evidence of a grade.
CODED_VALUE = re.compile(r"(?<==)[ \t]*\d{1,3}\b|(?<=:)[ \t]*\d{1,3}[ \t]*$", re.M)


def line_of(text: str, position: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return start, len(text) if end < 0 else end


def coded_evidence(text: str, covered: bytearray, side: str) -> list[tuple]:
    """(start, end, kind, branches) of the vessel names and coded values inside codes that
    no concept took ("pRCA" and "0" in "seg01_pRCA=0")."""
    found = []
    for line in CODED_LINE.finditer(text):  # words outside codes are the concepts' already
        for m in lx.LOOSE_VESSEL_REGEX.finditer(text, line.start(), line.end()):
            names = lx.VESSEL_PATTERNS[int(m.lastgroup[1:])][1].replace(lx.DOMINANT, side)
            found.append((m.start(), m.end(), "vessel", names.split()))
    found += [(m.start(), m.end(), "percent", []) for m in CODED_VALUE.finditer(text)]
    return [f for f in found if not any(covered[f[0] : f[1]])]


def unread_evidence(
    doc: Doc, reading: ReportReading, sentences: list[Span], concepts, set_aside, is_skipped
) -> list[Unread]:
    """Every vessel, percentage, segment and grade word of a read sentence that no placed
    finding used (or stands beside: "Moderate (50-69%)"), no rule set aside and, for a
    vessel, no finding of its sentence or line speaks of; and what codes hide from the
    concepts ("seg01_pRCA=0")."""
    text, unread = reading.text, []
    side = "LCX" if reading.dominance == "left" else "RCA"
    aside = {(c.start_char, c.end_char) for c in set_aside}
    covered = bytearray(len(text) + 1)
    for c in doc.spans["concepts"]:
        covered[c.start_char : c.end_char] = b"\x01" * (c.end_char - c.start_char)
    starts = [start for start, _ in reading.sentences]

    def sentence_of(position: int) -> int:
        return bisect.bisect_right(starts, position) - 1

    evidence: dict[int, list] = {}
    for c in concepts:
        evidence.setdefault(sentence_of(c.start_char), []).append(c)
    coded: dict[int, list] = {}
    for item in coded_evidence(text, covered, side):
        coded.setdefault(sentence_of(item[0]), []).append(item)
    placed = [m for m in reading.mentions if m.branches or m.on_graft]
    for s_index, sentence in enumerate(sentences):
        if is_skipped(sentence.start_char) or not (s_index in evidence or s_index in coded):
            continue
        inside, hidden = evidence.get(s_index, []), coded.get(s_index, [])
        named = {
            b
            for c in inside
            if c.label_ in VESSEL_LABELS
            for b in branches_of(c, reading.dominance)
        }
        named |= {b for *_, branches in hidden for b in branches}
        line_start, line_end = line_of(text, sentence.start_char)
        near = [
            m
            for m in placed
            if m.sentence_index == s_index or line_start <= m.start_char < line_end
        ]
        spoken = {b for m in near for b in m.branches}
        for c in inside:
            kind = EVIDENCE.get(c.label_)
            if kind == "foreign":
                read = False
            elif kind in ("vessel", "segment"):
                read = bool(spoken & set(branches_of(c, reading.dominance)))
            elif kind is not None:
                read = (c.start_char, c.end_char) in aside or any(
                    m.start_char - 3 <= c.end_char and c.start_char <= m.end_char + 3 for m in near
                )
            if kind is not None and not read:
                where = (c.start_char, c.end_char, c.text, kind, s_index, tuple(sorted(named)))
                unread.append(Unread(*where, source=c.kb_id_ if kind == "foreign" else ""))
        unread += [
            Unread(a, b, text[a:b].strip(), kind, s_index, tuple(sorted(named)))
            for a, b, kind, branches in hidden
            if not (kind == "vessel" and spoken & set(branches))
            and not (kind == "percent" and any(m.start_char <= a < m.end_char + 3 for m in near))
        ]
    return unread


def of_an_earlier_study(reading: ReportReading, span: Span) -> bool:
    """A stated category its sentence gives to an earlier study ("previously CAD-RADS 3")."""
    starts = [start for start, _ in reading.sentences]
    start = starts[bisect.bisect_right(starts, span.start_char) - 1]
    return lx.PRIOR_CATEGORY.search(reading.text, start, span.start_char) is not None


def ischaemia_of_ffr(value: float) -> str:
    """CAD-RADS 2.0 ischaemia modifier of a CT-FFR value."""
    return "I+" if value <= 0.75 else "I+/-" if value <= 0.80 else "I-"


def read_stated_modifiers(text: str, is_skipped, reading: ReportReading) -> None:
    """The anomalous origin, ischaemia and segment involvement score the text states (the
    score wherever it stands; the others outside history and technique)."""
    reading.anomalous = any(
        not is_skipped(m.start())
        and not lx.NEGATION_REGEX.search(text[max(0, m.start() - 20) : m.start()])
        for m in lx.ANOMALY_REGEX.finditer(text)
    )
    values = [
        float(m.group("value").replace(",", "."))
        for m in lx.CT_FFR_REGEX.finditer(text)
        if not is_skipped(m.start())
    ]
    words = [m for m in lx.ISCHAEMIA_REGEX.finditer(text) if not is_skipped(m.start())]
    if values:
        reading.ischaemia = ischaemia_of_ffr(min(values))
    elif words:
        reading.ischaemia = "I+" if any(not m.group("neg") for m in words) else "I-"
    score = lx.SIS_REGEX.search(text)
    reading.segment_involvement = int(score.group("value")) if score else None


def starts_a_line(text: str, position: int) -> bool:
    """Only spaces or tabs stand between the line's start (or the text's) and `position`."""
    line_start = text.rfind("\n", 0, position) + 1
    return not text[line_start:position].strip(" \t") and (
        line_start > 0 or not text[:position].strip()
    )


def label_vessels(doc: Doc, sentence: Span, inside: list[Span], dominance: str) -> list[str]:
    """Vessels that label a line ("LAD:", "Segment 7 (LAD):"), else none."""
    vessels = []
    for span in inside:
        if span.label_ not in VESSEL_LABELS:
            break
        vessels += branches_of(span, dominance)
        following = doc[span.end : min(span.end + 2, sentence.end)]
        if any(":" in t.text for t in following):
            return sorted(set(vessels))
    return []


class Clause:
    """One clause of a sentence: its concepts, read into findings and modifiers, each
    attached to the branches it speaks of."""

    def __init__(
        self,
        doc: Doc,
        text: str,
        sentence: str,
        concepts: list[Span],
        dominance: str,
        header: list[str],
        last_vessels: list[str],
    ):
        self.doc, self.concepts, self.dominance = doc, concepts, dominance
        self.text = text
        self.header, self.last_vessels = header, last_vessels
        self.vessels = [c for c in concepts if c.label_ in VESSEL_LABELS]
        self.findings = [c for c in concepts if c.label_ in FINDING_LABELS]
        self.cues = [c for c in concepts if c.label_ == "NEG"]
        self.post_cues = [c for c in concepts if c.label_ == "POSTNEG"]
        self.hedges = [c for c in concepts if c.label_ == "UNCERTAIN"]
        self.not_excluded = [c for c in concepts if c.label_ == "NOTEXCLUDED"]
        self.prior_cues = [c for c in concepts if c.label_ in {"PRIOR_BEFORE", "PRIOR_AFTER"}]
        self.graded = [f for f in self.findings if f.label_ != "NOUN"]
        self.describes_bridge = any(c.label_ == "BRIDGE" for c in concepts) and re.search(
            r"compress|systol", sentence, re.I
        )
        self.has_pronoun = any(c.label_ == "PRONOUN" for c in concepts)
        #: Dictated without case or punctuation ("left main normal lad ...").
        self.run_on = sentence == sentence.lower() and not re.search(r"[,:;()]", sentence)
        #: Findings a rule read and set aside (a bridge's, a prior study's, calcium's).
        self.set_aside: list[Span] = []
        #: Where the negation cues that negated a finding or modifier start.
        self.used_cues: set[int] = set()
        self.grafts = [c for c in concepts if c.label_ == "GRAFT"]

    def negation(self, span: Span) -> Span | None:
        """The cue that negates `span` (a cue before it, or "excluded" after it or right
        before it), if any."""
        cue = self.negating_cue(span)
        if cue is not None:
            self.used_cues.add(cue.start)
        return cue

    def negating_cue(self, span: Span) -> Span | None:
        for cue in self.cues:
            between = [f for f in self.findings if cue.end <= f.start < span.start]
            first = between[0] if between else span
            if cue.end > first.start or not self.listed(between, span):
                continue
            gap = gap_words(self.doc, cue, first)
            if set(gap) <= lx.PLAQUE_QUALIFIERS or (len(gap) <= 4 and "," not in gap):
                return cue  # not "not the culprit, 30%"
        for cue in self.post_cues:
            if lx.OF_THE_LABEL.fullmatch(cue.text):
                if self.labels_with(span, cue):  # "Plaque: none", "Stenosis of LAD: none"
                    return cue
            elif cue.start >= span.end or (
                lx.PRE_NEGATING.match(cue.text) and 0 <= span.start - cue.end <= 1
            ):
                return cue
        return None

    def labels_with(self, span: Span, cue: Span) -> bool:
        """Whether a finding labels the line the cue answers: before it, up to the colon,
        with no other finding between ("Stenosis of the LAD: none")."""
        gap = self.text[span.end_char : cue.start_char]
        return (
            span.end <= cue.start <= span.end + 6
            and gap.rstrip().endswith(":")
            and not any(span.end <= f.start < cue.start for f in self.findings)
        )

    def loose_negations(self, mentions: list[Mention]) -> list[Span]:
        """Negation cues that negate nothing where they may have been meant to negate a
        graded finding: at most 8 tokens before it with no comma or other finding between
        ("no convincing evidence on these images of plaque"), or after it behind "is",
        "was"... ("plaque is not really seen"). Not a cue that speaks of another concept or
        of a word that is no finding ("not grafted")."""
        graded = [
            f
            for f in self.findings
            for m in mentions
            if m.branches and not m.negated and (m.pct_low or 0) > 0
            if m.start_char <= f.start_char < m.end_char
        ]
        starts = {c.start for c in self.concepts}

        def meant_for(cue: Span, finding: Span) -> bool:
            if cue.end <= finding.start:
                gap = gap_words(self.doc, cue, finding)
                return (
                    len(gap) <= 8
                    and "," not in gap
                    and not any(cue.end <= f.start < finding.start for f in self.findings)
                )
            before = self.doc[max(finding.end, cue.start - 2) : cue.start].text
            return cue.start - finding.end <= 5 and bool(lx.COPULA.search(before))

        return [
            cue
            for cue in [*self.cues, *self.post_cues]
            if cue.start not in self.used_cues
            and cue.end not in starts
            and not lx.NEGATED_NON_FINDING.match(self.text, cue.end_char)
            and any(meant_for(cue, finding) for finding in graded)
        ]

    def listed(self, between: list[Span], span: Span) -> bool:
        """Whether `span` and the findings between a cue and it are one negated list: the
        first finding, then lesion nouns or "occlusion" listed with it ("no significant
        stenosis or occlusion"), a percentage bounding the noun before it ending the list
        ("no stenosis >50%", "no stenosis of 50% or more")."""
        chain = [*between, span]
        for a, b in itertools.pairwise(chain):
            gap = set(gap_words(self.doc, a, b))
            if b.label_ == "PCT" and b is span and a.label_ == "NOUN" and gap <= {"of"}:
                continue
            if b.label_ not in LISTED or not gap <= {"or", "and", "nor", ","}:
                return False
        return True

    def uncertain(self, span: Span) -> bool:
        """A hedge at most 4 tokens before the finding ("possible"), or "?" after it."""
        return any(
            (h.end <= span.start and span.start - h.end <= 4)
            or (h.start >= span.end and POST_HEDGE.search(h.text))
            for h in self.hedges
        )

    def targets(self, span: Span) -> tuple[list[str], str]:
        """The branches a finding speaks of: the vessels after it when linked by a
        preposition or adjacent (unless, in run-on dictation, a vessel before it still lacks
        a finding), else
        before it, else after it, else the line's header vessel, else (for a pronoun) the
        last vessel named; with the rule that placed it."""
        after = [v for v in self.vessels if v.start >= span.end]
        next_finding, end = 10**9, span.end
        for f in sorted((f for f in self.findings if f.start >= span.end), key=lambda f: f.start):
            joined = f.start == end and f.label_ in {
                "GRADE",
                "NOUN",
            }  # "mild non-obstructive plaque"
            if not joined and not (f.label_ == "NOUN" and f.start - span.end <= 2):
                next_finding = f.start
                break
            end = f.end
        after = [
            v for v in after if v.start < next_finding and not is_landmark(self.doc, v, span.end)
        ]
        if after:
            gap = gap_words(self.doc, span, after[0])
            last = max((i for i, word in enumerate(gap) if word in PREPOSITIONS), default=None)
            linked = last is not None and set(gap[last + 1 :]) <= lx.LINK_FILLERS
            adjacent = not gap and not self.graded_right_after(after[0])
            if linked or (adjacent and not (self.run_on and self.ungraded_before(span))):
                return self.chain(after, forward=True), PLACED_AFTER
        before = [v for v in self.vessels if v.end <= span.start]
        if len(before) > 1 and ORIGIN.search(self.doc[before[-2].end : before[-1].start].text):
            before = before[:-1]  # "the PDA arises from the circumflex and is normal"
        if before:
            return self.chain(before, forward=False), PLACED_BEFORE
        if after:
            return self.chain(after, forward=True), PLACED_LATER
        if self.has_pronoun and self.last_vessels and len(self.header) > 1:
            return list(self.last_vessels), PLACED_BY_DOUBTFUL_PRONOUN
        if self.header:
            return self.header, PLACED_BY_LABEL
        if self.has_pronoun and self.last_vessels:
            return list(self.last_vessels), PLACED_BY_PRONOUN
        return [], UNPLACED

    def ungraded_before(self, span: Span) -> bool:
        """Whether the vessel named last before the finding has no finding of its own in
        between: in run-on dictation the finding is that vessel's, not the next one's ("left
        main normal lad ...")."""
        before = [v for v in self.vessels if v.end <= span.start]
        return bool(before) and not any(
            before[-1].end <= f.start < span.start for f in self.findings if f.label_ != "NOUN"
        )

    def graded_right_after(self, vessel: Span) -> bool:
        """Whether a grade follows the vessel at once ("diagonal normal" in dictation), so
        that a finding just before it is not its own ("lad less than 25 percent diagonal")."""
        return any(f.start == vessel.end and f.label_ != "NOUN" for f in self.graded)

    def chain(self, candidates: list[Span], forward: bool) -> list[str]:
        """The branches of the nearest vessel and of those coordinated with it ("LAD and
        LCx")."""
        chain = [candidates[0]] if forward else [candidates[-1]]
        sequence = candidates[1:] if forward else candidates[-2::-1]
        for vessel in sequence:
            left, right = (chain[-1], vessel) if forward else (vessel, chain[-1])
            if not set(gap_words(self.doc, left, right)) <= lx.COORDINATION:
                break
            chain.append(vessel)
        return sorted({b for v in chain for b in branches_of(v, self.dominance)})

    def mentions(self, s_index: int) -> list[Mention]:
        """Every modifier and finding of the clause, in order."""
        out = []
        for span in self.concepts:
            if span.label_ in MODIFIER_LABELS:
                out.append(self.modifier(span, s_index))
            elif span.label_ not in FINDING_LABELS:
                continue
            elif self.cannot_exclude(span):
                out.append(self.modifier(span, s_index, "NONDIAG"))
            elif (found := self.finding(span, s_index)) is not None:
                out.append(found)
            else:
                self.set_aside.append(span)
        return out

    def modifier(self, span: Span, s_index: int, label: str | None = None) -> Mention:
        """A modifier mention; `label` reads a finding as a modifier (one the study cannot
        exclude is a non-diagnostic segment)."""
        label = label or span.label_
        return Mention(
            s_index,
            span.start_char,
            span.end_char,
            span.text,
            label,
            *self.targets(span),
            modifier=MODIFIER_CODES[label],
            negated=label == span.label_ and self.negation(span) is not None,
        )

    def cannot_exclude(self, span: Span) -> bool:
        """A finding the study cannot rule out: "cannot be excluded" after it in the clause,
        or "cannot exclude" at most 4 tokens before it."""
        return any(
            c.start >= span.end or (c.end <= span.start and span.start - c.end <= 4)
            for c in self.not_excluded
        )

    def of_a_prior_study(self, span: Span) -> bool:
        """A grade given for an earlier study: "previously" at most 2 tokens before it, or
        "on the prior study" at most 3 tokens after it (not when today's study says
        "unchanged" in between), with no other finding in between."""
        for cue in self.prior_cues:
            if cue.label_ == "PRIOR_BEFORE" and cue.end <= span.start <= cue.end + 2:
                between = self.doc[cue.end : span.start]
            elif cue.label_ == "PRIOR_AFTER" and span.end <= cue.start <= span.end + 3:
                between = self.doc[span.end : cue.start]
            else:
                continue
            if not lx.UNCHANGED_REGEX.search(between.text) and not any(
                f.start >= between.start and f.end <= between.end for f in self.findings
            ):
                return True
        return False

    def on_a_graft(self, span: Span, targets: tuple[list[str], str]) -> bool:
        """A finding about a bypass graft: a graft names, as its destination, the vessel
        the finding was placed on (the nearest one of its branches: "SVG to OM1: 70%", "70%
        in the SVG to OM1"), and "native" does not stand before that vessel with no graft
        between ("Graft to the RCA occluded, the native RCA 90%"); a graft named elsewhere
        in the sentence does not make it one ("LAD: 70% with a patent LIMA to the mid LAD")."""
        placed = set(targets[0])
        on = [v for v in self.vessels if set(branches_of(v, self.dominance)) & placed]
        if not self.grafts or not on:
            return False
        vessel = min(on, key=lambda v: min(abs(v.start - span.end), abs(span.start - v.end)))
        before = self.doc[vessel.sent.start : vessel.start]
        native = [m.end() for m in lx.NATIVE_REGEX.finditer(before.text)]
        if native and not lx.GRAFT_REGEX.search(before.text, native[-1]):
            return False
        return any(
            g.end <= vessel.start and set(gap_words(self.doc, g, vessel)) <= GRAFT_LINK
            for g in self.grafts
        )

    def of_a_stent(self, span: Span) -> bool:
        """Whether 'patent' stands beside a stent: it speaks of the stent, which the stent
        rule labels."""
        return span.text.lower() == "patent" and any(
            c.label_ == "STENT" and (abs(c.start - span.end) <= 2 or abs(span.start - c.end) <= 2)
            for c in self.concepts
        )

    def is_not_a_grade(self, span: Span) -> bool:
        """A grade word that labels a line ("Most severe: ..."), grades the plaque burden
        ("moderate plaque burden") or speaks of calcium ("severe calcification", not "severe
        calcified stenosis") grades no stenosis."""
        after = self.doc[span.end : span.end + 3]
        if len(after) == 0:
            return False
        if after[0].text == ":" or lx.PLAQUE_BURDEN.match(self.text, span.end_char):
            return True
        return bool(lx.NOT_OF_THE_LUMEN.match(after[0].text)) and not any(
            lx.LUMEN_NOUN.match(token.text) for token in after[1:]
        )

    def finding(self, span: Span, s_index: int) -> Mention | None:
        """A stenosis finding with its percent range and grade (a negated grade is the
        range below it); None for what is not a finding here."""
        label = span.label_
        if self.describes_bridge and label in {"PCT", "GRADE"}:
            return None
        if label == "GRADE" and self.is_not_a_grade(span):
            return None
        if label in {"PCT", "GRADE", "OCCLUSION"} and self.of_a_prior_study(span):
            return None
        cue = self.negation(span)
        is_negated = cue is not None
        if label == "NOUN":
            if is_negated:
                grade = "normal"
            elif self.graded:
                return None
            elif re.search(r"plaque|atheroma|atherosclero", span.text, re.I):
                grade = "minimal"
            else:
                return None
            (low, high), bare = grade_range(grade), False
        else:
            value = value_of(span)
            if value is None:
                return None
            low, high, grade, bare = value
            if label == "NORMAL" and self.of_a_stent(span):
                return None
            if is_negated:
                if label == "NORMAL":
                    return None
                low, high, grade, bare = 0, max(0, low - 1), "normal", False
        start = min(span.start_char, cue.start_char) if cue else span.start_char
        end = max(span.end_char, cue.end_char) if cue else span.end_char
        targets = self.targets(span)
        return Mention(
            s_index,
            start,
            end,
            self.text[start:end],
            label,
            *targets,
            grade=grade,
            pct_low=low,
            pct_high=high,
            negated=is_negated,
            uncertain=self.uncertain(span),
            bare_50=bare,
            on_graft=self.on_a_graft(span, targets),
        )
