"""The DICOM node on a hospital network: only allowed senders calling its own AE title,
DICOM TLS (dcmtk's storescu +tls), silent connections closed so they lock nobody out, one
bad study quarantined while the others go on, a heartbeat, owner-only files."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from cass_pipeline.defs.assets import prediction
from cass_pipeline.defs.resources import CassPaths, Inbox, PseudonymKey
from cass_pipeline.domain.dicom.node import INCOMING, printable, read_rejects, uid_key
from cass_pipeline.domain.dicom.send import deliver
from cass_pipeline_tests.servers import eventually, self_signed_certificate
from cass_pipeline_tests.unit.test_dicom import (
    destination,
    files_of,
    start_node,
    studies,
    wait_for_studies,
)
from cass_pipeline_tests.unit.test_dicom import node as node  # fixtures
from cass_pipeline_tests.unit.test_dicom import study as study

STORESCU = "/usr/bin/storescu"  # dcmtk's, not pynetdicom's script of the same name
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def associate(node, calling: str, called: str | None = None):
    ae = AE(ae_title=calling)
    ae.add_requested_context(SecondaryCaptureImageStorage)
    return ae.associate("127.0.0.1", node.settings.port, ae_title=called or node.settings.ae_title)


def test_unknown_senders_and_wrong_called_titles_are_refused_with_a_reason(node, study):
    intruder = associate(node, "INTRUDER")
    assert intruder.is_rejected and intruder.acceptor.primitive.diagnostic == 3
    wrong = associate(node, "WORKSTATION", called="PACS")
    assert wrong.is_rejected and wrong.acceptor.primitive.diagnostic == 7
    markdown = associate(node, "|**x**|")
    assert markdown.is_rejected
    allowed = associate(node, "WORKSTATION")
    assert allowed.is_established
    allowed.release()
    eventually(lambda: len(read_rejects(node.rejects_path)) >= 3, "three refusals recorded")
    rejects = read_rejects(node.rejects_path)
    reasons = " | ".join(rejects.reason)
    assert "calling AE title INTRUDER is not allowed" in reasons
    assert "called AE title PACS is not allowed" in reasons
    assert "calling AE title ???x??? is not allowed" in reasons  # no markup reaches the UI
    assert all(c.isalnum() or c in " -.?" for ae in rejects.calling_ae for c in ae)
    assert studies(node.inbox) == []


def test_ae_titles_are_shown_without_markup_or_control_bytes():
    assert printable("|**x**|\x07") == "???x????"
    assert printable("  ") == "?" and printable("CT-1.A") == "CT-1.A"
    assert len(printable("A" * 40)) == 16


def test_a_host_outside_the_allowed_networks_is_refused(tmp_path):
    node = start_node(tmp_path, allowed_hosts="10.9.0.0/16")
    try:
        assert associate(node, "WORKSTATION").is_rejected
        eventually(lambda: len(read_rejects(node.rejects_path)), "a refusal recorded")
        assert "host 127.0.0.1 is not allowed" in " ".join(read_rejects(node.rejects_path).reason)
    finally:
        node.stop()


def test_nothing_is_allowed_to_send_until_the_site_says_who(tmp_path):
    node = start_node(tmp_path, allowed_aes="")
    try:
        assert associate(node, "WORKSTATION").is_rejected
    finally:
        node.stop()


def test_silent_connections_are_closed_and_lock_nobody_out(tmp_path, study):
    node = start_node(tmp_path, max_associations=2, handshake_seconds=1.0)
    idle = [socket.create_connection(("127.0.0.1", node.settings.port)) for _ in range(6)]
    try:
        started = time.monotonic()
        delivery = eventually(
            lambda: (
                (d := deliver(files_of(study)[:1], destination(node), "WORKSTATION", 1, 0)).complete
                and d
            ),
            "a sender served beside six silent connections",
            seconds=30,
        )
        assert delivery.complete
        for connection in idle:  # each closed by the node: reading gives end of stream
            connection.settimeout(10)
            assert connection.recv(1) == b""
        assert time.monotonic() - started < 30
    finally:
        for connection in idle:
            connection.close()
        node.stop()


def test_one_study_that_cannot_be_handed_on_is_quarantined_and_the_rest_go_on(tmp_path, study):
    node = start_node(tmp_path)
    try:
        files = files_of(study)
        key = uid_key(str(pydicom.dcmread(files[0]).StudyInstanceUID))
        (node.inbox / f"study-{key}").write_text("in the way")  # a file where the folder goes
        assert deliver(files, destination(node), "WORKSTATION", 1, 0).complete
        other = pydicom.dcmread(files[0])
        other.StudyInstanceUID = other.SeriesInstanceUID = pydicom.uid.generate_uid()
        other.SOPInstanceUID = pydicom.uid.generate_uid()
        other.save_as(tmp_path / "other.dcm")
        assert deliver([tmp_path / "other.dcm"], destination(node), "WORKSTATION", 1, 0).complete
        (handed,) = wait_for_studies(node.inbox)
        assert handed.name != f"study-{key}" and len(files_of(handed)) == 1
        eventually(lambda: len(read_rejects(node.rejects_path)), "a reject")
        rejects = read_rejects(node.rejects_path)
        assert "could not be handed to the inbox" in rejects.reason.iloc[0]
        assert (node.state_dir / ".quarantine" / rejects.quarantined_as.iloc[0]).is_dir()
        assert node._handoff.is_alive()
        health = eventually(
            lambda: (
                node.health_path.is_file()
                and (h := json.loads(node.health_path.read_text()))["studies_quarantined"]
                and h
            ),
            "a heartbeat that counts the quarantined study",
        )
        assert health["errors"] == 1 and "NotADirectoryError" in health["last_error"]
        assert health["studies_handed_off"] == 1
    finally:
        node.stop()


def test_received_files_are_owner_only_whatever_the_umask(tmp_path, study):
    old = os.umask(0o022)
    try:
        node = start_node(tmp_path)
        incoming = node.inbox / INCOMING / "leftover"
        incoming.mkdir()
        (incoming / ".1.dcm.99999999.abc.tmp").write_bytes(b"half")  # a killed node's temporary
        (incoming / "1.dcm").write_bytes(files_of(study)[0].read_bytes())
        try:
            assert deliver(files_of(study), destination(node), "WORKSTATION", 1, 0).complete
            folders = wait_for_studies(node.inbox, 2)
        finally:
            node.stop()
    finally:
        os.umask(old)
    for folder in folders:
        assert folder.stat().st_mode & 0o777 == 0o700
        # the temporary never reaches a study; the node's stamp that it is complete does
        assert [p.name for p in folder.glob(".*")] == [".cass-complete"]
    received = [p for folder in folders for p in files_of(folder)]
    assert len(received) == 1 + len(files_of(study))
    assert {p.stat().st_mode & 0o777 for p in received} == {0o600}
    assert (node.inbox / INCOMING).stat().st_mode & 0o777 == 0o700


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def storescu(node, files, *tls: str) -> subprocess.CompletedProcess:
    command = [STORESCU, *tls, "-aet", "STORESCU", "-aec", node.settings.ae_title]
    command += ["127.0.0.1", str(node.settings.port), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_dcmtk_sends_over_dicom_tls_and_plain_tcp_is_turned_away(tmp_path, study, certificate):
    if not Path(STORESCU).is_file():
        pytest.skip("dcmtk's storescu is not installed (make env installs Debian's dcmtk)")
    key, cert = certificate
    node = start_node(tmp_path, tls_cert=str(cert), tls_key=str(key), handshake_seconds=2.0)
    silent = socket.create_connection(("127.0.0.1", node.settings.port))
    try:
        plain = storescu(node, files_of(study)[:1])
        assert plain.returncode != 0
        secure = storescu(node, files_of(study), "+tls", str(key), str(cert), "+cf", str(cert))
        assert secure.returncode == 0, secure.stderr + secure.stdout
        (folder,) = wait_for_studies(node.inbox)
        assert len(files_of(folder)) == len(files_of(study))
    finally:
        silent.close()
        node.stop()


def test_pydicoms_test_files_sent_to_the_node_never_start_a_run(tmp_path):
    if not Path(STORESCU).is_file():
        pytest.skip("dcmtk's storescu is not installed (make env installs Debian's dcmtk)")
    node = start_node(tmp_path, allowed_aes="STORESCU")
    files = [str(p) for p in sorted(PYDICOM_FILES.rglob("*")) if p.is_file()]
    command = [STORESCU, "-aet", "STORESCU", "-aec", node.settings.ae_title, "--no-halt"]
    try:
        for start in range(0, len(files), 40):  # one batch's refusal leaves the others
            address = ["127.0.0.1", str(node.settings.port)]
            batch = [*command, *address, *files[start : start + 40]]
            subprocess.run(batch, capture_output=True, timeout=120)
        eventually(lambda: not any((node.inbox / INCOMING).iterdir()), "every study handed on")
    finally:
        node.stop()
    handed_on = studies(node.inbox)
    assert len(handed_on) >= 5  # the secondary captures and CTs the node accepts
    resources = {
        "paths": CassPaths(raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "out")),
        "inbox": Inbox(folder=str(node.inbox), quiet_seconds=0),
        "pseudonyms": PseudonymKey(key_file=str(tmp_path / "pseudonym.key")),
    }
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        result = prediction.inbox_sensor(context)
    assert [r.job_name for r in result.run_requests] == ["rebuild_worklist"]  # no scoring
    refusals = pd.read_parquet(tmp_path / "out" / "inbox_refusals.parquet")
    assert len(refusals) == len(handed_on)
    assert refusals.reason.str.contains("not a coronary curved-MPR export|newer study").all()
