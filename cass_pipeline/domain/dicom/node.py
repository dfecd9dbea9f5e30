"""`cass dicom-node`: a DICOM Storage SCP that turns received studies into inbox folders.

Only allowed calling AE titles (and hosts) that call this node's AE title are served, over
DICOM TLS when a certificate is set; connections that stay silent are closed and at most
`max_associations` are served at once. Each instance is checked and written atomically
(owner-only) under `<inbox>/.incoming/<study key>/`; a study that has received nothing for
the quiet period moves to `<inbox>/study-<study key>/` (one rename; a second sending
updates the folder file by file), where the inbox sensor finds it. A study that cannot be
handed on is quarantined and the others go on; the node's heartbeat (`node_health.json`)
says how it is doing. Folder and file names are digests of the UIDs, never names or MRNs.
What is refused or quarantined gets a row in the rejects table with a reason and no
identifier.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import ssl
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
from cass_pipeline.domain.prediction.inbox import COMPLETE_STAMP
from cass_pipeline.domain.storage import (
    PRIVATE,
    PRIVATE_FOLDER,
    private_folder,
    write_bytes_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from cass_pipeline.layout import dicom_node_health, dicom_rejects

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
#: A-ASSOCIATE-RJ (result, source, reason): rejected permanently by the service user, for
#: no given reason (a host not allowed), a calling AE title not recognised, a called one not.
REJECT_HOST, REJECT_CALLING_AE, REJECT_CALLED_AE = (1, 1, 1), (1, 1, 3), (1, 1, 7)
#: Seconds between two heartbeats of the hand-off thread, and the age at which a heartbeat
#: says the node is down.
HEARTBEAT_SECONDS, HEARTBEAT_STALE_SECONDS = 5.0, 60.0

REJECT_SCHEMA = pa.schema(
    [
        ("received_at", pa.string()),
        ("calling_ae", pa.string()),
        ("sop_class_uid", pa.string()),
        ("reason", pa.string()),
        ("quarantined_as", pa.string()),
    ]
)


def printable(text: object) -> str:
    """An AE title from the wire as it may be shown in a log, a table or the UI's markdown:
    ASCII letters, digits, space, '-' and '.', anything else '?' (at most 16)."""
    shown = "".join(
        c if (c.isascii() and c.isalnum()) or c in " -." else "?" for c in str(text)[:16]
    )
    return shown.strip() or "?"


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
        self.received = self.handed_off = self.quarantined = self.errors = 0
        self.last_error = ""
        self._failed: set[str] = set()  # staged studies that could not even be quarantined

    @property
    def rejects_path(self) -> Path:
        return dicom_rejects(self.state_dir)

    @property
    def health_path(self) -> Path:
        return dicom_node_health(self.state_dir)

    def application_entity(self) -> AE:
        settings, ae = self.settings, AE(ae_title=self.settings.ae_title)
        ae.maximum_pdu_size = 0  # no limit: fewer PDUs for 512-px views
        ae.maximum_associations = settings.max_associations
        ae.acse_timeout = settings.handshake_seconds
        ae.network_timeout = ae.dimse_timeout = settings.idle_seconds
        for sop_class in IMAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        return ae

    def tls_context(self) -> ssl.SSLContext | None:
        """DICOM TLS (TLS 1.2 or later) when a certificate is set; with a CA, senders must
        show a certificate it signed. The handshake happens on the association's thread,
        within `handshake_seconds`, so a silent connection cannot hold the listener."""
        if not self.settings.tls_cert:
            return None
        context = DeferredHandshake(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key or None)
        context.handshake_seconds = self.settings.handshake_seconds
        if self.settings.tls_ca:
            context.load_verify_locations(self.settings.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def start(self) -> None:
        """Listen (in threads) and start handing quiet studies on."""
        private_folder(self.inbox / INCOMING)
        private_folder(self.state_dir)
        handlers = [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_ABORTED, self.on_aborted),
        ]
        address = (self.settings.host, self.settings.port)
        self._server = self.application_entity().start_server(
            address, block=False, evt_handlers=handlers, ssl_context=self.tls_context()
        )
        self._handoff = threading.Thread(target=self._hand_off_loop, daemon=True)
        self._handoff.start()
        allowed = self.settings.calling_aes()
        log.info(
            "listening as %s on %s:%d%s, quiet period %.0f s, calling AEs allowed: %s",
            self.settings.ae_title,
            *address,
            " with TLS" if self.settings.tls_cert else "",
            self.settings.quiet_seconds,
            "any" if allowed is None else ", ".join(sorted(allowed)) or "none",
        )
        if allowed is None:
            log.warning("any calling AE title may send: use --allowed-aes on a hospital network")

    def stop(self) -> None:
        """Stop listening, then hand on what is complete (nothing received is lost)."""
        if self._server is not None:
            self._server.shutdown()
        self._stop.set()
        if self._handoff is not None:
            self._handoff.join()
        self.hand_off()

    def on_requested(self, event) -> None:
        """Refuse a host not allowed, a calling AE title not allowed and a called AE title
        that is not this node's, each as a reject row with the reason."""
        assoc, primitive = event.assoc, event.assoc.requestor.primitive
        calling, called = primitive.calling_ae_title.strip(), primitive.called_ae_title.strip()
        allowed, host = self.settings.calling_aes(), event.assoc.requestor.address
        if not self.settings.host_allowed(host):
            refusal, reason = REJECT_HOST, f"host {printable(host)}"
        elif allowed is not None and calling not in allowed:
            refusal, reason = REJECT_CALLING_AE, f"calling AE title {printable(calling)}"
        elif called != self.settings.ae_title:
            refusal, reason = REJECT_CALLED_AE, f"called AE title {printable(called)}"
        else:
            return
        assoc.acse.send_reject(*refusal)  # as pynetdicom's own checks do: the answer is sent
        assoc.is_rejected = True  # before the connection closes, and nothing else follows
        assoc.kill()
        self.reject(printable(calling), "", f"association refused: {reason} is not allowed")

    def on_accepted(self, event) -> None:
        """Senders such as storescu propose every storage class whatever they send: refused
        classes beside accepted ones are no reject."""
        refused = len(event.assoc.rejected_contexts)
        calling = printable(event.assoc.requestor.ae_title)
        log.debug("from %s: %d proposed SOP classes refused", calling, refused)

    def on_aborted(self, event) -> None:
        """An association aborted because nothing it proposed is an image CASS reads is a
        reject per SOP class; any other abort keeps what was received."""
        assoc, calling = event.assoc, printable(event.assoc.requestor.ae_title)
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
        calling = printable(event.assoc.requestor.ae_title)
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
            private_folder(self.state_dir / QUARANTINE)
            write_bytes_atomic(self.state_dir / QUARANTINE / name, data, private=True)
            self.reject(calling, sop_class, problem, name)
            return CANNOT_UNDERSTAND
        study = uid_key(str(dataset.StudyInstanceUID))
        target = self.inbox / INCOMING / study / f"{uid_key(str(dataset.SOPInstanceUID))}.dcm"
        try:
            with self._lock:
                private_folder(target.parent)
                write_bytes_atomic(target, data, private=True)
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
        """Hand studies on and beat, until stopped; no failure ends the loop."""
        beat = 0.0
        while not self._stop.wait(0.25):
            try:
                self.hand_off()
            except Exception as error:  # never let the thread die: say why, go on
                self.failed("the hand-off", error)
            if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                beat = time.monotonic()
                try:
                    self.write_health()
                except OSError as error:
                    self.failed("the heartbeat", error)

    def failed(self, what: str, error: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{what} failed: {error_text(error)}"
        log.error("%s", self.last_error)

    def write_health(self) -> None:
        """The heartbeat: when the hand-off thread last ran and what it has done."""
        health = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "ae_title": printable(self.settings.ae_title),
            "port": self.settings.port,
            "tls": bool(self.settings.tls_cert),
            "received": self.received,
            "studies_handed_off": self.handed_off,
            "studies_quarantined": self.quarantined,
            "errors": self.errors,
            "last_error": self.last_error,
        }
        write_text_atomic(self.health_path, json.dumps(health, indent=2))

    def hand_off(self) -> list[Path]:
        """Move each study quiet for `quiet_seconds` into the inbox; a study that cannot be
        moved is quarantined with a reject row, and the others go on. Returns the study
        folders written."""
        moved, quarantined = [], []
        incoming = self.inbox / INCOMING
        with self._lock:
            for staged in sorted(p for p in incoming.glob("*") if p.is_dir()):
                if staged.name in self._failed or not self.is_quiet(staged):
                    continue
                try:
                    moved.append(move_study(staged, self.inbox / f"{STUDY_PREFIX}{staged.name}"))
                except OSError as error:
                    quarantined.append(self.quarantine_study(staged, error))
        for reason, name in quarantined:
            self.reject("", "", reason, name)
        for folder in moved:
            write_text_atomic(folder / COMPLETE_STAMP, datetime.now(UTC).isoformat(), private=True)
            self.handed_off += 1
            log.info("study %s handed to the inbox", folder.name)
        return moved

    def is_quiet(self, staged: Path) -> bool:
        newest = max((f.stat().st_mtime for f in staged.iterdir()), default=0.0)
        return time.time() - newest >= self.settings.quiet_seconds

    def quarantine_study(self, staged: Path, error: OSError) -> tuple[str, str]:
        """A study that could not be handed on goes to the quarantine (or, where even that
        fails, is left alone and not tried again until the node restarts); returns the
        reason and the quarantined folder's name."""
        reason = f"study {staged.name} could not be handed to the inbox: {error_text(error)}"
        target = self.state_dir / QUARANTINE / f"{STUDY_PREFIX}{staged.name}"
        try:
            private_folder(target.parent)
            shutil.move(staged, target)
            self.quarantined += 1
            quarantined = target.name
        except OSError as second:
            self._failed.add(staged.name)
            reason += f"; not quarantined either ({error_text(second)}): left in .incoming"
            quarantined = ""
        self.errors += 1
        self.last_error = reason
        return reason, quarantined


def move_study(staged: Path, target: Path) -> Path:
    """A staged study into its inbox folder: one rename when new, else file by file (a
    second sending updates it) and the staging folder removed. Temporaries (hidden files a
    killed node left half-written) are removed first, never handed on."""
    for temporary in staged.glob(".*"):
        temporary.unlink()
    for file in staged.iterdir():
        os.chmod(file, PRIVATE)
    if not target.exists():
        os.chmod(staged, PRIVATE_FOLDER)
        os.replace(staged, target)
        return target
    for file in staged.iterdir():
        os.replace(file, target / file.name)
    shutil.rmtree(staged, ignore_errors=True)
    return target


def health_problems(health: dict, now: float) -> list[str]:
    """What is wrong with a node by its heartbeat (`DicomNode.write_health`): an old
    heartbeat (the node is down or its thread stuck), failures since it started."""
    age = now - datetime.fromisoformat(health["at"]).timestamp()
    problems = []
    if age > HEARTBEAT_STALE_SECONDS:
        problems.append(f"no heartbeat for {age:.0f} s: the node is down or its hand-off stuck")
    if health["errors"]:
        problems.append(f"{health['errors']} failures, the last: {health['last_error']}")
    return problems


def error_text(error: BaseException) -> str:
    """An error without the paths or values it may quote: its type and OS reason."""
    reason = getattr(error, "strerror", None)
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__


class DeferredHandshake(ssl.SSLContext):
    """A server TLS context whose handshake waits for the connection's own thread (with a
    time limit): pynetdicom wraps sockets in its accepting thread, where a silent client
    would otherwise hold every other one."""

    handshake_seconds: float = 5.0

    def wrap_socket(self, sock, *args, **kwargs):
        sock.settimeout(self.handshake_seconds)
        return super().wrap_socket(sock, *args, do_handshake_on_connect=False, **kwargs)


def read_rejects(path: Path) -> pd.DataFrame:
    """The node's refusals so far. The file is read in one go: the node replaces it while
    it runs, and pyarrow, given the path, may size one file and then read the next."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return pd.DataFrame(columns=REJECT_SCHEMA.names)
    return pd.read_parquet(io.BytesIO(data))


def _sop_name(uid: str) -> str:
    return pydicom.uid.UID(uid).name or "unknown"
