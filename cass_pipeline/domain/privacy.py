"""Keyed pseudonyms for patients, shared by the report and the image side.

A patient's source key (the export folder name, the report's file name) may itself identify
the patient (an MRN, a name). Outputs carry only `pseudonymise(key, secret)`, a keyed
SHA-256 (HMAC), so the same patient joins across reports and images, and nobody without the
secret can go back. The secret comes from `CASS_PSEUDONYM_KEY` or a key file created once
with 32 random bytes (keep it with the raw data, never in outputs).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cass_pipeline.domain.storage import write_bytes_atomic

if TYPE_CHECKING:  # one report's de-identification (`cass parse-report`) needs no pandas
    import pandas as pd


def pseudonymise(source_key: str, secret: bytes) -> str:
    """'P' + 16 hex digits of HMAC-SHA256(secret, key); stable for a given secret."""
    digest = hmac.new(secret, source_key.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return "P" + digest[:16]


def load_secret(key_file: Path, env_value: str | None = None) -> bytes:
    """The pseudonym secret: the environment value if set, else the key file (created once)."""
    if env_value:
        return env_value.encode("utf-8")
    if not key_file.is_file():
        write_bytes_atomic(key_file, secrets.token_hex(32).encode("ascii"))
        os.chmod(key_file, 0o600)
    return key_file.read_bytes().strip()


#: The public key of patients written by `cass synth`: they hold no real identity, so the demo
#: gives the same pseudonyms (and splits) on every machine. Never used for any other patient.
SYNTHETIC_COHORT_KEY = b"cass-synthetic-cohort"


@dataclass(frozen=True)
class Pseudonyms:
    """Source key -> pseudonym: the public key for the listed generated patients, the secret
    for every other key."""

    secret: bytes
    public_keys: frozenset[str] = frozenset()

    def uses_public_key(self, source_key: str) -> bool:
        return source_key.strip() in self.public_keys

    def __call__(self, source_key: str) -> str:
        public = self.uses_public_key(source_key)
        return pseudonymise(source_key, SYNTHETIC_COHORT_KEY if public else self.secret)

    def key_counts(self, source_keys: Iterable[str]) -> dict[str, int]:
        """How many of `source_keys` use the public and the secret key (for run metadata)."""
        keys = list(source_keys)
        public = sum(map(self.uses_public_key, keys))
        return {"public (generated patients)": public, "secret": len(keys) - public}


TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
    """Lower-case runs of letters or digits (underscores, spaces, punctuation separate)."""
    return TOKEN.findall(str(text).lower())


def identifiers_found(values: Iterable[str], identifiers: Iterable[str]) -> set[str]:
    """The identifiers that occur in `values` as whole tokens, in order: a name part as a
    word ("Ted" is not in "iodinated"), a number as a whole number, a written date as its
    parts ("1961-03-04" matches "04" after "03" after "1961")."""
    wanted: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for identifier in identifiers:
        sequence = tuple(tokens(identifier))
        if sequence:
            wanted[sequence[0]].add(sequence)
    found = set()
    for value in values:
        words = tokens(value)
        for start, word in enumerate(words):
            for sequence in wanted.get(word, ()):
                if tuple(words[start : start + len(sequence)]) == sequence:
                    found.add(" ".join(sequence))
    return found


REDACTED = "[identifier]"


def redacted(text: str, identifiers: Iterable[str]) -> str:
    """`text` with each identifier (as whole tokens, any case and separators, as
    `identifiers_found` matches them) replaced by `REDACTED`: a series description a
    workstation wrote the patient's name into keeps the rest of its words."""
    for identifier in sorted(identifiers, key=len, reverse=True):
        parts = tokens(identifier)
        if parts:
            body = r"[\W_]+".join(map(re.escape, parts))
            text = re.sub(rf"(?<![^\W_]){body}(?![^\W_])", REDACTED, text, flags=re.IGNORECASE)
    return text


def table_values(frame: pd.DataFrame) -> Iterable[str]:
    """Every distinct cell value of a table as text (values only: column names are ours)."""
    for column in frame.columns:
        yield from frame[column].dropna().astype(str).unique()
