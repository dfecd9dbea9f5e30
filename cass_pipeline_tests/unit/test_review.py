"""The review app's store and rules: hashed passwords, sessions that end, audited decisions,
reviewers who disagree waiting for an admin, overrides in the one format the report stage
reads, and agreement figures against the readers."""

import time

import pytest
import sqlalchemy as sa

from cass_pipeline.domain.reports.review import read_overrides
from cass_pipeline.domain.review.decisions import (
    agreement,
    agreement_by_week,
    settled,
    verdict_table,
    write_overrides,
)
from cass_pipeline.domain.review.store import LoginError, ReviewStore, Verdict

PASSWORD = "a long enough secret"


@pytest.fixture
def store(tmp_path):
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    for name, role in (("rita", "reviewer"), ("rolf", "reviewer"), ("ada", "admin")):
        store.add_user(name, role, PASSWORD)
    store.add_user("rea", "reader", PASSWORD)
    return store


def test_passwords_are_hashed_and_sessions_end(store, tmp_path):
    with store.engine.connect() as db:
        hashes = [row.password_hash for row in db.execute(sa.text("select * from users"))]
    assert all(h.startswith("$argon2") and PASSWORD not in h for h in hashes)
    assert PASSWORD.encode() not in (tmp_path / "review.db").read_bytes()
    with pytest.raises(LoginError):
        store.login("rita", "not the password")
    with pytest.raises(LoginError):
        store.login("nobody", PASSWORD)
    with pytest.raises(ValueError, match="at least 10"):
        store.add_user("shorty", "reader", "short")
    with pytest.raises(ValueError, match="unknown role"):
        store.add_user("eve", "root", PASSWORD)
    token, session = store.login("rita", PASSWORD)
    assert store.session(token) == session and session.may("reviewer")
    assert not session.may("reader") and not session.may("admin")
    assert store.session(token, now=time.time() + 9 * 3600) is None  # expired
    store.logout(token)
    assert store.session(token) is None
    actions = [row["action"] for row in store.audit_log()]
    assert actions[:4] == ["logout", "login", "login refused", "login refused"]


def test_a_name_refused_five_times_waits(store):
    for _ in range(5):
        with pytest.raises(LoginError, match="wrong password"):
            store.login("rea", "guessing again")
    with pytest.raises(LoginError, match="too many failed logins"):
        store.login("rea", PASSWORD)  # even the right password, for now
    assert store.login("rea", PASSWORD, now=time.time() + 16 * 60)[1].role == "reader"
    assert store.login("rita", PASSWORD)[1].role == "reviewer"  # other names are not locked


def test_reviewers_who_disagree_wait_for_an_admin_and_overrides_are_read_as_one_format(
    store, tmp_path
):
    rita = store.login("rita", PASSWORD)[1]
    rolf = store.login("rolf", PASSWORD)[1]
    store.decide_labels(rita, "P1", {"LAD": "70-99%"}, "re-read")
    store.decide_labels(rolf, "P1", {"LAD": "70-99%"}, "")
    store.decide_labels(rita, "P2", {}, "")  # the parsed labels are right
    store.decide_labels(rita, "P3", {"RCA": "50-69%"}, "")
    store.decide_labels(rolf, "P3", {"RCA": "25-49%"}, "")
    standing, disputed = settled(store.decisions())
    assert set(standing) == {"P1", "P2"} and set(disputed) == {"P3"}
    reviews = tmp_path / "reviews"
    reviews.mkdir()
    write_overrides(reviews, store.decisions())
    overrides, problems = read_overrides(reviews)
    assert problems == []
    rows = {(o.patient_id, o.branch): o for o in overrides}
    assert set(rows) == {("P1", "LAD"), ("P2", None)}  # P3 waits: nothing written for it
    assert (rows["P1", "LAD"].pct_low, rows["P1", "LAD"].pct_high) == (70, 99)
    ada = store.login("ada", PASSWORD)[1]
    store.decide_labels(ada, "P3", {"RCA": "50-69%"}, "adjudicated")
    write_overrides(reviews, store.decisions())
    overrides, _ = read_overrides(reviews)
    (p3,) = [o for o in overrides if o.patient_id == "P3"]
    assert p3.stenosis_class == "significant" and "ada (admin): adjudicated" in p3.note
    audited = [r for r in store.audit_log() if r["action"] == "labels decided"]
    assert len(audited) == 6 and audited[0]["detail"]["labels"] == {"RCA": "50-69%"}


def verdict(patient, cass, agree, read=None, at=0.0, reader="rea"):
    refer = cass in ("3", "4A", "4B", "5")
    return Verdict(patient, reader, at, "4", cass, refer, agree, read, {}, "")


def test_agreement_against_the_readers():
    week = 1_767_571_200.0  # a Monday
    verdicts = [
        verdict("P1", "4A", True, at=week),
        verdict("P2", "0", True, at=week + 60),
        verdict("P3", "2", False, "3", at=week + 120),  # CASS missed a referral
        verdict("P4", "1", False, "0", at=week + 8 * 86400),
        verdict("P4", "1", True, at=week + 8 * 86400 + 1),  # the reader changed their mind
    ]
    table = verdict_table(verdicts)
    assert len(table) == 4 and table.agree.tolist() == [True, True, False, True]
    figures = agreement(table)
    assert figures["verdicts"] == 4 and figures["agreed"] == 0.75
    assert figures["referral_sensitivity"] == 0.5 and figures["referral_specificity"] == 1.0
    assert 0 < figures["kappa_linear"] < 1
    perfect = agreement(table[table.agree])
    assert perfect["kappa_linear"] == pytest.approx(1.0)
    weekly = agreement_by_week(table)
    assert weekly.verdicts.tolist() == [3, 1]
    assert agreement_by_week(verdict_table([])).empty
