"""The outbox: each patient's result objects (SR, report picture, key objects), kept on the
key holder's side until every destination has taken them, with the state of each delivery
written before and after every send (`cass resend` reads it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pydicom

from cass_pipeline.domain.dicom.config import Destination, SendSettings
from cass_pipeline.domain.dicom.results import (
    ResultUids,
    built_quietly,
    key_objects,
    report_capture,
    source_headers,
    structured_report,
)
from cass_pipeline.domain.dicom.send import Delivery, deliver
from cass_pipeline.domain.prediction.document import PredictionDocument
from cass_pipeline.domain.storage import atomic_path, private_folder, write_text_atomic

DELIVERY_FILE = "delivery.json"
#: The state of a destination that refuses the objects for good (not tried again).
REFUSED = "refused"


@dataclass(frozen=True)
class ResultObject:
    """One kind of object sent back: its file in the outbox and how it is built from the
    prediction, its picture (or None), the study's headers and the objects built before."""

    file_name: str
    description: str
    build: Callable[..., pydicom.Dataset | None]


def build_sr(document, png, headers, built, device, uids):
    return structured_report(document, headers, device, uids)


def build_capture(document, png, headers, built, device, uids):
    return None if png is None else report_capture(png, headers, uids)


def build_key_objects(document, png, headers, built, device, uids):
    return key_objects(document, headers, built.get("capture"), uids)


#: The result objects, in the order they are built and sent (a viewer gets the SR first).
RESULT_OBJECTS = {
    "sr": ResultObject("sr.dcm", "Comprehensive SR (TID 1500) of the findings", build_sr),
    "capture": ResultObject("report.dcm", "Secondary Capture of report.png", build_capture),
    "key_objects": ResultObject(
        "key_objects.dcm", "Key Object Selection of the views that decided", build_key_objects
    ),
}


def device_uid(ae_title: str) -> str:
    """The observer device UID of this CASS installation (the same on every run)."""
    return pydicom.uid.generate_uid(entropy_srcs=["CASS observer device", ae_title])


def result_files(folder: Path) -> list[Path]:
    """The objects in an outbox folder, in sending order."""
    return [
        folder / o.file_name for o in RESULT_OBJECTS.values() if (folder / o.file_name).is_file()
    ]


def instance_uids(paths: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def write_results(
    document: PredictionDocument, png: bytes | None, study_folder: Path, folder: Path, ae_title: str
) -> list[Path]:
    """The result objects of one patient's prediction, written atomically and owner-only
    into `folder`; the source study's headers come from `study_folder`. The same prediction
    gives the same objects (UIDs), and keeps its delivery state; a new one resets it."""
    headers = source_headers(study_folder)
    uids = ResultUids.of(document, headers) if headers else None
    built: dict[str, pydicom.Dataset] = {}
    device = device_uid(ae_title)
    for name, kind in RESULT_OBJECTS.items():
        dataset = built_quietly(
            kind.description, kind.build, document, png, headers, built, device, uids
        )
        if dataset is not None:
            built[name] = dataset
    before = instance_uids(result_files(folder)) if folder.is_dir() else set()
    private_folder(folder)
    for stale in set(result_files(folder)) - {folder / RESULT_OBJECTS[n].file_name for n in built}:
        stale.unlink()
    written = []
    for name, dataset in built.items():
        path = folder / RESULT_OBJECTS[name].file_name
        with atomic_path(path, private=True) as tmp:
            dataset.save_as(tmp, enforce_file_format=True)
        written.append(path)
    if {str(d.SOPInstanceUID) for d in built.values()} != before:
        (folder / DELIVERY_FILE).unlink(missing_ok=True)  # new objects: nothing delivered yet
    return written


@dataclass(frozen=True)
class DeliveryState:
    """Per destination: whether it has the objects ('sending' while a send is under way, so
    a killed send is sent again: the same UIDs replace, never add), after how many tries,
    the problem, and whether the destination refuses them for good."""

    folder: Path

    def read(self) -> dict[str, dict]:
        path = self.folder / DELIVERY_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def pending(self, destinations: list[Destination], retry_refused: bool = False):
        done = self.read()
        return [
            d
            for d in destinations
            if not done.get(str(d), {}).get("delivered")
            and (retry_refused or done.get(str(d), {}).get("state") != REFUSED)
        ]

    def refused(self, destinations: list[Destination]) -> dict[str, str]:
        """Destinations that refuse the objects for good, with the reason."""
        done = self.read()
        return {
            str(d): done[str(d)]["problem"]
            for d in destinations
            if done.get(str(d), {}).get("state") == REFUSED
        }

    def write(self, destination: Destination, **fields) -> None:
        state = self.read()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        state[str(destination)] = {**state.get(str(destination), {}), **fields, "at": now}
        write_text_atomic(self.folder / DELIVERY_FILE, json.dumps(state, indent=2), private=True)

    def sending(self, destination: Destination) -> None:
        self.write(destination, state="sending", delivered=False)

    def record(self, delivery: Delivery) -> None:
        state = "delivered" if delivery.complete else REFUSED if delivery.permanent else "failed"
        self.write(
            delivery.destination,
            state=state,
            delivered=delivery.complete,
            attempts=delivery.attempts,
            problem="" if delivery.complete else delivery.problem,
        )


def send_results(folder: Path, settings: SendSettings) -> list[Delivery]:
    """Send a patient's outbox objects to each destination that does not have them yet,
    the state written before and after each."""
    state, files, deliveries = DeliveryState(folder), result_files(folder), []
    for destination in state.pending(settings.parsed(), settings.retry_refused):
        state.sending(destination)
        delivery = deliver(
            files,
            destination,
            settings.calling_ae_title,
            settings.attempts,
            settings.backoff_seconds,
        )
        state.record(delivery)
        deliveries.append(delivery)
    return deliveries


def undelivered(outbox: Path, settings: SendSettings) -> list[Path]:
    """The outbox folders that some destination still lacks (and may still take)."""
    if not outbox.is_dir():
        return []
    folders = sorted(p for p in outbox.iterdir() if result_files(p))
    return [
        f for f in folders if DeliveryState(f).pending(settings.parsed(), settings.retry_refused)
    ]


def failure_text(deliveries: list[Delivery]) -> str:
    return "; ".join(
        f"{d.destination}: {d.problem} "
        + ("(refused for good: not retried)" if d.permanent else f"after {d.attempts} tries")
        + f" ({len(d.failed)} objects kept)"
        for d in deliveries
        if not d.complete
    )
