"""The outbox: each patient's SR and key image, kept on the key holder's side until every
destination has taken them, with the state of each delivery (`cass resend` reads it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pydicom

from cass_pipeline.domain.dicom.config import Destination, SendSettings
from cass_pipeline.domain.dicom.results import key_image, source_headers, structured_report
from cass_pipeline.domain.dicom.send import Delivery, deliver
from cass_pipeline.domain.storage import atomic_path, write_text_atomic

SR_FILE, KEY_IMAGE_FILE, DELIVERY_FILE = "sr.dcm", "key_image.dcm", "delivery.json"


def device_uid(ae_title: str) -> str:
    """The observer device UID of this CASS installation (the same on every run)."""
    return pydicom.uid.generate_uid(entropy_srcs=["CASS observer device", ae_title])


def write_results(
    document: dict, png: bytes | None, study_folder: Path, folder: Path, ae_title: str
) -> list[Path]:
    """The SR (and the key image, with `png`) of one patient's prediction, written
    atomically into `folder`; the source study's headers come from `study_folder`."""
    headers = source_headers(study_folder)
    objects = {SR_FILE: structured_report(document, headers, device_uid(ae_title))}
    if png is not None:
        objects[KEY_IMAGE_FILE] = key_image(png, headers)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dataset in objects.items():
        with atomic_path(folder / name) as tmp:
            dataset.save_as(tmp, enforce_file_format=True)
        written.append(folder / name)
    (folder / DELIVERY_FILE).unlink(missing_ok=True)  # new objects: nothing delivered yet
    return written


@dataclass(frozen=True)
class DeliveryState:
    """Per destination: whether it has the objects, after how many tries, the problem."""

    folder: Path

    def read(self) -> dict[str, dict]:
        path = self.folder / DELIVERY_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def pending(self, destinations: list[Destination]) -> list[Destination]:
        done = self.read()
        return [d for d in destinations if not done.get(str(d), {}).get("delivered")]

    def record(self, deliveries: list[Delivery]) -> None:
        state = self.read()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for delivery in deliveries:
            state[str(delivery.destination)] = {
                "delivered": delivery.complete,
                "attempts": delivery.attempts,
                "problem": "" if delivery.complete else delivery.problem,
                "at": now,
            }
        write_text_atomic(self.folder / DELIVERY_FILE, json.dumps(state, indent=2))


def send_results(folder: Path, settings: SendSettings) -> list[Delivery]:
    """Send a patient's outbox objects to each destination that does not have them yet;
    the state is recorded whatever happens."""
    state = DeliveryState(folder)
    files = [folder / n for n in (SR_FILE, KEY_IMAGE_FILE) if (folder / n).is_file()]
    deliveries = [
        deliver(
            files,
            destination,
            settings.calling_ae_title,
            settings.attempts,
            settings.backoff_seconds,
        )
        for destination in state.pending(settings.parsed())
    ]
    state.record(deliveries)
    return deliveries


def undelivered(outbox: Path, settings: SendSettings) -> list[Path]:
    """The outbox folders that some destination still lacks."""
    if not outbox.is_dir():
        return []
    folders = sorted(p for p in outbox.iterdir() if (p / SR_FILE).is_file())
    return [f for f in folders if DeliveryState(f).pending(settings.parsed())]


def failure_text(deliveries: list[Delivery]) -> str:
    return "; ".join(
        f"{d.destination}: {d.problem} after {d.attempts} tries ({len(d.failed)} objects kept)"
        for d in deliveries
        if not d.complete
    )
