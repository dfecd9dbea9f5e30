"""Where the review app keeps its people and their decisions: accounts with roles and argon2
password hashes, login sessions with their CSRF tokens, every reviewer's label decision, every
reader's verdict, and an audit log of each change. SQLite under `data/` by default, PostgreSQL
when its URL is configured (SQLAlchemy Core, the same tables). Patients by pseudonym only."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

#: Who may do what: reviewers settle flagged report labels, readers judge CASS's answer,
#: an admin does both, adjudicates reviewers who disagree and manages the accounts.
ROLES = ("reviewer", "reader", "admin")
#: A login lasts this long without being renewed.
SESSION_SECONDS = 8 * 3600
MIN_PASSWORD = 10
#: A name refused this many times within the window is locked for the rest of it.
LOCKOUT_AFTER, LOCKOUT_SECONDS = 5, 15 * 60

metadata = sa.MetaData()
users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(64), sa.ForeignKey("users.name"), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
label_decisions = sa.Table(
    "label_decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("patient_id", sa.String(64), nullable=False, index=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("labels", sa.Text, nullable=False),  # JSON: branch -> label, as review.py reads
    sa.Column("comment", sa.Text, nullable=False, default=""),
)
verdicts = sa.Table(
    "verdicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("patient_id", sa.String(64), nullable=False, index=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("cass_cad_rads", sa.String(8)),
    sa.Column("cass_refer", sa.Boolean),
    sa.Column("agree", sa.Boolean, nullable=False),
    sa.Column("cad_rads", sa.String(8)),  # the reader's category
    sa.Column("branches", sa.Text, nullable=False),  # JSON: branch -> the class as read
    sa.Column("comment", sa.Text, nullable=False, default=""),
    sa.Column("study", sa.String(24)),  # the keyed inbox study judged
)
audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # JSON: what changed
)


class LoginError(ValueError):
    """A name and password that do not open a session (never says which was wrong)."""


@dataclass(frozen=True)
class Session:
    """A logged-in user: name, role, and the token every form they post must carry."""

    user: str
    role: str
    csrf: str

    def may(self, role: str) -> bool:
        """Whether this user may act as `role` (an admin may act as any)."""
        return self.role in (role, "admin")


@dataclass(frozen=True)
class Decision:
    """One reviewer's labels for one flagged report."""

    patient_id: str
    user: str
    role: str
    at: float
    labels: dict[str, str]
    comment: str


@dataclass(frozen=True)
class Verdict:
    """One reader's judgement of CASS's answer for one patient: agreed, or the category
    read; `branches` holds every branch's class as the reader read it (CASS's where the
    reader left it), `study` the inbox study judged."""

    patient_id: str
    user: str
    at: float
    model_version: str
    cass_cad_rads: str | None
    cass_refer: bool | None
    agree: bool
    cad_rads: str | None
    branches: dict[str, str]
    comment: str
    study: str | None = None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ReviewStore:
    """The review app's tables in the database at `url` (created on first use)."""

    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url)
        metadata.create_all(self.engine)
        self.hasher = PasswordHasher()

    # accounts and sessions

    def add_user(self, name: str, role: str, password: str, by: str = "cli") -> None:
        """A new account, or a new role and password for an existing one."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
        if not name or len(name) > 64 or not name.replace(".", "").replace("-", "").isalnum():
            raise ValueError("a user name is 1-64 letters, digits, dots or hyphens")
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"a password has at least {MIN_PASSWORD} characters")
        row = {"role": role, "password_hash": self.hasher.hash(password)}
        with self.engine.begin() as db:
            exists = db.execute(sa.select(users.c.name).where(users.c.name == name)).first()
            if exists:
                db.execute(users.update().where(users.c.name == name).values(**row))
            else:
                db.execute(users.insert().values(name=name, created_at=time.time(), **row))
            self._audit(db, by, "user set" if exists else "user added", name, {"role": role})

    def roles(self) -> dict[str, str]:
        with self.engine.connect() as db:
            return dict(db.execute(sa.select(users.c.name, users.c.role)).all())

    def login(self, name: str, password: str, now: float | None = None) -> tuple[str, Session]:
        """A new session's secret token (for the cookie) and the session; LoginError else."""
        now = time.time() if now is None else now
        subject = name[:64]
        with self.engine.begin() as db:  # refusals are recorded: nothing raises inside
            refusals = db.execute(
                sa.select(sa.func.count())
                .select_from(audit)
                .where(
                    audit.c.subject == subject,
                    audit.c.action == "login refused",
                    audit.c.at > now - LOCKOUT_SECONDS,
                )
            ).scalar_one()
            locked = refusals >= LOCKOUT_AFTER
            row = db.execute(sa.select(users).where(users.c.name == name)).first()
            verified = not locked and row is not None and self.verifies(row, password)
            if not verified:
                self._audit(db, subject, "login locked" if locked else "login refused", subject, {})
            else:
                if self.hasher.check_needs_rehash(row.password_hash):
                    db.execute(
                        users.update()
                        .where(users.c.name == name)
                        .values(password_hash=self.hasher.hash(password))
                    )
                token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
                db.execute(sessions.delete().where(sessions.c.expires_at < now))
                db.execute(
                    sessions.insert().values(
                        token_sha256=token_hash(token),
                        user=name,
                        csrf=csrf,
                        expires_at=now + SESSION_SECONDS,
                    )
                )
                self._audit(db, name, "login", name, {})
        if locked:
            raise LoginError(f"too many failed logins: try again in {LOCKOUT_SECONDS // 60} min")
        if not verified:
            raise LoginError("unknown user or wrong password")
        return token, Session(name, row.role, csrf)

    def verifies(self, row, password: str) -> bool:
        """Whether `password` is the one whose hash the user `row` holds."""
        try:
            return self.hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def session(self, token: str | None, now: float | None = None) -> Session | None:
        """The live session of a cookie's token, or None."""
        if not token:
            return None
        now = time.time() if now is None else now
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(sessions.c.user, sessions.c.csrf, users.c.role)
                .join(users, users.c.name == sessions.c.user)
                .where(sessions.c.token_sha256 == token_hash(token), sessions.c.expires_at > now)
            ).first()
        return None if row is None else Session(row.user, row.role, row.csrf)

    def logout(self, token: str) -> None:
        with self.engine.begin() as db:
            row = db.execute(
                sa.select(sessions.c.user).where(sessions.c.token_sha256 == token_hash(token))
            ).first()
            db.execute(sessions.delete().where(sessions.c.token_sha256 == token_hash(token)))
            if row is not None:
                self._audit(db, row.user, "logout", row.user, {})

    # decisions

    def decide_labels(self, session: Session, patient_id: str, labels: dict, comment: str):
        """A reviewer's labels for a flagged report (their newest counts); audited."""
        with self.engine.begin() as db:
            db.execute(
                label_decisions.insert().values(
                    patient_id=patient_id,
                    user=session.user,
                    role=session.role,
                    at=time.time(),
                    labels=json.dumps(labels, sort_keys=True),
                    comment=comment,
                )
            )
            detail = {"labels": labels, "comment": comment}
            self._audit(db, session.user, "labels decided", patient_id, detail)

    def decisions(self, patient_id: str | None = None) -> list[Decision]:
        """Every reviewer's newest decision, per patient (one patient's, if given)."""
        query = sa.select(label_decisions).order_by(label_decisions.c.id)
        if patient_id is not None:
            query = query.where(label_decisions.c.patient_id == patient_id)
        newest: dict[tuple[str, str], Decision] = {}
        with self.engine.connect() as db:
            for row in db.execute(query):
                newest[(row.patient_id, row.user)] = Decision(
                    row.patient_id, row.user, row.role, row.at, json.loads(row.labels), row.comment
                )
        return list(newest.values())

    def record_verdict(self, session: Session, verdict: Verdict) -> None:
        """A reader's verdict on CASS's answer for one patient; audited."""
        row = {**verdict.__dict__, "branches": json.dumps(verdict.branches, sort_keys=True)}
        with self.engine.begin() as db:
            db.execute(verdicts.insert().values(**{**row, "user": session.user}))
            detail = {k: v for k, v in row.items() if k not in ("patient_id", "user", "at")}
            self._audit(db, session.user, "verdict", verdict.patient_id, detail)

    def verdicts(self) -> list[Verdict]:
        """Every verdict, oldest first."""
        with self.engine.connect() as db:
            rows = db.execute(sa.select(verdicts).order_by(verdicts.c.id)).all()
        return [
            Verdict(
                r.patient_id,
                r.user,
                r.at,
                r.model_version,
                r.cass_cad_rads,
                r.cass_refer,
                r.agree,
                r.cad_rads,
                json.loads(r.branches),
                r.comment,
                r.study,
            )
            for r in rows
        ]

    def audit_log(self, limit: int = 200) -> list[dict]:
        """The newest audited changes first: who, when, what, on which subject."""
        with self.engine.connect() as db:
            rows = db.execute(sa.select(audit).order_by(audit.c.id.desc()).limit(limit)).all()
        return [{**r._asdict(), "detail": json.loads(r.detail)} for r in rows]

    def _audit(self, db, user: str, action: str, subject: str, detail: dict) -> None:
        db.execute(
            audit.insert().values(
                at=time.time(),
                user=user,
                action=action,
                subject=subject,
                detail=json.dumps(detail, sort_keys=True),
            )
        )
