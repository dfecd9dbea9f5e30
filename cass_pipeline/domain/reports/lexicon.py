"""The report vocabulary as data: vessel names, SCCT segments, stenosis expressions, cues.

Each concept is a regular expression run over the de-identified text; `parser.py` turns the
matches into spaCy spans. Vessel names map to canonical branches; "PDA" and "PLV" without a
side go to the dominant side (right unless the report says left).
"""

from __future__ import annotations

import re

from cass_pipeline.domain.anatomy import GRADE_RANGE

DOMINANT = "{dominant}"  # placeholder side, resolved per report

#: Canonical branch of each vessel name pattern (first match wins on overlaps by length).
VESSEL_PATTERNS: list[tuple[str, str]] = [
    (r"PDA-RCA|R-?PDA|right\s+posterior\s+descending(?:\s+artery)?", "PDA-RCA"),
    (
        r"PLV-RCA|R-?PL(?:[BV]\d?)?|"
        r"right\s+postero-?lateral(?:\s+(?:ventricular\s+)?(?:branch|artery))?",
        "PLV-RCA",
    ),
    (r"PDA-LCX|L-?PDA|posterior\s+descending\s+artery\s+\(from\s+the\s+LCx\)", "PDA-LCX"),
    (r"PLV-LCX|L-?PL(?:[BV]\d?)?|postero-?lateral\s+branch\s+of\s+the\s+circumflex", "PLV-LCX"),
    (r"left\s+main(?:\s+(?:coronary\s+)?(?:artery|stem|trunk))?|LMCA|LMS|LM", "LM"),
    (
        r"left\s+anterior\s+descending(?:\s+(?:coronary\s+)?artery)?|anterior\s+descending|"
        r"[pmd]?LAD|RIVA",
        "LAD",
    ),
    (r"(?:first|1st)\s+diagonal(?:\s+branch)?|(?:D|Dg|Diag)[\s-]?1|diagonal[\s-]?1", "D-1"),
    (r"(?:second|2nd)\s+diagonal(?:\s+branch)?|(?:D|Dg|Diag)[\s-]?2|diagonal[\s-]?2", "D-2"),
    (r"(?:third|3rd)\s+diagonal(?:\s+branch)?|(?:D|Dg|Diag)[\s-]?3|diagonal[\s-]?3", "D-3"),
    (
        r"(?:first|1st)\s+and\s+(?:second|2nd)\s+diagonal(?:s|\s+branches)|D1\s*(?:and|&|/)\s*D2",
        "D-1 D-2",
    ),
    (r"diagonal(?:\s+branch)?(?!\s*(?:branches|s\b))", "D-1"),
    (r"(?:left\s+)?ci?rc?u?m?fle?x(?:\s+(?:coronary\s+)?artery)?|[pmd]?L?C[Xx]|RCX", "LCX"),
    (
        r"(?:first|1st)\s+(?:obtuse\s+)?marginal(?:\s+branch)?|OM[\s-]?1|obtuse\s+marginal[\s-]?1",
        "OM-1",
    ),
    (
        r"(?:second|2nd)\s+(?:obtuse\s+)?marginal(?:\s+branch)?|OM[\s-]?2|obtuse\s+marginal[\s-]?2",
        "OM-2",
    ),
    (
        r"(?:third|3rd)\s+(?:obtuse\s+)?marginal(?:\s+branch)?|OM[\s-]?3|obtuse\s+marginal[\s-]?3",
        "OM-3",
    ),
    (r"(?:obtuse\s+)?(?<!acute\s)marginals?(?:\s+branch(?:es)?)?|OMs?", "OM"),  # not the RCA's
    (
        r"ramus(?:\s+intermedi(?:us|ate))?(?:\s+(?:branch|artery))?|intermediate\s+(?:branch|artery)|"
        r"RI|RIM",
        "RI",
    ),
    (r"right\s+coronary(?:\s+artery)?|[pmd]?RCA", "RCA"),
    (
        r"posterior\s+descending(?:\s+artery)?|posterior\s+interventricular(?:\s+artery)?|PDA",
        f"PDA-{DOMINANT}",
    ),
    (r"postero-?lateral(?:\s+(?:ventricular\s+)?(?:branch|artery))?|PL[BV]\d?", f"PLV-{DOMINANT}"),
    # Vessels CASS labels no image of: a finding placed on one is on no branch.
    (
        r"acute\s+marginal(?:\s+branch(?:es)?)?|AM[\s-]?\d|AM\s+branch|"
        r"(?:(?:first|1st|second|2nd|major)\s+)?septal(?:\s+perforator)?(?:\s+branch)?s?|"
        r"conus(?:\s+(?:branch|artery))?|(?:SA|AV|sinus|sino-?atrial)\s+nod(?:e|al)"
        r"(?:\s+(?:artery|branch))?",
        "",
    ),
]
#: "mid-LAD", "prox-RCA": a position word joined to the vessel by a hyphen.
POSITION_PREFIX = r"(?:(?<=\bmid-)|(?<=\bprox-)|(?<=\bproximal-)|(?<=\bdist-)|(?<=\bdistal-))"
VESSEL_REGEX = re.compile(
    "|".join(
        f"(?P<v{i}>(?:(?<![\\w-])|{POSITION_PREFIX})(?:{p})(?![\\w]))"
        for i, (p, _) in enumerate(VESSEL_PATTERNS)
    ),
    re.I,
)
#: A vessel's name inside a code ("seg06_pLAD"), bounded by anything but a letter: what the
#: coverage check looks for besides the words `VESSEL_REGEX` reads.
LOOSE_VESSEL_REGEX = re.compile(
    "|".join(
        f"(?P<v{i}>(?<![A-Za-z])(?:{p})(?![A-Za-z]))" for i, (p, _) in enumerate(VESSEL_PATTERNS)
    ),
    re.I,
)

#: One segment number or a range of them ("6", "1-4"), not a percentage ("6, 70%").
SEGMENT_ITEM = r"\d{1,2}(?![\d%])(?!\s*%)(?:\s*(?:-|–|to)\s*\d{1,2}(?![\d%])(?!\s*%))?"
SEGMENT_REGEX = re.compile(
    rf"\b(?:segments?|seg\.?|#)\s*{SEGMENT_ITEM}(?:\s*(?:,|and|&)\s*{SEGMENT_ITEM})*\b", re.I
)
#: The items of a segment mention: a number, or the two ends of a range.
SEGMENT_ITEMS = re.compile(r"(\d{1,2})(?:\s*(?:-|–|to)\s*(\d{1,2}))?")
#: A vessel's coded value: "pRCA=70", "LAD = 0" (the name is checked to be a vessel's).
#: Where a code of a structured export starts and ends: a line, or one of several codes on
#: a line separated by ";", "," or "|" ("seg01_pRCA=0;seg02_mRCA=30").
CODE_START, CODE_END = r"(?:^|(?<=[;,|]))[ \t]*", r"[ \t]*(?=[;,|]|$)"
CODED_VESSEL = re.compile(
    CODE_START + r"(?P<name>[A-Za-z][\w-]{1,15})[ \t]*=[ \t]*(?P<value>\d{1,3})[ \t]*%?"
    r"[ \t]*\.?" + CODE_END,
    re.M,
)
#: A coded row of a structured export: "seg01_pRCA=0", "Segment 6 (pLAD): 50", "seg10_D2=n.e."
#: (not evaluable).
CODED_ROW = re.compile(
    CODE_START + r"seg(?:ment)?[ \t_-]*(?P<seg>\d{1,2})(?:[ \t_(-]+[A-Za-z][\w-]*\)?)?[ \t]*"
    r"[=:][ \t]*(?:(?P<value>\d{1,3})[ \t]*%?|(?P<ne>n\.[ \t]?e\.|ne))" + CODE_END,
    re.I | re.M,
)


#: The table header that makes a row's leading number an SCCT segment ("| Segment | ...",
#: "Seg<TAB>...", "| # |").
#: A column header under which a bare number is a percent stenosis.
PERCENT_COLUMN = re.compile(r"stenos|%|diameter|narrowing", re.I)
SEGMENT_TABLE_HEADER = re.compile(r"^[ \t]*\|?[ \t]*(?:seg(?:ment)?s?\b|#|no\.)", re.I)

PERCENT_UNIT = r"\s*(?:%|per\s?cent\b|percent\b)"
COMPARATOR = (
    r"(?P<cmp>(?<!\w)(?:<=|>=|≤|≥|<|>|less\s+than|greater\s+than|more\s+than|over|under|"
    r"up\s+to|at\s+least|approximately|approx\.?|about|around|~|circa|ca\.?))?\s*"
)
TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
UNITS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
#: A percentage as digits or written out ("sixty-nine", "one hundred").
NUMBER = (
    r"\d{1,3}|(?:one\s+)?hundred|ten|fifteen|(?:"
    + "|".join(TENS)
    + r")(?:[\s-](?:"
    + "|".join(UNITS)
    + r"))?"
)
PERCENT_REGEX = re.compile(
    rf"{COMPARATOR}(?P<a>{NUMBER})(?:{PERCENT_UNIT})?\s*(?:-|–|to)\s*(?P<b>{NUMBER}){PERCENT_UNIT}"
    rf"|{COMPARATOR.replace('cmp', 'cmp1')}(?P<c>{NUMBER})(?P<plus>\+)?{PERCENT_UNIT}",
    re.I,
)


def number(text: str) -> int:
    """The value of a percentage written with digits or words."""
    words = re.split(r"[\s-]+", text.strip().lower())
    if words[0].isdigit():
        return int(words[0])
    if words[-1] == "hundred":
        return 100
    fixed = {"ten": 10, "fifteen": 15}
    if words[0] in fixed:
        return fixed[words[0]]
    return TENS[words[0]] + (UNITS[words[1]] if len(words) > 1 else 0)


#: Grade words and the percent range each stands for.
GRADE_RANGES = {
    **GRADE_RANGE,
    "normal": GRADE_RANGE["none"],
    "critical": (90, 99),
    "subtotal": (95, 99),
    "high-grade": (70, 99),
    "significant": (50, 99),
    "obstructive": (50, 99),
    "non-significant": (1, 49),
    "non-obstructive": (1, 49),
}
#: Grade words as dictation clips them.
CLIPPED_GRADES = {"mod": "moderate", "sev": "severe"}
GRADE_WORDS = (
    r"minimal|mild|moderate|severe|critical|high[\s-]grade|mod|sev|"
    r"(?:haemo|hemo)dynamically\s+significant|significant|obstructive"
)
GRADE_REGEX = re.compile(
    r"(?<![\w-])(?P<neg>non[\s-]?|in)?(?P<g1>" + GRADE_WORDS + r")"
    r"(?:ly(?=\s+(?:stenosed|stenotic|narrowed|diseased|obstructed)\b))?"  # "mildly narrowed"
    r"(?:\s*(?:-?\s*to\s*-?|-|–|/|or)\s*(?P<g2>minimal|mild|moderate|severe|critical|mod|sev))?"
    r"(?![\w-])",
    re.I,
)
OCCLUSION_REGEX = re.compile(
    r"(?P<sub>sub-?total(?:ly)?\s+|\b(?:sub|near(?:ly)?|almost)[-\s]?)?"  # "sub-occlusive"
    r"(?:(?:total(?:ly)?|complete(?:ly)?|chronic(?:\s+total)?)\s+)?"
    r"occlu(?:ded|sion|sive)\b|\bCTO\b",
    re.I,
)
#: Irregularities of the lumen or wall, qualified or not, read as minimal plaque.
IRREGULARITY_REGEX = re.compile(
    r"\b(?:(?:minor|mild|minimal|slight|some)\s+)?(?:(?:luminal|wall|intimal|contour)\s+)?"
    r"irregularit(?:y|ies)\b",
    re.I,
)
NORMAL_REGEX = re.compile(
    r"\b(?:normal|unremarkable|patent|smooth)\b|(?m:(?<=:)[ \t]*-[ \t]*$)"
    r"|(?m:(?<=[\t|])[ \t]*none[ \t]*(?=\||$))",  # "none" as a table cell
    re.I,
)
NOUN_REGEX = re.compile(
    r"\b(?<!non-)(?<!non)(?:stenos[ie]s|stenotic|narrowing|plaques?|atheroma|atherosclerosis|"
    r"atherosclerotic|disease|lesions?|obstruction|restenosis)\b",  # not "non-atherosclerotic"
    re.I,
)
NEGATION_REGEX = re.compile(
    r"\b(?:no\s+evidence\s+of|no\s+sign\s+of|absence\s+of|negative\s+for|free\s+of|devoid\s+of|"
    r"exclusion\s+of|"
    r"(?:no|not)(?!\s+more\s+than\b)|without|nor|neither)\b",  # "no more than mild" is mild
    re.I,
)
#: A cue that negates the finding before it ("plaque was not seen", "plaque-free") or, for
#: "excluded" and "ruled out", right after it ("ruled out significant stenosis").
POST_NEGATION_REGEX = re.compile(
    r"\b(?:excluded|ruled\s+out|absent|not\s+(?:been\s+)?(?:seen|identified|detected|"
    r"demonstrated|visuali[sz]ed|present|appreciated|found))\b|(?<=[a-z]-)free\b|"
    r"(?<=:)[ \t]*(?:none|nil)\b",
    re.I,
)
#: Words before a vessel that make it a landmark of the finding, not its place ("70%
#: stenosis just proximal to D1" is the LAD's).
LANDMARK = re.compile(
    r"\b(?:(?:just|immediately)\s+)?(?:proximal\s+to|distal\s+to|beyond|past|before|after)"
    r"(?:\s+the)?(?:\s+(?:origin|ostium|take-?off|bifurcation)\s+of(?:\s+the)?)?\s*$",
    re.I,
)
#: What a negation cue may speak of that is no finding ("not grafted", "no interval change").
NEGATED_NON_FINDING = re.compile(
    r"[ \t]*(?:any\s+)?(?:grafted|stented|bypassed|dominant|calcified|changed|progressed|"
    r"ectatic|aneurysmal|anomalous|interval\s+change|change|progression)\b",
    re.I,
)
#: Words that may stand between a negation cue and the lesion word it negates, however many.
PLAQUE_QUALIFIERS = {
    *("focal", "diffuse", "calcified", "noncalcified", "non-calcified", "non", "-", "partially"),
    *("mixed", "soft", "fibrous", "fibrofatty", "obvious", "discrete", "definite", "visible"),
    *("any", "other", "further", "additional", "appreciable", "measurable", "detectable"),
    *("eccentric", "concentric", "luminal", "atherosclerotic", "or", "and", "nor", ","),
}
#: A verb after which "not" speaks of the finding before it ("plaque is not really seen").
COPULA = re.compile(r"\b(?:is|are|was|were|be|been)\b", re.I)
#: The post-negation cues that also negate the finding right after them.
PRE_NEGATING = re.compile(r"excluded|ruled\s+out", re.I)
#: ...and those that negate only the finding right before them ("Plaque: none").
OF_THE_LABEL = re.compile(r"none|nil", re.I)
UNCERTAIN_REGEX = re.compile(
    r"\b(?:possible|possibly|probable|probably|likely|questionable|suspected|suspicious\s+for|"
    r"may\s+represent|borderline|equivocal)\b|\?",
    re.I,
)
#: A finding the study cannot rule out: not a finding, a non-diagnostic branch.
NOT_EXCLUDED_REGEX = re.compile(
    r"\b(?:cannot|can\s*not|can't|could\s+not)\s+be\s+(?:excluded|ruled\s+out)\b|"
    r"\b(?:cannot|can\s*not|can't|could\s+not)\s+(?:exclude|rule\s+out)\b|"
    r"\bnot\s+(?:be\s+)?(?:excluded|ruled\s+out)\b",
    re.I,
)
NONDIAGNOSTIC_REGEX = re.compile(
    r"\bnon-?diagnostic\b|\bnot\s+(?:diagnostic|evaluable|assessable|interpretable)\b|"
    r"\bnon-?evaluable\b|\bunevaluable\b|"
    r"\b(?:cannot|could\s+not)\s+be\s+(?:evaluated|assessed|graded|quantified)\b|"
    r"\blimited\s+(?:evaluation|assessment)\b|"
    r"\bunable\s+to\s+(?:evaluate|assess|grade|quantify)\b|"
    r"\b(?:severe|marked|extensive|significant)\s+(?:motion|respiratory|breathing|blooming|"
    r"streak)(?:\s+(?:artefacts?|artifacts?))?",
    re.I,
)
STENT_REGEX = re.compile(r"\b(?:in-?stent|stents?|stented|PCI)\b", re.I)
GRAFT_REGEX = re.compile(r"\b(?:grafts?|CABG|LIMA|RIMA|SVG|bypass)\b", re.I)
#: A sentence about the native vessels of a grafted patient ("Native LAD occluded").
NATIVE_REGEX = re.compile(r"\bnative\b", re.I)
BRIDGE_REGEX = re.compile(
    r"\b(?:myocardial\s+bridg\w*|intramyocardial\s+(?:course|segment)|"
    r"bridging|tunnell?ed)\b",
    re.I,
)
HRP_REGEX = re.compile(
    r"\b(?:high[\s-]risk\s+(?:plaque|features?)|low[\s-]attenuation|"
    r"positive(?:ly)?\s+remodel\w*|napkin[\s-]ring|spotty\s+calcification)\b",
    re.I,
)
CALCIUM_REGEX = re.compile(
    r"\b(?:agatston(?:\s+score)?|calcium\s+score|CACS?|coronary\s+(?:artery\s+)?calcium"
    r"(?:\s+score)?)\b[^\d\n]{0,30}?(?P<value>\d+(?:[.,]\d+)?|(?<=\s)(?:zero|nil)\b)",
    re.I,
)
DOMINANCE_REGEX = re.compile(
    r"\b(?P<a>right|left|co)[\s-]?dominan\w*|\bdominance\s*:?\s*(?P<b>right|left|co-?dominant|"
    r"balanced|codominant)",
    re.I,
)
CAD_RADS_REGEX = re.compile(
    r"CAD[-\s]?RADS\s*(?:(?:v(?:ersion)?\s*)?[12]\.0\s*)?(?:category\s*)?[:=]?\s*"
    r"(?P<cat>[0-5][AB]?|N)\b(?!\.\d)"
    r"(?P<mods>(?:\s*/\s*(?:P[0-4]|S|G|HRP|N|V|I\+/-|I[+-]|E)\b)*)",
    re.I,
)
#: An anomalous coronary origin or course (CAD-RADS modifier E).
ANOMALY_REGEX = re.compile(
    r"\banomalous\s+(?:origin|course)|\binterarterial\s+course|\bcoronary\s+(?:artery\s+)?"
    r"fistula|\bar(?:ises|ising)\s+from\s+the\s+(?:opposite|contralateral|left|right|"
    r"non-?coronary)\s+(?:coronary\s+)?(?:sinus|cusp)",
    re.I,
)
#: A CT-derived FFR value (<= 0.75 ischaemia, 0.76-0.80 borderline, > 0.80 none).
CT_FFR_REGEX = re.compile(
    r"\b(?:CT[-\s]?FFR|FFR[-\s]?CT|FFRct)\b[^\d\n]{0,12}?(?P<value>0[.,]\d{1,2})", re.I
)
#: Ischaemia stated in words: positive, or (with a negation before it) absent.
ISCHAEMIA_REGEX = re.compile(
    r"\b(?P<neg>no|without|not\s+(?:indicative\s+of|suggestive\s+of))?\s*"
    r"(?:(?:lesion[-\s]specific|inducible|haemodynamically\s+significant|hemodynamically\s+"
    r"significant)\s+)?isch(?:a)?emi(?:a|c)\b",
    re.I,
)
#: The segment involvement score: the number of segments with plaque.
SIS_REGEX = re.compile(
    r"\b(?:segment\s+involvement\s+score(?:\s*\(SIS\))?|SIS)\s*(?:of|:|=)?\s*(?P<value>\d{1,2})\b",
    re.I,
)
#: A heading whose section is not a finding of today's study: history, indication, technique,
#: calcium scoring, a template's key. The section ends at a blank line or a labelled line.
NON_FINDING_HEADING = re.compile(
    r"^[ \t]*(?:(?:clinical|family|cardiac|past\s+medical)\s+)?(?:history|indications?|"
    r"reason\s+for\s+(?:the\s+)?(?:exam(?:ination)?|study|referral)|technique|protocol|"
    r"acquisition|calcium\s+scor(?:e|ing)|coronary\s+(?:artery\s+)?calcium(?:\s+scor(?:e|ing))?|"
    r"key|legend|cad[-\s]?rads\s+(?:key|legend)|scan|scan\s+parameters)\b[^\n:]{0,20}:",
    re.I | re.M,
)
#: A line that starts with a label ("FINDINGS:", "LAD:", "Coronary dominance:").
LINE_LABEL = re.compile(r"^[ \t]*[A-Za-z][^\n:.]{0,40}:", re.M)
#: A template's option whose box is not ticked, to the next box or the line's end: it states
#: nothing about this patient.
UNTICKED_OPTION = re.compile(r"(?:\[[ \t]?\]|\([ \t]?\)|☐|□)[^\n\[\(☐□☒☑✓✔]*")
#: A heading after which the report revises itself: what it grades there replaces the earlier
#: grades of the branches it names.
REVISION_HEADING = re.compile(
    r"^[ \t]*(?:addendum|corrected\s+(?:impression|report)|correction|amended\s+"
    r"(?:impression|report)|revised(?:\s+impression)?)\b[^\n:]{0,60}:",
    re.I | re.M,
)
#: The heading of the impression: a summary that grades the branches again.
IMPRESSION_HEADING = re.compile(
    r"^[ \t]*(?:impression|conclusions?|opinion|summary)\b[^\n:]{0,20}(?::|$)", re.I | re.M
)
#: A grade given for an earlier study: just before the finding ("previously 50-69%") or as
#: a phrase just after it ("50-69% on the prior study").
PRIOR_BEFORE_REGEX = re.compile(r"\b(?:previously|formerly|prior\s+study\s*:)", re.I)
PRIOR_AFTER_REGEX = re.compile(
    r"\b(?:on|at|in)\s+the\s+(?:prior|previous|earlier)\s+(?:study|exam(?:ination)?|ct|cta|"
    r"scan|angiogram)\b",
    re.I,
)
#: ...unless today's study says it is the same grade.
UNCHANGED_REGEX = re.compile(r"unchanged|stable|similar|again|as\s+before", re.I)
#: What follows a grade word when it speaks of calcium or of the image, not of the lumen.
NOT_OF_THE_LUMEN = re.compile(
    r"calcif|calcium|motion|artefact|artifact|noise|blooming|respirat|breathing|streak", re.I
)
#: A grade word followed by these grades the amount of plaque ("moderate plaque burden").
PLAQUE_BURDEN = re.compile(r"\s*(?:(?:coronary\s+)?(?:plaque|atherosclerotic)\s+)?burden\b", re.I)
#: Words before a stated CAD-RADS category in its sentence that make it an earlier study's.
PRIOR_CATEGORY = re.compile(
    r"\b(?:previous(?:ly)?|prior|earlier|former(?:ly)?|compared\s+(?:with|to)|was)\b[^.;\n]*$",
    re.I,
)
#: A legend line: a term defined with "=" ("n.e. = not evaluable", "3 = 50-69%"), or a line
#: of two or more such definitions; not a coded row or a vessel's value ("LAD = 50%").
LEGEND_LINE = re.compile(
    r"^[ \t]*[\w.+/()-]{1,12}[ \t]*=[ \t]*[A-Za-z][^\n=]*$|^[^\n=]*=[^\n=]*=[^\n]*$", re.M
)
#: ...unless a word of the lumen follows ("severe calcified stenosis").
LUMEN_NOUN = re.compile(r"stenos|narrow|lesion|plaque|disease|occlu", re.I)
#: A statement about all coronary arteries at once ("Normal coronary arteries.").
GLOBAL_NORMAL_REGEX = re.compile(
    r"\b(?:(?:entirely\s+)?normal\s+coronar(?:y|ies)(?:\s+arter(?:y|ies))?(?!\s+(?:anatomy|origin))"
    r"|coronar(?:y|ies)(?:\s+arter(?:y|ies))?\s+(?:are\s+|appear\s+)?(?:normal|unremarkable)"
    r"|no\s+(?:evidence\s+of\s+)?(?:coronary\s+(?:artery\s+)?disease|CAD\b|"
    r"(?:coronary\s+)?(?:plaque|stenosis)(?:\s+or\s+(?:plaque|stenosis))?\b(?!\s+(?:in|of|at)\b)))",
    re.I,
)
PRONOUN_REGEX = re.compile(
    r"\b(?:it|its|this\s+(?:vessel|artery|branch)|the\s+(?:vessel|stent|lesion))\b", re.I
)
CLAUSE_BREAK_REGEX = re.compile(
    r";|\b(?:but|however|although|whereas|except|apart\s+from|impression|conclusion|summary)\b",
    re.I,
)
#: Words that may stand between coordinated vessels ("the LAD, the mid circumflex and its
#: diagonal branches", "the left main extending into the ostial LAD").
COORDINATION = {",", "and", "or", "&", "the", "as", "well", "to", "/", "both", "also", "-", "its"}
COORDINATION |= {"proximal", "mid", "distal", "ostial", "prox", "dist", "extending", "into"}
#: Words that may stand between a preposition and the vessel it links ("of the proximal").
LINK_FILLERS = {"the", "a", "an", "proximal", "mid", "distal", "ostial", "prox", "dist"}
