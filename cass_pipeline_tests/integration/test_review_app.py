"""The review app in a real browser (Debian's chromium, driven by Selenium): a reviewer settles
a flagged report and the next report run trains on it; a reader's verdict moves
`reader_agreement`; no page without a login, no POST without the session's CSRF token.
With CASS_SCREENSHOTS set, the pages are saved there (docs/review.md shows them)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import dagster as dg
import numpy as np
import pandas as pd
import pytest
import requests

from cass_pipeline.defs.assets import review
from cass_pipeline.defs.resources import CassPaths, ReviewDatabase
from cass_pipeline.domain.prediction.worklist import WORKLIST_SCHEMA, worklist_table
from cass_pipeline.domain.review.decisions import settled
from cass_pipeline.domain.review.store import ReviewStore, Verdict
from cass_pipeline.domain.storage import write_parquet_atomic
from cass_pipeline_tests.helpers import layout_of
from cass_pipeline_tests.integration.test_label_review import (
    PLANTED,
    materialise,
    plant_disagreement,
)
from cass_pipeline_tests.servers import answers, free_port, postgres_server, wait_until

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PASSWORD = "a long enough secret"
READ = "Pa1b2c3d4e5f60718"  # a pseudonym on the worklist


def reading_room(processed: Path) -> None:
    """One scored patient, referred, with its report picture, on the worklist."""
    folder = layout_of(processed).prediction(READ)
    folder.mkdir(parents=True)
    branch = {
        "class": "significant",
        "grade": "severe",
        "probabilities": {"no_stenosis": 0.05, "non_significant": 0.15, "significant": 0.8},
        "views_used": 8,
    }
    document = {
        "study": "S-1",
        "patient_class": "significant",
        "cad_rads": "4A",
        "refer": True,
        "significant_score": 0.8,
        "note": None,
        "model": {"version": 3},
        "branches": {"LAD": branch, "RCA": {**branch, "class": "no_stenosis", "grade": "none"}},
    }
    (folder / "prediction.json").write_text(json.dumps(document))
    picture = np.full((120, 400, 3), 245, np.uint8)
    cv2.rectangle(picture, (10, 10), (390, 110), (40, 40, 200), 3)
    cv2.imwrite(str(folder / "report.png"), picture)
    cv2.imwrite(str(folder / "explanations.png"), np.full((288, 512, 3), 90, np.uint8))
    table = worklist_table(layout_of(processed).predictions, {}, "prediction.json")
    write_parquet_atomic(table, layout_of(processed).worklist, WORKLIST_SCHEMA)


@pytest.fixture
def site(tmp_path, tiny_cohort):
    """Reports with one held for review, a worklist, accounts, and the app serving them."""
    if not (CHROMIUM.is_file() and DRIVER.is_file()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make env)")
    shutil.copytree(tiny_cohort / "reports", tmp_path / "raw" / "reports")
    plant_disagreement(tmp_path / "raw" / "reports" / f"{PLANTED}.txt")
    materialise(tmp_path)
    reading_room(tmp_path / "processed")
    env = {
        **os.environ,
        "CASS_RAW_DIR": str(tmp_path / "raw"),
        "CASS_PROCESSED_DIR": str(tmp_path / "processed"),
        "CASS_REVIEW_DB": f"sqlite:///{tmp_path / 'review.db'}",
    }
    cass = Path(sys.executable).with_name("cass")
    for name, role in (("rita", "reviewer"), ("rea", "reader"), ("ada", "admin")):
        subprocess.run(
            [cass, "review-user", name, "--role", role, "--password-stdin"],
            input=PASSWORD + "\n",
            text=True,
            env=env,
            check=True,
            capture_output=True,
        )
    port, log = free_port(), tmp_path / "review-app.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [cass, "review-app", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/login"), 60, "The review app", log)
        yield tmp_path, url, env
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(20)  # a page that follows a click is looked for until it loads
    try:
        yield driver
    finally:
        driver.quit()


def shot(browser, name: str) -> None:
    """The page as a PNG under CASS_SCREENSHOTS, when set (for docs/review.md)."""
    if folder := os.environ.get("CASS_SCREENSHOTS"):
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def at_login(browser, url: str) -> bool:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(lambda b: b.current_url == f"{url}/login")
    return True


def log_in(browser, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/login")
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()


@pytest.mark.slow
def test_a_reviewer_and_a_reader_in_a_browser(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    root, url, env = site
    layout = layout_of(root / "processed")
    planted = pd.read_parquet(layout.label_review).query("status == 'to review'").patient_id
    (patient,) = set(planted)

    # no page without a login, no form without the session's token
    browser.get(f"{url}/review/{patient}")
    assert at_login(browser, url)
    assert requests.post(f"{url}/review/{patient}", data={"action": "accept"}).status_code == 401
    log_in(browser, url, "rita")
    browser.find_element(By.ID, "logout")  # logged in: the page has loaded
    cookie = {"cass_session": browser.get_cookie("cass_session")["value"]}
    refused = requests.post(
        f"{url}/review/{patient}", data={"action": "accept"}, cookies=cookie, timeout=10
    )
    assert refused.status_code == 403 and "CSRF" in refused.text
    browser.get(f"{url}/reading")  # a reviewer is no reader
    assert "for the reader role" in browser.find_element(By.ID, "refused").text

    # the queue, and the flagged report with its evidence marked
    browser.get(f"{url}/review")
    shot(browser, "review-queue")
    assert "holds out of training" in browser.find_element(By.ID, "queue").text
    browser.find_element(By.LINK_TEXT, patient).click()
    marked = browser.find_elements(By.CSS_SELECTOR, "#report-text mark")
    assert any("CAD-RADS" in m.text for m in marked)
    Select(browser.find_element(By.ID, "label-LAD")).select_by_value("70-99%")
    browser.find_element(By.ID, "comment").send_keys("re-read on the workstation")
    shot(browser, "review-report")
    browser.find_element(By.ID, "save").click()
    assert "decided by rita" in browser.find_element(By.ID, "queue").text
    assert (root / "raw" / "reviews" / "review-app.csv").is_file()

    # the next report run trains on the decision
    materialise(root)
    branches = pd.read_parquet(layout.branch_labels)
    lad = branches[(branches.patient_id == patient) & (branches.branch == "LAD")].iloc[0]
    assert (lad.source, lad.pct_low, lad.pct_high) == ("review", 70, 99)
    assert "rita (reviewer): re-read on the workstation" in lad.review_note
    labels = pd.read_parquet(layout.patient_labels).set_index("patient_id")
    assert labels.reviewed[patient] and not labels.held_for_review.any()
    browser.find_element(By.ID, "logout").click()
    assert at_login(browser, url)
    browser.get(f"{url}/review")
    assert at_login(browser, url)  # the session ended

    # a reader's verdict moves reader_agreement
    def agreement_verdicts() -> tuple[int, dict]:
        result = dg.materialize(
            [review.reader_agreement],
            resources={
                "paths": CassPaths(
                    raw_dir=env["CASS_RAW_DIR"], processed_dir=env["CASS_PROCESSED_DIR"]
                ),
                "review_database": ReviewDatabase(url=env["CASS_REVIEW_DB"]),
            },
        )
        (done,) = result.asset_materializations_for_node("reader_agreement")
        weekly = pd.read_parquet(layout.reader_agreement)
        return int(weekly.verdicts.sum()) if len(weekly) else 0, done.metadata

    assert agreement_verdicts()[0] == 0
    log_in(browser, url, "rea")
    browser.find_element(By.ID, "logout")
    browser.get(f"{url}/reading")
    shot(browser, "reading-room")
    assert "refer" in browser.find_element(By.ID, "worklist").text
    browser.find_element(By.LINK_TEXT, READ).click()
    picture = browser.find_element(By.ID, "report-picture")
    assert browser.execute_script("return arguments[0].naturalWidth", picture) == 400
    explained = browser.find_element(By.ID, "explanations-picture")  # at its readable size
    assert browser.execute_script("return arguments[0].naturalWidth", explained) == 512
    other = f"{url}/reading/{READ}/prediction.json"  # only the pictures are served
    stranger = requests.get(other, timeout=10, allow_redirects=False)
    assert stranger.status_code == 303 and stranger.headers["location"] == "/login"
    reader = {"cass_session": browser.get_cookie("cass_session")["value"]}
    assert requests.get(other, cookies=reader, timeout=10).status_code == 404
    browser.find_element(By.ID, "disagree").click()
    Select(browser.find_element(By.ID, "cad-rads")).select_by_value("2")
    Select(browser.find_element(By.ID, "class-LAD")).select_by_value("non_significant")
    shot(browser, "reading-patient")
    browser.find_element(By.ID, "record").click()
    assert "given" in browser.find_element(By.ID, "worklist").text
    count, metadata = agreement_verdicts()
    assert count == 1 and metadata["overall_agreed"].value == 0.0
    (given,) = ReviewStore(env["CASS_REVIEW_DB"]).verdicts()  # what may label training
    assert given.branches == {"LAD": "non_significant", "RCA": "no_stenosis"}
    assert given.study == "S-1"
    assert metadata["overall_referral_specificity"].value == 0.0  # CASS referred, she did not

    # the admin sees the audit log of both decisions
    browser.find_element(By.ID, "logout").click()
    assert at_login(browser, url)
    log_in(browser, url, "ada")
    browser.find_element(By.ID, "logout")
    browser.get(f"{url}/admin")
    shot(browser, "admin")
    audit = browser.find_element(By.ID, "audit").text
    assert "labels decided" in audit and "verdict" in audit and "login refused" not in audit


@pytest.mark.slow
def test_the_store_works_the_same_on_postgresql(tmp_path):
    with postgres_server(tmp_path / "pg") as postgres:
        postgres.create_database("review")
        url = f"postgresql+psycopg2://{postgres.user}@{postgres.host}:{postgres.port}/review"
        store = ReviewStore(url)
        store.add_user("ada", "admin", PASSWORD)
        token, session = store.login("ada", PASSWORD)
        assert store.session(token) == session
        store.decide_labels(session, "P1", {"LAD": "70-99%"}, "adjudicated")
        store.record_verdict(
            session, Verdict("P1", "ada", 0.0, "3", "4A", True, False, "2", {}, "")
        )
        assert settled(store.decisions())[0]["P1"].labels == {"LAD": "70-99%"}
        again = ReviewStore(url)
        assert [v.cad_rads for v in again.verdicts()] == ["2"]  # kept in the server
        assert [r["action"] for r in store.audit_log()][:2] == ["verdict", "labels decided"]
        for pooled in (store, again):  # PostgreSQL stops once its clients are gone
            pooled.engine.dispose()
