"""The DICOM node (studies in), the structured report and key image (results out), and
their delivery with retries; on 127.0.0.1, free ports, the synthetic cohort's files."""

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from cass_pipeline.domain.anatomy import GRADES
from cass_pipeline.domain.dicom.config import Destination, NodeSettings, SendSettings
from cass_pipeline.domain.dicom.node import DicomNode, read_rejects
from cass_pipeline.domain.dicom.outbox import (
    DeliveryState,
    send_results,
    undelivered,
    write_results,
)
from cass_pipeline.domain.dicom.results import BRANCH_CODES, NoSourceStudyError
from cass_pipeline.domain.dicom.send import deliver
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline_tests.servers import eventually, free_port

ALL_STORAGE = [SecondaryCaptureImageStorage, ComprehensiveSRStorage]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One tiny synthetic patient's DICOM export (series in sub-folders)."""
    root = tmp_path_factory.mktemp("dicom_cohort")
    generate_cohort(preset("tiny", n_patients=1), root, workers=1)
    return next((root / "mpr").iterdir())


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


@pytest.fixture
def node(tmp_path):
    node = DicomNode(
        NodeSettings(port=free_port(), quiet_seconds=0.5), tmp_path / "inbox", tmp_path / "state"
    )
    node.start()
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
        "model": {"name": "cass-stenosis", "version": 7, "run_id": "0123abcd"},
        "patient_class": "significant",
        "cad_rads": "4A",
        "refer": True,
        "significant_score": 0.7,
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
    sr_path, sc_path = written
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
        assert BRANCH_CODES[branch][0] in checked.stdout
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
        assert delivery.complete and len(store.received) == 2
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
