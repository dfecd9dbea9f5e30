"""C-STORE of DICOM files to a destination, with retries and backoff; what could not be
delivered is reported, never dropped (the files stay where they are for `cass resend`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pynetdicom import AE

from cass_pipeline.domain.dicom.config import Destination

log = logging.getLogger("cass.dicom_send")


class DeliveryError(RuntimeError):
    """A destination that did not take every file after all its tries."""


@dataclass
class Delivery:
    """What one destination did not take, after how many tries, and the last problem seen."""

    destination: Destination
    failed: list[Path] = field(default_factory=list)
    attempts: int = 0
    problem: str = ""

    @property
    def complete(self) -> bool:
        return not self.failed


def store_once(
    paths: Sequence[Path], destination: Destination, calling_ae: str
) -> tuple[list[Path], str]:
    """One association: C-STORE each file; returns the files the destination took and the
    problem that stopped the rest ('' when all were taken)."""
    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title=calling_ae)
    for sop_class, syntax in sorted(
        {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets}
    ):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        return [], f"no association with {destination}"
    taken, problem = [], ""
    try:
        for path, dataset in zip(paths, datasets, strict=True):
            status = assoc.send_c_store(dataset)
            code = getattr(status, "Status", None)
            if code is None:
                problem = f"{destination} did not answer a C-STORE"
                break
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                problem = f"{destination} answered C-STORE with status 0x{code:04X}"
                break
            taken.append(path)
    finally:
        assoc.release()
    return taken, problem


def deliver(
    paths: Sequence[Path],
    destination: Destination,
    calling_ae: str,
    attempts: int,
    backoff_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Send `paths` to `destination`, retrying what was not taken `attempts` times in all,
    waiting `backoff_seconds` before the second try and twice as long before each next."""
    delivery, pending, wait = Delivery(destination), list(paths), backoff_seconds
    while pending and delivery.attempts < attempts:
        if delivery.attempts:
            log.warning("retrying %s in %.1f s: %s", destination, wait, delivery.problem)
            sleep(wait)
            wait *= 2
        delivery.attempts += 1
        taken, delivery.problem = store_once(pending, destination, calling_ae)
        pending = [p for p in pending if p not in taken]
    delivery.failed = pending
    return delivery
