"""DICOM files to a destination, by C-STORE (`AE@host:port`) or STOW-RS (a DICOMweb URL),
with retries and backoff; what could not be delivered is reported, never dropped (the files
stay where they are for `cass resend`). A new transport is one function in `SENDERS`."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pynetdicom import AE

from cass_pipeline.domain.dicom.config import Destination, WebDestination

log = logging.getLogger("cass.dicom_send")


@dataclass
class Delivery:
    """What one destination did not take, after how many tries, the last problem seen, and
    whether it refuses for good (a SOP class it does not store, a dataset it rejects)."""

    destination: Destination | WebDestination
    failed: list[Path] = field(default_factory=list)
    attempts: int = 0
    problem: str = ""
    permanent: bool = False

    @property
    def complete(self) -> bool:
        return not self.failed


#: C-STORE statuses: success and warnings (coercion, elements discarded) mean taken.
TAKEN = {0x0000, 0xB000, 0xB006, 0xB007}


def refuses_for_good(code: int) -> bool:
    """Statuses no retry changes: SOP class not supported (0x0122), dataset does not match
    the SOP class (0xA9xx), cannot understand (0xCxxx). Out of resources (0xA7xx) and others
    may pass later."""
    return code == 0x0122 or code >> 8 == 0xA9 or code >> 12 == 0xC


def store_once(
    paths: Sequence[Path], destination: Destination, calling_ae: str
) -> tuple[list[Path], str, bool]:
    """One association: C-STORE each file; returns the files the destination took, the
    problem that stopped the rest ('' when all were taken) and whether it is for good."""
    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title=calling_ae)
    for sop_class, syntax in sorted(
        {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets}
    ):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        return [], f"no association with {destination}", False
    accepted = {c.abstract_syntax for c in assoc.accepted_contexts}
    taken = []
    try:
        for path, dataset in zip(paths, datasets, strict=True):
            if dataset.SOPClassUID not in accepted:
                name = pydicom.uid.UID(dataset.SOPClassUID).name
                return taken, f"{destination} does not store {name} ({dataset.SOPClassUID})", True
            code = getattr(assoc.send_c_store(dataset), "Status", None)
            if code is None:
                return taken, f"{destination} did not answer a C-STORE", False
            if code not in TAKEN:
                problem = f"{destination} answered C-STORE with status 0x{code:04X}"
                return taken, problem, refuses_for_good(code)
            taken.append(path)
    finally:
        assoc.release()
    return taken, "", False


#: DICOM JSON tags of a STOW-RS answer: the failed instances, each one's UID and reason.
FAILED_SOP_SEQUENCE, REFERENCED_SOP_INSTANCE, FAILURE_REASON = "00081198", "00081155", "00081197"


def stow_once(
    paths: Sequence[Path], destination: WebDestination, calling_ae: str
) -> tuple[list[Path], str, bool]:
    """One STOW-RS request (multipart/related, application/dicom) of every file; returns
    the files the service stored, the problem with the rest and whether it is for good."""
    import requests

    boundary = uuid.uuid4().hex
    parts = [
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + p.read_bytes()
        + b"\r\n"
        for p in paths
    ]
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
        "User-Agent": f"CASS ({calling_ae})",
    }
    try:
        answer = requests.post(
            destination.studies_url,
            data=b"".join(parts) + f"--{boundary}--\r\n".encode(),
            headers=headers,
            auth=destination.credentials,
            timeout=120,
        )
    except requests.RequestException as error:
        return [], f"{destination} unreachable ({type(error).__name__})", False
    if answer.status_code not in (200, 202, 409):
        code = answer.status_code
        return (
            [],
            f"{destination} answered HTTP {code}",
            400 <= code < 500 and code not in (408, 429),
        )
    failed = stow_failures(answer)
    uids = {p: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}
    taken = [p for p in paths if uids[p] not in failed]
    if not failed and answer.status_code == 409:
        return [], f"{destination} answered HTTP 409", True
    if not failed:
        return taken, "", False
    reasons = sorted(set(failed.values()))
    codes = ", ".join(f"0x{r:04X}" for r in reasons)
    problem = f"{destination} refused {len(failed)} objects (failure reasons {codes})"
    return taken, problem, all(refuses_for_good(r) for r in reasons)


def stow_failures(answer) -> dict[str, int]:
    """SOP Instance UID -> failure reason of the instances a STOW-RS answer lists as failed."""
    try:
        body = answer.json()
    except ValueError:
        return {}
    items = (body.get(FAILED_SOP_SEQUENCE) or {}).get("Value") or []
    return {
        item[REFERENCED_SOP_INSTANCE]["Value"][0]: int(
            (item.get(FAILURE_REASON) or {}).get("Value", [0x0110])[0]
        )
        for item in items
        if item.get(REFERENCED_SOP_INSTANCE)
    }


#: How each kind of destination is sent to: one try of every pending file.
SENDERS = {Destination: store_once, WebDestination: stow_once}


def deliver(
    paths: Sequence[Path],
    destination: Destination | WebDestination,
    calling_ae: str,
    attempts: int,
    backoff_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Send `paths` to `destination`, retrying what was not taken `attempts` times in all,
    waiting `backoff_seconds` before the second try and twice as long before each next; a
    refusal for good ends the tries."""
    delivery, pending, wait = Delivery(destination), list(paths), backoff_seconds
    while pending and delivery.attempts < attempts and not delivery.permanent:
        if delivery.attempts:
            log.warning("retrying %s in %.1f s: %s", destination, wait, delivery.problem)
            sleep(wait)
            wait *= 2
        delivery.attempts += 1
        send_once = SENDERS[type(destination)]
        taken, delivery.problem, delivery.permanent = send_once(pending, destination, calling_ae)
        pending = [p for p in pending if p not in taken]
    delivery.failed = pending
    return delivery
