"""Into the hospital's PACS and back, against real servers: a workstation stand-in (dcmtk's
storescu) sends a patient to `cass dicom-node`, the inbox sensor and the partition score it,
and the SR and key image arrive in Orthanc in the same study; then Orthanc goes down, the
delivery fails visibly, and `cass resend` delivers once it is back."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pydicom
import pytest
import requests
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.defs.assets import evaluation, prediction
from cass_pipeline.defs.resources import (
    CassPaths,
    DicomResults,
    Inbox,
    MlflowTracking,
    PseudonymKey,
)
from cass_pipeline.domain.dicom.config import Destination, SendSettings
from cass_pipeline.domain.dicom.outbox import DeliveryState, send_results, write_results
from cass_pipeline_tests.helpers import layout_of
from cass_pipeline_tests.integration.test_predict import PATIENT, registry  # noqa: F401
from cass_pipeline_tests.servers import (
    DICOMWEB_PLUGIN,
    dciodvfy,
    free_port,
    orthanc_server,
    self_signed_certificate,
    wait_until,
)
from cass_pipeline_tests.unit.test_dicom import document_for, report_png

pytestmark = pytest.mark.slow  # starts servers and scores a patient

STORESCU = "/usr/bin/storescu"  # dcmtk's, not pynetdicom's script of the same name


def start_node(tmp_path: Path, port: int, tls: tuple[Path, Path]) -> subprocess.Popen:
    """`cass dicom-node` with DICOM TLS, taking studies from WORKSTATION only."""
    env = {
        **os.environ,
        "CASS_INBOX_DIR": str(tmp_path / "inbox"),
        "CASS_DICOM_DIR": str(tmp_path / "dicom"),
    }
    cass = Path(sys.executable).with_name("cass")
    log = (tmp_path / "node.log").open("w")
    return subprocess.Popen(
        [
            str(cass),
            "dicom-node",
            "--port",
            str(port),
            "--quiet-seconds",
            "1",
            "--allowed-aes",
            "WORKSTATION",
            "--tls-key",
            str(tls[0]),
            "--tls-cert",
            str(tls[1]),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def sr_findings(dataset: pydicom.Dataset) -> dict[str, str]:
    """Tracking identifier -> class code of each measurement group of a CASS SR."""
    found = {}
    measurements = dataset.ContentSequence[-1].ContentSequence
    for group in measurements:
        items = group.ContentSequence
        name = next(
            i.TextValue for i in items if i.ConceptNameCodeSequence[0].CodeValue == "112039"
        )
        code = next(
            i.ConceptCodeSequence[0].CodeValue
            for i in items
            if i.ConceptNameCodeSequence[0].CodeValue == "CLASS"
        )
        found[name] = code
    return found


def sr_instances(pacs, study: str) -> list[str]:
    return [
        instance
        for series in pacs.get(f"/studies/{study}")["Series"]
        if pacs.get(f"/series/{series}")["MainDicomTags"]["Modality"] == "SR"
        for instance in pacs.get(f"/series/{series}")["Instances"]
    ]


def step_failures(result: dg.ExecuteInProcessResult) -> str:
    return " | ".join(
        event.event_specific_data.error.message
        for event in result.all_events
        if event.is_step_failure
    )


def test_a_study_sent_to_the_node_comes_back_as_an_sr_and_a_key_image(
    registry,  # noqa: F811
    tiny_cohort,
    tmp_path,
):
    if not Path(STORESCU).is_file():
        pytest.skip("dcmtk is not installed (make env installs Debian's dcmtk)")
    pacs_root, inbox, outbox = tmp_path / "pacs", tmp_path / "inbox", tmp_path / "dicom" / "outbox"
    pacs_root.mkdir()
    ports, node_port = (free_port(), free_port()), free_port()
    key, cert = self_signed_certificate(tmp_path / "tls")
    tls = ["+tls", str(key), str(cert), "+cf", str(cert)]
    node, node_log = start_node(tmp_path, node_port, (key, cert)), tmp_path / "node.log"
    promotion = layout_of(registry.processed).promotion
    promotion.parent.mkdir(parents=True, exist_ok=True)
    promotion.write_text(json.dumps({"promote": True, "challenger_version": 1, "reason": "test"}))
    sent = sorted((tiny_cohort / "mpr" / PATIENT).rglob("*.dcm"))
    try:
        wait_until(lambda: "listening" in node_log.read_text(), 60, "cass dicom-node", node_log)

        def storescu(calling: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [STORESCU, *tls, "-aet", calling, "-aec", "CASS", "127.0.0.1", str(node_port)]
                + [str(p) for p in sent],
                capture_output=True,
                text=True,
            )

        intruder = storescu("INTRUDER")
        assert intruder.returncode != 0 and "Calling AE Title Not Recognized" in intruder.stderr
        store = storescu("WORKSTATION")
        assert store.returncode == 0, store.stderr
        wait_until(lambda: any(inbox.glob("study-*")), 30, "the hand-off", node_log)
        with dg.instance_for_test() as instance, orthanc_server(pacs_root, ports) as pacs:
            resources = {
                "paths": CassPaths(
                    raw_dir=str(tmp_path / "raw"), processed_dir=str(registry.processed)
                ),
                "inbox": Inbox(folder=str(inbox), quiet_seconds=0),
                "pseudonyms": PseudonymKey(key_file=str(tmp_path / "pseudonym.key")),
                "mlflow_tracking": MlflowTracking(**registry.tracking.__dict__),
                "dicom_results": DicomResults(
                    folder=str(tmp_path / "dicom"),
                    destinations=pacs.destination,
                    attempts=2,
                    backoff_seconds=0.2,
                ),
            }
            cursor, ready = None, []
            for _ in range(2):  # a folder is ready once two looks find it unchanged
                context = dg.build_sensor_context(
                    instance=instance, cursor=cursor, resources=resources
                )
                result = prediction.inbox_sensor(context)
                for request in result.dynamic_partitions_requests:
                    instance.add_dynamic_partitions(
                        request.partitions_def_name, request.partition_keys
                    )
                ready += [r.partition_key for r in result.run_requests]
                cursor = result.cursor
            (pid,) = ready

            def score(assets) -> dg.ExecuteInProcessResult:
                return dg.materialize(
                    assets,
                    partition_key=pid,
                    resources=resources,
                    instance=instance,
                    raise_on_error=False,
                )

            assert dg.materialize(
                [evaluation.champion_model], resources=resources, instance=instance
            ).success
            scored = score([prediction.patient_prediction, prediction.dicom_results])
            assert scored.success, step_failures(scored)
            document = json.loads(
                (registry.processed / "predictions" / pid / "prediction.json").read_text()
            )
            source = pydicom.dcmread(sent[0])
            (study,) = pacs.get("/studies")
            tags = pacs.get(f"/studies/{study}")["MainDicomTags"]
            assert tags["StudyInstanceUID"] == source.StudyInstanceUID
            modalities = sorted(
                pacs.get(f"/series/{s}")["MainDicomTags"]["Modality"]
                for s in pacs.get(f"/studies/{study}")["Series"]
            )
            assert modalities == ["KO", "OT", "SR"]  # key objects, report picture, SR
            (sr_instance,) = sr_instances(pacs, study)
            sr_file = tmp_path / "sr.dcm"
            sr_file.write_bytes(
                requests.get(f"{pacs.http}/instances/{sr_instance}/file", timeout=10).content
            )
            findings = sr_findings(pydicom.dcmread(sr_file))
            assert findings.pop("patient") == document["patient_class"]
            assert findings == {b: f["class"] for b, f in document["branches"].items()}
            dumped = subprocess.run(
                ["dsrdump", "-Ec", str(sr_file)], capture_output=True, text=True
            )
            assert dumped.returncode == 0 and "Error" not in dumped.stderr, dumped.stderr
            for series in pacs.get(f"/studies/{study}")["Series"]:  # CASS's, as the PACS has them
                for kept in pacs.get(f"/series/{series}")["Instances"]:
                    stored = tmp_path / f"{kept}.dcm"
                    stored.write_bytes(
                        requests.get(f"{pacs.http}/instances/{kept}/file", timeout=10).content
                    )
                    assert dciodvfy(stored) == []
            destination = pacs.destination
            listed = dg.materialize(
                [prediction.worklist, prediction.dicom_node_rejects],
                resources=resources,
                instance=instance,
            )
            (check,) = listed.get_asset_check_evaluations()
            # storescu proposes every storage class: no reject for that; the intruder is one
            assert check.metadata["by_reason"].data == {
                "association refused: calling AE title INTRUDER is not allowed": 1
            }
            (row,) = pd.read_parquet(layout_of(registry.processed).worklist).to_dict("records")
            assert row["patient"] == pid and row["cad_rads"] == document["cad_rads"]
            assert row["status"] == "scored" and 0 < row["turnaround_s"] < 600
            assert row["delivery"] == f"delivered: to {destination}"
            # no destination set: green, but the step and the worklist say nothing was sent
            unset = dg.materialize(
                [prediction.dicom_results],
                partition_key=pid,
                resources={
                    **resources,
                    "dicom_results": DicomResults(folder=str(tmp_path / "unset"), destinations=""),
                },
                instance=instance,
            )
            (done,) = unset.asset_materializations_for_node("dicom_results")
            assert done.metadata["delivery"].value.startswith("not sent: no destination is set")
            assert dg.materialize([prediction.worklist], resources=resources).success
            (row,) = pd.read_parquet(layout_of(registry.processed).worklist).to_dict("records")
            assert row["delivery"] == "not sent: no destination is set (CASS_DICOM_DESTINATIONS)"
            # the same prediction again: nothing new reaches the PACS
            assert score([prediction.dicom_results]).success
            assert len(sr_instances(pacs, study)) == 1
            # a send killed half-way (its state says "sending") is sent again with the same
            # UIDs: the PACS still holds one SR
            DeliveryState(outbox / pid).sending(Destination.parse(destination))
            env = {"CASS_DICOM_DIR": str(tmp_path / "dicom")}
            resent = CliRunner().invoke(main, ["resend", "--destinations", destination], env=env)
            assert f"{pid}: delivered" in resent.output, resent.output
            assert len(sr_instances(pacs, study)) == 1

        # a new prediction while the PACS is down: the step fails visibly and the new
        # objects wait in the outbox
        predicted = registry.processed / "predictions" / pid / "prediction.json"
        predicted.write_text(
            json.dumps({**document, "model": {**document["model"], "version": 99}})
        )
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(prediction.inbox_patients.name, [pid])
            failed = dg.materialize(
                [prediction.dicom_results],
                partition_key=pid,
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
        assert not failed.success
        message = step_failures(failed)
        assert "not delivered" in message and "cass resend" in message and "2 tries" in message
        state = DeliveryState(outbox / pid).read()[destination]
        assert not state["delivered"] and state["attempts"] == 2

        def delivery() -> str:
            assert dg.materialize([prediction.worklist], resources=resources).success
            (row,) = pd.read_parquet(layout_of(registry.processed).worklist).to_dict("records")
            assert row["patient"] == pid  # a scored patient is listed whatever its delivery
            return row["delivery"]

        assert delivery().startswith(f"failed: {destination}: ")
        assert "cass resend" in delivery()
        with orthanc_server(pacs_root, ports) as pacs:
            env = {
                "CASS_DICOM_DIR": str(tmp_path / "dicom"),
                "CASS_PROCESSED_DIR": str(registry.processed),
            }
            resent = CliRunner().invoke(main, ["resend", "--destinations", destination], env=env)
            assert resent.exit_code == 0, resent.output
            assert f"{pid}: delivered" in resent.output
            assert len(sr_instances(pacs, study)) == 2  # the first prediction's and the new
        assert delivery() == f"delivered: to {destination}"
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(30) == 0
    assert "instances" in node_log.read_text()
    for identifier in (str(source.PatientID), str(source.PatientName)):
        assert identifier not in node_log.read_text()


def test_results_reach_a_dicomweb_archive_by_stow_rs_once(tmp_path, tiny_cohort):
    if not Path(DICOMWEB_PLUGIN).is_file():
        pytest.skip("Orthanc's DICOMweb plugin is not installed (make env installs it)")
    study = tiny_cohort / "mpr" / PATIENT
    outbox = tmp_path / "outbox" / "P-1"
    written = write_results(document_for(study), report_png(), study, outbox, "CASS")
    (tmp_path / "pacs").mkdir()
    with orthanc_server(tmp_path / "pacs") as pacs:
        settings = SendSettings(pacs.dicomweb, attempts=2, backoff_seconds=0.1)
        (delivery,) = send_results(outbox, settings)
        assert delivery.complete and delivery.attempts == 1, delivery.problem
        stored = {
            pacs.get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"]
            for i in pacs.get("/instances")
        }
        assert stored == {str(pydicom.dcmread(p).SOPInstanceUID) for p in written}
        assert send_results(outbox, settings) == []  # delivered once
        assert DeliveryState(outbox).read()[pacs.dicomweb]["state"] == "delivered"
        wrong = SendSettings(f"{pacs.http}/no-such-service", attempts=3, backoff_seconds=0.1)
        (refused,) = send_results(outbox, wrong)
        assert refused.permanent and refused.attempts == 1 and "HTTP 404" in refused.problem
