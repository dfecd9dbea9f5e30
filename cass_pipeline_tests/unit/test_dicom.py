"""The DICOM node (studies in), the structured report and key image (results out), and
their delivery with retries; on 127.0.0.1, free ports, the synthetic cohort's files."""

import shutil
import subprocess
from pathlib import Path
from typing import get_args

import cv2
import numpy as np
import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    ComprehensiveSRStorage,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
)

from cass_pipeline.domain.anatomy import GRADES, SNOMED_OF_BRANCH
from cass_pipeline.domain.dicom.config import Destination, NodeSettings, SendSettings
from cass_pipeline.domain.dicom.node import DicomNode, read_rejects
from cass_pipeline.domain.dicom.outbox import (
    DeliveryState,
    send_results,
    undelivered,
    write_results,
)
from cass_pipeline.domain.dicom.results import NoSourceStudyError, NotScoredError
from cass_pipeline.domain.dicom.send import Delivery, deliver
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import ExportStyle, preset
from cass_pipeline_tests.servers import dciodvfy, eventually, free_port

ALL_STORAGE = [
    SecondaryCaptureImageStorage,
    ComprehensiveSRStorage,
    KeyObjectSelectionDocumentStorage,
]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One tiny synthetic patient's DICOM export (series in sub-folders)."""
    root = tmp_path_factory.mktemp("dicom_cohort")
    generate_cohort(preset("tiny", n_patients=1), root, workers=1)
    return next((root / "mpr").iterdir())


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


SENDERS = "WORKSTATION,STORESCU"


def start_node(tmp_path: Path, **settings) -> DicomNode:
    settings = {"port": free_port(), "quiet_seconds": 0.5, "allowed_aes": SENDERS, **settings}
    node = DicomNode(NodeSettings(**settings), tmp_path / "inbox", tmp_path / "state")
    node.start()
    return node


@pytest.fixture
def node(tmp_path):
    node = start_node(tmp_path)
    yield node
    node.stop()


def destination(node: DicomNode) -> Destination:
    return Destination(node.settings.ae_title, "127.0.0.1", node.settings.port)


def studies(inbox: Path) -> list[Path]:
    return sorted(p for p in inbox.glob("study-*") if p.is_dir())


def wait_for_studies(inbox: Path, count: int = 1) -> list[Path]:
    def enough() -> list[Path]:
        found = studies(inbox)
        return found if len(found) >= count else []

    return eventually(enough, f"fewer than {count} studies in {inbox}")


def test_a_sent_study_becomes_one_inbox_folder_without_identifiers(node, study):
    sent = files_of(study)
    delivery = deliver(sent, destination(node), "WORKSTATION", 1, 0)
    assert delivery.complete and delivery.attempts == 1
    (folder,) = wait_for_studies(node.inbox)
    received = files_of(folder)
    assert len(received) == len(sent)
    header = pydicom.dcmread(sent[0])
    for identifier in (
        str(header.PatientID),
        str(header.PatientName),
        str(header.StudyInstanceUID),
    ):
        assert all(identifier not in str(p.relative_to(node.inbox)) for p in received)
    # the pixels arrive as sent
    by_uid = {pydicom.dcmread(p).SOPInstanceUID: p for p in received}
    original = pydicom.dcmread(sent[0])
    assert (
        pydicom.dcmread(by_uid[original.SOPInstanceUID]).pixel_array == original.pixel_array
    ).all()
    assert not any((node.inbox / ".incoming").iterdir())


def test_a_second_sending_updates_the_study_folder(node, study, tmp_path):
    files = files_of(study)
    deliver(files[:3], destination(node), "WORKSTATION", 1, 0)
    (folder,) = wait_for_studies(node.inbox)
    assert len(files_of(folder)) == 3
    deliver(files, destination(node), "WORKSTATION", 1, 0)
    eventually(lambda: len(files_of(folder)) == len(files), "the second sending not in the study")
    assert studies(node.inbox) == [folder]


def associate(node: DicomNode, *sop_classes):
    ae = AE(ae_title="WORKSTATION")
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", node.settings.port, ae_title=node.settings.ae_title)
    assert assoc.is_established
    return assoc


def test_non_images_are_refused_and_broken_datasets_quarantined_with_a_reason(node, study):
    good = pydicom.dcmread(files_of(study)[0])
    # a sender proposing every storage class (as storescu does) is no reject in itself
    mixed = associate(node, *ALL_STORAGE)
    no_pixels = good.copy()
    del no_pixels.PixelData
    no_pixels.SOPInstanceUID = pydicom.uid.generate_uid()
    assert mixed.send_c_store(no_pixels).Status == 0xC210
    mixed.release()
    ae = AE(ae_title="WORKSTATION")
    ae.add_requested_context(ComprehensiveSRStorage)
    refused = ae.associate("127.0.0.1", node.settings.port, ae_title=node.settings.ae_title)
    assert not refused.is_established  # no context CASS reads: refused at association
    eventually(lambda: len(read_rejects(node.rejects_path)) >= 2, "fewer than two rejects")
    rejects = read_rejects(node.rejects_path)
    assert len(rejects) == 2
    reasons = " | ".join(rejects.reason)
    assert "Comprehensive SR" in reasons and "not an image" in reasons
    assert "no pixel data" in reasons
    quarantined = rejects.quarantined_as[rejects.reason.str.contains("pixel")].iloc[0]
    assert (node.state_dir / ".quarantine" / quarantined).is_file()
    assert str(good.PatientID) not in rejects.to_csv() and str(good.PatientName) not in reasons


def test_what_arrived_before_an_association_broke_is_kept(node, study):
    files = files_of(study)
    ae = AE(ae_title="WORKSTATION")
    ae.add_requested_context(
        SecondaryCaptureImageStorage, pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID
    )
    assoc = ae.associate("127.0.0.1", node.settings.port, ae_title=node.settings.ae_title)
    for path in files[:2]:
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0
    assoc.abort()
    (folder,) = wait_for_studies(node.inbox)
    assert len(files_of(folder)) == 2


def document_for(headers_folder: Path) -> dict:
    """A prediction.json of a grade model for the study's branches (what the asset reads)."""
    by_branch = {}
    for path in files_of(headers_folder):
        branch = (
            path.parent.name.split("-")[0]
            if path.parent.name.startswith("LAD")
            else path.parent.name
        )
        by_branch.setdefault(branch, []).append(path.relative_to(headers_folder).as_posix())
    branches = {
        branch: {
            "class": "significant" if k == 0 else "no_stenosis",
            "grade": GRADES[4] if k == 0 else GRADES[0],
            "probabilities": {"no_stenosis": 0.1, "non_significant": 0.2, "significant": 0.7},
            "significant_score": 0.7,
            "views_used": len(sources),
            "views": [{"source": s} for s in sources],
        }
        for k, (branch, sources) in enumerate(sorted(by_branch.items()))
    }
    return {
        "patient": "P-0001",
        "model": {
            "name": "cass-stenosis",
            "version": 7,
            "run_id": "0123abcd",
            "arch": "shufflenet_v2_x1_0",
        },
        "patient_class": "significant",
        "cad_rads": "4A",
        "refer": True,
        "significant_score": 0.7,
        "decided_by": "LAD",
        "arteries": {"LAD": {"class": "significant", "decided_by": "LAD"}},
        "branches": branches,
    }


def report_png() -> bytes:
    picture = np.full((120, 200, 3), 255, np.uint8)
    cv2.putText(picture, "CASS", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1, (0, 0, 200), 2)
    return cv2.imencode(".png", picture)[1].tobytes()


def test_the_structured_report_is_valid_for_dcmtk_and_says_what_the_document_says(study, tmp_path):
    if shutil.which("dsrdump") is None:
        pytest.skip("dcmtk's dsrdump is not installed (make env installs Debian's dcmtk)")
    document = document_for(study)
    written = write_results(document, report_png(), study, tmp_path / "out", "CASS")
    sr_path, sc_path, ko_path = written
    checked = subprocess.run(["dsrdump", "-Ec", str(sr_path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "Error" not in checked.stderr and "Warning" not in checked.stderr, checked.stderr
    assert "Imaging Measurement Report" in checked.stdout
    sr, source = pydicom.dcmread(sr_path), pydicom.dcmread(files_of(study)[0])
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert (sr.PatientID, sr.PatientName) == (source.PatientID, source.PatientName)
    evidence = {
        item.ReferencedSOPInstanceUID
        for series in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {pydicom.dcmread(p).SOPInstanceUID for p in files_of(study)}
    for branch, finding in document["branches"].items():
        assert SNOMED_OF_BRANCH[branch][0] in checked.stdout
        assert f"{finding['class']},99CASS" in checked.stdout
    assert "CR-4A,99CASS" in checked.stdout and "not a diagnosis" in sr_path.read_bytes().decode(
        "latin-1"
    )
    key = pydicom.dcmread(sc_path)
    assert (
        key.StudyInstanceUID == source.StudyInstanceUID
        and key.SeriesInstanceUID != sr.SeriesInstanceUID
    )
    assert key.pixel_array.shape == (120, 200, 3)
    dumped = subprocess.run(["dcmdump", str(sc_path)], capture_output=True, text=True)
    assert dumped.returncode == 0, dumped.stderr
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99CASS"
    key_objects = pydicom.dcmread(ko_path)
    assert key_objects.Modality == "KO" and key_objects.StudyInstanceUID == source.StudyInstanceUID
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in key_objects.CurrentRequestedProcedureEvidenceSequence[
            0
        ].ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    decisive = {
        pydicom.dcmread(study / v["source"]).SOPInstanceUID
        for v in document["branches"]["LAD"]["views"]
    }
    assert referenced == decisive | {key.SOPInstanceUID}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools is not installed")
def test_every_object_cass_writes_passes_dciodvfy(study, tmp_path):
    written = write_results(document_for(study), report_png(), study, tmp_path / "out", "CASS")
    assert [(p.name, dciodvfy(p)) for p in written] == [(p.name, []) for p in written]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools is not installed")
@pytest.mark.parametrize("style", get_args(ExportStyle))
def test_every_synthetic_export_style_passes_dciodvfy(style, tmp_path):
    config = preset("tiny", n_patients=1, n_views=2, export_style=style)
    if config.image_format != "dicom":
        pytest.skip("not DICOM")
    generate_cohort(config, tmp_path, workers=1)
    files = [p for p in (tmp_path / "mpr").rglob("*") if p.is_file()]
    found = {str(p.relative_to(tmp_path)): dciodvfy(p) for p in files[:3]}
    assert files and found == {name: [] for name in found}


def test_the_same_prediction_is_the_same_objects_and_keeps_its_delivery(study, tmp_path):
    out = tmp_path / "out"
    first = [
        pydicom.dcmread(p).SOPInstanceUID
        for p in write_results(document_for(study), report_png(), study, out, "CASS")
    ]
    DeliveryState(out).record(Delivery(Destination("PACS", "h", 104), attempts=1))
    again = [
        pydicom.dcmread(p).SOPInstanceUID
        for p in write_results(document_for(study), report_png(), study, out, "CASS")
    ]
    assert again == first and DeliveryState(out).read()["PACS@h:104"]["delivered"]
    changed = {**document_for(study), "cad_rads": "3"}
    new = [
        pydicom.dcmread(p).SOPInstanceUID
        for p in write_results(changed, report_png(), study, out, "CASS")
    ]
    assert not set(new) & set(first) and DeliveryState(out).read() == {}
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o600}


def test_header_values_that_break_the_rules_are_left_out_and_never_quoted(study, tmp_path, recwarn):
    odd = tmp_path / "odd"
    for path in files_of(study):
        dataset = pydicom.dcmread(path)
        dataset.StudyTime, dataset.PatientBirthDate = "15:18:59", "12/03/1955"
        dataset.PatientName = "JXD191021006"  # one component: highdicom would warn with it
        target = odd / path.relative_to(study)
        target.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(target)
    sr_path, *_ = write_results(document_for(odd), report_png(), odd, tmp_path / "out", "CASS")
    sr = pydicom.dcmread(sr_path)
    assert (sr.StudyTime, sr.PatientBirthDate) == ("", "")
    assert not [w for w in recwarn if "JXD191021006" in str(w.message)]


class Store:
    """A destination that keeps what it is sent; `up` says whether it listens."""

    def __init__(self):
        self.port, self.received, self.server = free_port(), [], None

    def start(self):
        ae = AE(ae_title="PACS")
        for sop_class in ALL_STORAGE:
            ae.add_supported_context(sop_class)

        def keep(event):
            self.received.append(event.dataset.SOPInstanceUID)
            return 0

        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, keep)]
        )

    def stop(self):
        self.server.shutdown()

    @property
    def destination(self) -> str:
        return f"PACS@127.0.0.1:{self.port}"


def test_a_destination_down_is_retried_recorded_and_resent_later(study, tmp_path):
    outbox = tmp_path / "outbox"
    written = write_results(document_for(study), report_png(), study, outbox / "P-0001", "CASS")
    store = Store()
    settings = SendSettings(store.destination, attempts=3, backoff_seconds=0.05)
    waits = []
    failed = deliver(written, Destination.parse(store.destination), "CASS", 3, 0.05, waits.append)
    assert not failed.complete and failed.attempts == 3 and waits == [0.05, 0.1]
    assert "no association" in failed.problem
    send_results(outbox / "P-0001", settings)
    state = DeliveryState(outbox / "P-0001").read()[store.destination]
    assert not state["delivered"] and state["attempts"] == 3 and state["problem"]
    assert undelivered(outbox, settings) == [outbox / "P-0001"]
    store.start()
    try:
        (delivery,) = send_results(outbox / "P-0001", settings)
        assert delivery.complete and len(store.received) == 3
        assert undelivered(outbox, settings) == []
        assert send_results(outbox / "P-0001", settings) == []  # delivered once, not twice
    finally:
        store.stop()


def test_destinations_are_ae_at_host_colon_port():
    assert str(Destination.parse(" PACS@10.0.0.5:104 ")) == "PACS@10.0.0.5:104"
    with pytest.raises(ValueError, match="AE@host:port"):
        Destination.parse("PACS:104")


def test_an_export_without_dicom_headers_has_no_study_for_results(tmp_path):
    (tmp_path / "png" / "LAD").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "png" / "LAD" / "000.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(NoSourceStudyError, match="no DICOM file"):
        write_results({"branches": {}}, None, tmp_path / "png", tmp_path / "out", "CASS")
    assert not (tmp_path / "out" / "sr.dcm").exists()


def test_no_result_states_a_value_that_was_never_computed(study, tmp_path):
    unscored = {**document_for(study), "significant_score": None, "patient_class": None}
    unscored.update(note="no view could be used", cad_rads=None, refer=None)
    with pytest.raises(NotScoredError, match="no view could be used"):
        write_results(unscored, report_png(), study, tmp_path / "none", "CASS")
    assert not (tmp_path / "none").exists()
    partly = document_for(study)
    first = next(iter(partly["branches"]))
    partly["branches"][first].update(probabilities=None, views_used=0, views=[])
    partly["branches"][first].update({"class": "no_stenosis", "grade": None})
    sr_path, *_ = write_results(partly, report_png(), study, tmp_path / "out", "CASS")
    groups = pydicom.dcmread(sr_path).ContentSequence[-1].ContentSequence
    scores = {}
    for group in groups:
        codes = {i.ConceptNameCodeSequence[0].CodeValue: i for i in group.ContentSequence}
        tracked = codes["112039"].TextValue  # the tracking identifier: branch or "patient"
        scores[tracked] = (
            [codes["PSIG"].MeasuredValueSequence[0].NumericValue] if "PSIG" in codes else []
        )
    assert scores[first] == [] and all(v for k, v in scores.items() if k != first)


class Refusing(Store):
    """A destination that stores images but not structured reports."""

    def start(self):
        ae = AE(ae_title="PACS")
        ae.add_supported_context(SecondaryCaptureImageStorage)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False)


def test_a_destination_that_refuses_the_sr_class_is_a_permanent_failure(study, tmp_path):
    outbox = tmp_path / "outbox"
    write_results(document_for(study), report_png(), study, outbox / "P-0001", "CASS")
    store = Refusing()
    store.start()
    try:
        settings = SendSettings(store.destination, attempts=4, backoff_seconds=0.05)
        (delivery,) = send_results(outbox / "P-0001", settings)
        assert delivery.permanent and delivery.attempts == 1
        assert "does not store Comprehensive SR" in delivery.problem
        state = DeliveryState(outbox / "P-0001")
        assert state.read()[store.destination]["state"] == "refused"
        assert undelivered(outbox, settings) == []  # not retried for ever
        assert list(state.refused(settings.parsed())) == [store.destination]
        retry = SendSettings(store.destination, attempts=1, retry_refused=True)
        assert undelivered(outbox, retry) == [outbox / "P-0001"]
    finally:
        store.stop()


def test_a_stale_heartbeat_or_a_failure_says_what_is_wrong_with_the_node():
    from datetime import UTC, datetime

    from cass_pipeline.domain.dicom.node import health_problems

    beat = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    health = {"at": beat.isoformat(), "errors": 0, "last_error": ""}
    assert health_problems(health, beat.timestamp() + 30) == []
    (stale,) = health_problems(health, beat.timestamp() + 90)
    assert "no heartbeat for 90 s" in stale
    failed = {**health, "errors": 2, "last_error": "the hand-off failed: OSError: No space"}
    assert health_problems(failed, beat.timestamp()) == [
        "2 failures, the last: the hand-off failed: OSError: No space"
    ]
