"""`cass dicom-node`: a DICOM Storage SCP that turns received studies into inbox folders.

Each instance is checked and written atomically under `<inbox>/.incoming/<study key>/`; a
study that has received nothing for the quiet period moves to `<inbox>/study-<study key>/`
(one rename; a second sending updates the folder file by file), where the inbox sensor
finds it. Folder and file names are digests of the UIDs, never names or MRNs. What is
refused or quarantined gets a row in the rejects table with a reason and no identifier.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pydicom
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    EnhancedCTImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    Verification,
)

from cass_pipeline.domain.dicom.config import NodeSettings
from cass_pipeline.domain.storage import write_bytes_atomic, write_parquet_atomic
from cass_pipeline.layout import dicom_rejects

log = logging.getLogger("cass.dicom_node")

#: The storage SOP classes of curved MPR exports (secondary capture, CT, enhanced and
#: multi-frame); anything else is refused at association.
IMAGE_SOP_CLASSES = (
    SecondaryCaptureImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
)
#: The transfer syntaxes the image readers decode.
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
INCOMING, QUARANTINE, STUDY_PREFIX = ".incoming", ".quarantine", "study-"
#: DICOM status codes the handler answers with.
SUCCESS, CANNOT_UNDERSTAND, OUT_OF_RESOURCES = 0x0000, 0xC210, 0xA700

REJECT_SCHEMA = pa.schema(
    [
        ("received_at", pa.string()),
        ("calling_ae", pa.string()),
        ("sop_class_uid", pa.string()),
        ("reason", pa.string()),
        ("quarantined_as", pa.string()),
    ]
)


def uid_key(uid: str) -> str:
    """A file-name-safe digest of a UID (16 hex digits)."""
    return hashlib.sha256(uid.encode()).hexdigest()[:16]


def check_instance(data: bytes) -> tuple[pydicom.Dataset | None, str | None]:
    """The dataset of a received instance, or the reason it cannot be used (no identifier:
    the error's type only, as pydicom's messages may quote values)."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as error:  # a corrupt stream can fail anywhere in pydicom
        return None, f"the dataset could not be decoded ({type(error).__name__})"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not str(dataset.get(keyword, "")).strip():
            return None, f"the dataset has no {keyword}"
    if "PixelData" not in dataset:
        return None, "the dataset has no pixel data"
    return dataset, None


@dataclass
class DicomNode:
    """The Storage SCP and its hand-off thread, writing into `inbox`; `state_dir` keeps
    the rejects table and quarantined files (the key holder's side)."""

    settings: NodeSettings
    inbox: Path
    state_dir: Path

    def __post_init__(self):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = None
        self._handoff: threading.Thread | None = None
        self.received = 0

    @property
    def rejects_path(self) -> Path:
        return dicom_rejects(self.state_dir)

    def application_entity(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_pdu_size = 0  # no limit: fewer PDUs for 512-px views
        for sop_class in IMAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        return ae

    def start(self) -> None:
        """Listen (in threads) and start handing quiet studies on."""
        (self.inbox / INCOMING).mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handlers = [
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_ABORTED, self.on_aborted),
        ]
        address = (self.settings.host, self.settings.port)
        self._server = self.application_entity().start_server(
            address, block=False, evt_handlers=handlers
        )
        self._handoff = threading.Thread(target=self._hand_off_loop, daemon=True)
        self._handoff.start()
        log.info(
            "listening as %s on %s:%d, quiet period %.0f s",
            self.settings.ae_title,
            *address,
            self.settings.quiet_seconds,
        )

    def stop(self) -> None:
        """Stop listening, then hand on what is complete (nothing received is lost)."""
        if self._server is not None:
            self._server.shutdown()
        self._stop.set()
        if self._handoff is not None:
            self._handoff.join()
        self.hand_off()

    def on_accepted(self, event) -> None:
        """Senders such as storescu propose every storage class whatever they send: refused
        classes beside accepted ones are no reject."""
        refused = len(event.assoc.rejected_contexts)
        log.debug(
            "from %s: %d proposed SOP classes refused", event.assoc.requestor.ae_title, refused
        )

    def on_aborted(self, event) -> None:
        """An association aborted because nothing it proposed is an image CASS reads is a
        reject per SOP class; any other abort keeps what was received."""
        assoc, calling = event.assoc, event.assoc.requestor.ae_title
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            for sop_class in sorted({c.abstract_syntax for c in assoc.rejected_contexts}):
                self.reject(
                    calling,
                    sop_class,
                    f"SOP class {sop_class} ({_sop_name(sop_class)}) is not an image CASS "
                    "reads: refused",
                )
            return
        log.warning(
            "association from %s aborted; the instances received completely are kept", calling
        )

    def on_store(self, event) -> int:
        calling = event.assoc.requestor.ae_title
        sop_class = str(event.request.AffectedSOPClassUID)
        try:
            data = event.encoded_dataset()
        except Exception as error:
            self.reject(
                calling, sop_class, f"the dataset could not be read ({type(error).__name__})"
            )
            return CANNOT_UNDERSTAND
        dataset, problem = check_instance(data)
        if problem is not None:
            name = f"{hashlib.sha256(data).hexdigest()[:16]}.dcm"
            write_bytes_atomic(self.state_dir / QUARANTINE / name, data)
            self.reject(calling, sop_class, problem, name)
            return CANNOT_UNDERSTAND
        study = uid_key(str(dataset.StudyInstanceUID))
        target = self.inbox / INCOMING / study / f"{uid_key(str(dataset.SOPInstanceUID))}.dcm"
        try:
            with self._lock:
                target.parent.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(target, data)
        except OSError as error:
            log.error("cannot store an instance of study %s: %s", study, error.strerror)
            return OUT_OF_RESOURCES
        self.received += 1
        return SUCCESS

    def reject(self, calling: str, sop_class: str, reason: str, quarantined: str = "") -> None:
        """A row in the rejects table and a line in the log, without identifiers."""
        log.warning("from %s: %s", calling, reason)
        row = {
            "received_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "calling_ae": calling,
            "sop_class_uid": sop_class,
            "reason": reason,
            "quarantined_as": quarantined,
        }
        with self._lock:
            old = read_rejects(self.rejects_path)
            table = pd.concat([old, pd.DataFrame([row])], ignore_index=True)
            write_parquet_atomic(table, self.rejects_path, REJECT_SCHEMA)

    def _hand_off_loop(self) -> None:
        while not self._stop.wait(0.25):
            self.hand_off()

    def hand_off(self) -> list[Path]:
        """Move each study quiet for `quiet_seconds` into the inbox; returns the study
        folders written."""
        moved = []
        incoming = self.inbox / INCOMING
        with self._lock:
            for staged in sorted(p for p in incoming.glob("*") if p.is_dir()):
                files = list(staged.iterdir())
                newest = max((f.stat().st_mtime for f in files), default=0.0)
                if time.time() - newest < self.settings.quiet_seconds:
                    continue
                moved.append(move_study(staged, self.inbox / f"{STUDY_PREFIX}{staged.name}"))
        for folder in moved:
            log.info("study %s handed to the inbox", folder.name)
        return moved


def move_study(staged: Path, target: Path) -> Path:
    """A staged study into its inbox folder: one rename when new, else file by file (a
    second sending updates it) and the staging folder removed."""
    if not target.exists():
        os.replace(staged, target)
        return target
    for file in staged.iterdir():
        os.replace(file, target / file.name)
    shutil.rmtree(staged, ignore_errors=True)
    return target


def read_rejects(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=REJECT_SCHEMA.names)
    return pd.read_parquet(path)


def _sop_name(uid: str) -> str:
    return pydicom.uid.UID(uid).name or "unknown"
