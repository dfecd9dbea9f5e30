"""Prediction for a new patient with the registered champion: the CLI, REST and Dagster give
what evaluation gives, bad input gives one clear line, the inbox runs each patient once."""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import cv2
import dagster as dg
import numpy as np
import pandas as pd
import pydicom
import pytest
import requests
import torch
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.defs.assets import evaluation, prediction
from cass_pipeline.defs.resources import CassPaths, Inbox, MlflowTracking, PseudonymKey
from cass_pipeline.domain.anatomy import CATEGORIES, GRADES
from cass_pipeline.domain.cohort.index import folder_patient_key
from cass_pipeline.domain.evaluation.config import CHAMPION
from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.imaging.ingest import ingest_cohort
from cass_pipeline.domain.model.calibration import Calibration, calibrate
from cass_pipeline.domain.model.inference import TorchEngine, view_probabilities
from cass_pipeline.domain.model.metrics import branch_level, patient_cad_rads
from cass_pipeline.domain.model.network import build_model, to_model_input
from cass_pipeline.domain.model.targets import output_space
from cass_pipeline.domain.prediction.bundle import ModelBundle
from cass_pipeline.domain.prediction.document import prediction_document
from cass_pipeline.domain.privacy import SYNTHETIC_COHORT_KEY, load_secret, pseudonymise
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import ExportStyle, preset
from cass_pipeline.domain.synthetic.provenance import cohort_pseudonyms
from cass_pipeline.runs.tracking import Tracking
from cass_pipeline_tests.helpers import layout_of, register_without_bundle
from cass_pipeline_tests.servers import free_port

pytestmark = pytest.mark.slow  # trains models or starts servers

INGEST = IngestConfig(CleanupConfig(size=64))
#: The registered champion's calibration (as training would fit it on validation).
TRIAGE = Calibration(temperature=1.5, referral_threshold=0.3, fitted_on="validation split (test)")
PATIENT = "CASE-0001"


@dataclass
class Registry:
    root: Path
    processed: Path
    tracking: Tracking
    manifest: pd.DataFrame

    def env(self, **extra) -> dict:
        return {
            "MLFLOW_TRACKING_URI": self.tracking.tracking_uri,
            "CASS_DATA_DIR": str(self.root),
            "CASS_PSEUDONYM_KEY": None,
            **extra,
        }

    def register(self, seed: int, target: str = "class") -> int:
        """A random network whose outputs (three classes, or six grades) depend on the view:
        batch statistics taken from the store's views, the head scaled up."""
        torch.manual_seed(seed)
        model = build_model("shufflenet_v2_x0_5", "none", output_space(target).size).model
        images = np.concatenate(
            [np.load(p) for p in layout_of(self.processed).image_store.glob("*.npy")]
        )
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.momentum = None  # running statistics = this batch's
        with torch.no_grad():
            model.train()(to_model_input(images))
        model.fc.weight.data *= 10
        with self.tracking.start_run(f"register-{seed}"):
            bundle = ModelBundle("shufflenet_v2_x0_5", INGEST, calibration=TRIAGE, target=target)
            return self.tracking.register(model, bundle, images)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_cohort) -> Registry:
    """The tiny cohort ingested as the pipeline does, and a registered champion."""
    root = tmp_path_factory.mktemp("predict")
    processed = root / "processed"
    results = ingest_cohort(
        tiny_cohort,
        layout_of(processed).image_store,
        cohort_pseudonyms(tiny_cohort, root / "key"),
        INGEST,
        workers=1,
    )
    manifest = pd.DataFrame([row for result in results for row in result.rows])
    tracking = Tracking(
        f"sqlite:///{root}/mlflow.db", "predict-test", (root / "artifacts").as_uri()
    )
    registry = Registry(root, processed, tracking, manifest)
    tracking.set_alias(CHAMPION, registry.register(seed=0))
    return registry


def predict(registry: Registry, folder: Path, out: Path, *options: str, **env):
    return CliRunner().invoke(
        main, ["predict", str(folder), "--out", str(out), *options], env=registry.env(**env)
    )


def test_cli_gives_what_evaluation_gives_on_the_raw_export(registry, tiny_cohort, tmp_path):
    result = predict(registry, tiny_cohort / "mpr" / PATIENT, tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == json.loads((tmp_path / "out" / "prediction.json").read_text())
    mrn = folder_patient_key(tiny_cohort / "mpr" / PATIENT)  # keyed on the DICOM PatientID
    pid = pseudonymise(mrn, SYNTHETIC_COHORT_KEY)
    assert document["patient"] == pid and PATIENT not in result.stdout and mrn not in result.stdout
    assert document["model"]["version"] == 1 and document["model"]["alias"] == "champion"
    # the evaluation path: the stored, already cleaned views of the same patient
    loaded = registry.tracking.load(CHAMPION)
    views = registry.manifest[registry.manifest.patient_id == pid].assign(label=0)
    scored = loaded.predictor.score_views(views, layout_of(registry.processed).images)
    branches = branch_level(scored).set_index("branch").pred
    classes = ("no_stenosis", "non_significant", "significant")
    assert {b: classes[p] for b, p in branches.items()} == {
        b: info["class"] for b, info in document["branches"].items()
    }
    views_out = [v for b in document["branches"].values() for v in b["views"]]
    assert len({round(v["probabilities"]["significant"], 6) for v in views_out}) > 1  # not constant
    for row in scored.itertuples():
        served = document["branches"][row.branch]["views"][row.view_index]["probabilities"]
        assert served["significant"] == pytest.approx(row.p_significant, abs=1e-6)
    picture = cv2.imread(str(tmp_path / "out" / "report.png"))
    assert picture is not None and picture.shape[1] > 800


def test_a_grade_model_gives_the_category_evaluation_gives(registry, tiny_cohort, tmp_path):
    version = str(registry.register(seed=3, target="grade"))
    out = tmp_path / "out"
    result = predict(registry, tiny_cohort / "mpr" / PATIENT, out, "--json", "--model", version)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    pid = document["patient"]
    loaded = registry.tracking.load(version)
    views = registry.manifest[registry.manifest.patient_id == pid].assign(label=0)
    scored = loaded.predictor.score_views(views, layout_of(registry.processed).images)
    assert document["cad_rads"] == patient_cad_rads(scored)[pid]
    assert document["cad_rads"] in CATEGORIES and document["cad_rads_from"] == "branch grades"
    grades = scored.groupby("branch").branch_grade.first()
    assert {b: GRADES[g] for b, g in grades.items()} == {
        b: info["grade"] for b, info in document["branches"].items()
    }
    shown = [v["grade"] for b in document["branches"].values() for v in b["views"]]
    assert len(set(shown)) > 1  # the grades depend on the view
    assert cv2.imread(str(out / "report.png")) is not None


def test_the_patient_is_triaged_at_the_models_operating_point(registry, tiny_cohort, tmp_path):
    result = predict(registry, tiny_cohort / "mpr" / PATIENT, tmp_path / "out", "--json")
    document = json.loads(result.stdout)
    loaded = registry.tracking.load(CHAMPION)
    assert loaded.predictor.bundle.calibration == TRIAGE  # it travels with the model
    assert document["model"]["referral_threshold"] == TRIAGE.referral_threshold
    scores = [b["significant_score"] for b in document["branches"].values()]
    assert document["significant_score"] == pytest.approx(max(scores))
    assert document["refer"] == (document["significant_score"] >= TRIAGE.referral_threshold)
    for branch in document["branches"].values():
        assert branch["refer"] == (branch["significant_score"] >= TRIAGE.referral_threshold)
    # served probabilities are the network's, temperature-scaled
    pid = document["patient"]
    views = registry.manifest[registry.manifest.patient_id == pid].assign(label=0)
    raw = view_probabilities(
        TorchEngine(loaded.predictor.network()), views, layout_of(registry.processed).images
    )
    served = view_probabilities(
        loaded.predictor.engine, views, layout_of(registry.processed).images
    )
    np.testing.assert_allclose(served, calibrate(raw, 1.5), atol=1e-4)
    text = predict(registry, tiny_cohort / "mpr" / PATIENT, tmp_path / "text")
    triage = [line for line in text.stdout.splitlines() if line.startswith("Triage: ")]
    assert len(triage) == 1
    assert ("REFER" if document["refer"] else "routine") in triage[0]


def test_unreadable_files_are_reported_and_the_rest_predicted(registry, tiny_cohort, tmp_path):
    folder = tmp_path / "55500011"
    shutil.copytree(tiny_cohort / "mpr" / PATIENT, folder)
    lad = sorted((folder / "LAD").iterdir())
    lad[0].write_bytes(lad[0].read_bytes()[:300])
    (folder / "notes.txt").write_text("scanned on the second table")
    result = predict(registry, folder, tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    reasons = {r["source"]: r["reason"] for r in document["rejected"]}
    assert set(reasons) >= {"LAD/000.dcm", "notes.txt"}
    assert "LAD" not in document["branches"]  # 3 views left, fewer than the bundle's 4
    assert "3 views, fewer than 4" in reasons["LAD/001.dcm"]
    assert document["patient_class"] is not None and len(document["branches"]) >= 2
    assert "55500011" not in json.dumps(document)


@pytest.mark.parametrize(
    "case",
    ["empty folder", "no recognisable series", "unknown alias", "unreachable server", "no store"],
)
def test_bad_input_gives_one_clear_line_and_a_failure_exit(registry, tiny_cohort, tmp_path, case):
    folder = tmp_path / "patient"
    folder.mkdir()
    options, env = [], {}
    if case != "empty folder":
        shutil.copytree(tiny_cohort / "mpr" / PATIENT, folder, dirs_exist_ok=True)
    if case == "no recognisable series":
        for index, series in enumerate(p for p in sorted(folder.iterdir()) if p.is_dir()):
            for path in series.iterdir():
                dataset = pydicom.dcmread(path)
                dataset.SeriesDescription = f"Calcium score {index}"
                dataset.save_as(path)
            series.rename(folder / f"series-{index}")
    if case == "unknown alias":
        options = ["--model", "models:/cass-stenosis@gold"]
    if case == "unreachable server":
        env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    if case == "no store":
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/missing/mlflow.db"}
    started = time.monotonic()
    result = predict(registry, folder, tmp_path / "out", *options, **env)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    expected = {
        "empty folder": "holds no files",
        "no recognisable series": "no recognisable series",
        "unknown alias": "@gold is not in the registry",
        "unreachable server": "cannot reach the MLflow server",
        "no store": "no MLflow registry at",
    }[case]
    assert expected in lines[0]
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


def test_explain_adds_the_decisive_views_attributions(registry, tiny_cohort, tmp_path):
    folder = tiny_cohort / "mpr" / PATIENT
    plain = predict(registry, folder, tmp_path / "plain")
    explained = predict(registry, folder, tmp_path / "explained", "--explain", "--steps", "4")
    assert plain.exit_code == explained.exit_code == 0, explained.output

    def right_column_ink(name):
        picture = cv2.imread(str(tmp_path / name / "report.png"))
        body = picture[picture.shape[0] // 3 :, -picture.shape[1] // 10 :]
        return float((body.min(axis=2) < 200).mean())

    assert right_column_ink("plain") == 0
    assert right_column_ink("explained") > 0.05
    assert not (tmp_path / "plain" / "explanations.png").exists()
    sheet = cv2.imread(str(tmp_path / "explained" / "explanations.png"))
    assert sheet is not None and sheet.shape[0] >= 256  # readable, one row of branches
    same = [
        json.loads((tmp_path / n / "prediction.json").read_text()) for n in ("plain", "explained")
    ]
    assert same[0] == same[1]
    assert predict(registry, folder, tmp_path / "explained").exit_code == 0  # again, plain
    assert not (tmp_path / "explained" / "explanations.png").exists()  # never left stale


def test_a_name_the_cleanup_leaves_in_the_pixels_stops_report_png(registry, tiny_cohort, tmp_path):
    folder = tmp_path / "patient"
    shutil.copytree(tiny_cohort / "mpr" / PATIENT, folder)
    path = sorted((folder / "LAD").glob("*.dcm"))[1]
    dataset = pydicom.dcmread(path)
    family = str(dataset.PatientName).split("^")[0]
    pixels = dataset.pixel_array.copy()  # the name in grey, below the cleanup's text level
    cv2.putText(pixels, family, (2, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 190, 1)
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path)
    result = predict(registry, folder, tmp_path / "out")
    assert result.exit_code == 1
    assert "report.png not written" in result.stderr and "LAD/1" in result.stderr
    assert family not in result.output
    assert not (tmp_path / "out" / "report.png").exists()
    document = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert document["pixel_check"]["identifier_views"] == ["LAD/1"]
    clean = predict(registry, tiny_cohort / "mpr" / PATIENT, tmp_path / "clean", "--json")
    assert json.loads(clean.stdout)["pixel_check"]["identifier_views"] == []


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """The first tiny patient at 128 px in every export style."""
    folders = {}
    for style in get_args(ExportStyle):
        folders[style] = tmp_path_factory.mktemp(f"export-{style}")
        config = preset("tiny", n_patients=1, image_size=128, export_style=style)
        generate_cohort(config, folders[style], workers=1)
    return folders


def test_every_export_style_gets_the_classes_of_the_plain_export(registry, exports, tmp_path):
    classes = {}
    for style, root in exports.items():
        result = predict(registry, root / "mpr" / PATIENT, tmp_path / style, "--json")
        assert result.exit_code == 0, (style, result.output)
        document = json.loads(result.stdout)
        assert document["pixel_check"]["identifier_views"] == [], style
        # the most likely class of the branch's mean probabilities: the one-epoch model's
        # grade votes tie on a view or two, its probabilities are what a cleanup changes
        classes[style] = {
            b: max(info["probabilities"], key=info["probabilities"].get)
            for b, info in document["branches"].items()
        }
    plain = classes.pop("grey")
    assert plain and all(found == plain for found in classes.values()), classes


def test_a_version_without_a_bundle_is_refused_with_a_reason(registry, tiny_cohort, tmp_path):
    version = str(register_without_bundle(registry.tracking, 64))
    result = predict(registry, tiny_cohort / "mpr" / PATIENT, tmp_path / "out", "--model", version)
    assert result.exit_code == 1
    assert f"models:/cass-stenosis/{version} is not a CASS serving model" in result.stderr
    assert "flavours: " in result.stderr and len(result.stderr.strip().splitlines()) == 1


@dataclass
class Served:
    url: str
    log: Path

    def post(self, body: bytes | dict) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        return requests.post(f"{self.url}/invocations", data=data, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def rest_server(registry) -> Served:
    """`cass serve` of the champion on a free port of 127.0.0.1."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **{k: v for k, v in registry.env().items() if v is not None}}
    env.pop("CASS_PSEUDONYM_KEY", None)
    log = registry.root / f"serve-{port}.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(bin_dir / "cass"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if server.poll() is not None:
                pytest.fail(f"cass serve exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail(f"cass serve did not answer: {log.read_text()[-2000:]}")
        yield Served(url, log)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def request_rows(folder: Path, patient: str, series=lambda path: path.parent.name) -> list:
    """A patient's files as `dataframe_split` rows: image, series_name, source, patient."""
    return [
        [
            base64.b64encode(p.read_bytes()).decode(),
            series(p),
            p.relative_to(folder).as_posix(),
            patient,
        ]
        for p in sorted(p for p in folder.rglob("*") if p.is_file())
    ]


COLUMNS = ["image", "series_name", "source", "patient"]


def test_rest_service_answers_what_the_cli_writes(registry, rest_server, tiny_cohort, tmp_path):
    folder = tiny_cohort / "mpr" / PATIENT
    cli = predict(registry, folder, tmp_path / "out", "--json")
    expected = json.loads(cli.stdout)
    rows = request_rows(folder, expected["patient"])
    response = rest_server.post({"dataframe_split": {"columns": COLUMNS, "data": rows}})
    assert response.status_code == 200, response.text[:2000]
    assert "NaN" not in response.text  # strict JSON
    table = pd.DataFrame(response.json()["predictions"])
    served = prediction_document(table, expected["model"])
    assert served["branches"].keys() == expected["branches"].keys()
    for name, branch in expected["branches"].items():
        assert served["branches"][name]["class"] == branch["class"]
        for key, value in branch["probabilities"].items():
            assert served["branches"][name]["probabilities"][key] == pytest.approx(value, abs=1e-6)
    assert (served["patient_class"], served["cad_rads"]) == (
        expected["patient_class"],
        expected["cad_rads"],
    )


def test_a_malformed_body_is_refused_without_a_word_of_it(rest_server, tiny_cohort, tmp_path):
    dicom = next((tiny_cohort / "mpr" / PATIENT).rglob("*.dcm"))
    dataset = pydicom.dcmread(dicom)
    dataset.PatientName, dataset.PatientID = "PLANTEDNAME^ZELDA", "MRN-99887766"
    dataset.save_as(tmp_path / "named.dcm")
    encoded = base64.b64encode((tmp_path / "named.dcm").read_bytes()).decode()
    body = (
        '{"dataframe_split": {"columns": ["image", "patient"], '
        f'"data": [["{encoded}", "PLANTEDNAME ZELDA"]'  # the closing brackets are missing
    ).encode()
    response = rest_server.post(body)
    assert response.status_code == 400 and len(response.content) < 500
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert "line 1 column" in response.json()["message"]
    for secret in ("PLANTEDNAME", "ZELDA", "99887766", encoded[:40]):
        assert secret not in response.text
        assert secret not in rest_server.log.read_text()
    assert rest_server.post(b"\xff\xfe").status_code == 400
    assert requests.get(f"{rest_server.url}/ping", timeout=5).ok  # still serving


def test_an_empty_or_wholly_rejected_request_is_a_4xx_with_the_reasons(rest_server):
    empty = rest_server.post({"dataframe_split": {"columns": ["image"], "data": []}})
    assert empty.status_code == 422 and empty.json()["error_code"] == "NO_VIEWS"
    junk = base64.b64encode(b"not an image at all").decode()
    rows = [[junk, "LAD", "LAD/0.dcm"], [junk, "LAD", "LAD/1.dcm"]]
    refused = rest_server.post(
        {"dataframe_split": {"columns": ["image", "series_name", "source"], "data": rows}}
    )
    assert refused.status_code == 422, refused.text[:500]
    answer = refused.json()
    assert answer["error_code"] == "NO_USABLE_VIEWS" and "2 of 2 rows" in answer["message"]
    assert [r["row"] for r in answer["rejected"]] == [0, 1]
    assert all(r["reason"] for r in answer["rejected"])
    assert "LAD/0.dcm" not in refused.text  # the request's own values are not echoed


def test_unknown_columns_are_refused_by_name(rest_server):
    junk = base64.b64encode(b"x").decode()
    columns = ["image", "Branch", "view_idx"]
    response = rest_server.post(
        {"dataframe_split": {"columns": columns, "data": [[junk, "LAD", 0]]}}
    )
    assert response.status_code == 400 and response.json()["error_code"] == "UNKNOWN_COLUMNS"
    assert "'Branch'" in response.json()["message"] and "'view_idx'" in response.json()["message"]


def test_a_series_name_the_file_contradicts_is_a_reject_stated_in_the_answer(
    rest_server, tiny_cohort
):
    folder = tiny_cohort / "mpr" / PATIENT
    lied = folder / "LCX"

    def series(path: Path) -> str:
        return "LAD" if path.parent == lied else path.parent.name

    rows = request_rows(folder, "P", series)
    response = rest_server.post({"dataframe_split": {"columns": COLUMNS, "data": rows}})
    assert response.status_code == 200, response.text[:2000]
    table = pd.DataFrame(response.json()["predictions"])
    rejected = table[table.level == "rejected"]
    contradicted = rejected[rejected.source.str.startswith(f"{lied.name}/")]
    assert len(contradicted) == len(list(lied.iterdir()))
    assert contradicted.reason.str.contains("series_name says LAD").all()
    assert contradicted.reason.str.contains("SeriesDescription says LCX").all()
    assert "LCX" not in set(table.loc[table.level == "branch", "branch"])


def test_inbox_partition_uses_the_champion_and_goes_stale_when_it_changes(
    registry, tiny_cohort, tmp_path
):
    from dagster._utils.test.data_versions import get_stale_status_resolver

    inbox = tmp_path / "inbox"
    folder = inbox / "55500011"
    shutil.copytree(tiny_cohort / "mpr" / "CASE-0002", folder)
    past = time.time() - 7200
    for path in folder.rglob("*"):
        os.utime(path, (past, past))
    resources = {
        "paths": CassPaths(raw_dir=str(tmp_path / "raw"), processed_dir=str(registry.processed)),
        "inbox": Inbox(folder=str(inbox), quiet_seconds=60),
        "pseudonyms": PseudonymKey(key_file=str(tmp_path / "pseudonym.key")),
        "mlflow_tracking": MlflowTracking(**registry.tracking.__dict__),
    }
    mrn = folder_patient_key(folder)
    pid = pseudonymise(mrn, load_secret(tmp_path / "pseudonym.key"))
    promotion = layout_of(registry.processed).promotion
    promotion.parent.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test() as instance:
        cursor, requested, tags = None, [], []
        for _ in range(3):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            result = prediction.inbox_sensor(context)
            requested.append([r.partition_key for r in result.run_requests])
            tags.append([r.tags for r in result.run_requests])
            for request in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
            cursor = result.cursor
        assert requested == [[], [pid], []]
        assert tags[1][0]["cass/queue"] == "inbox" and tags[1][0]["dagster/priority"] == "10"
        assert "55500011" not in cursor and mrn not in cursor
        assert instance.get_dynamic_partitions("inbox_patients") == [pid]

        def champion(version: int) -> None:
            promotion.write_text(
                json.dumps({"promote": True, "challenger_version": version, "reason": "test"})
            )
            assert dg.materialize(
                [evaluation.champion_model], resources=resources, instance=instance
            ).success

        def predict_partition() -> dg.ExecuteInProcessResult:
            return dg.materialize(
                [prediction.patient_prediction],
                partition_key=pid,
                resources=resources,
                instance=instance,
            )

        champion(1)
        result = predict_partition()
        assert result.success
        metadata = result.asset_materializations_for_node("patient_prediction")[0].metadata
        assert metadata["model_version"].value == 1
        assert "data:image/png;base64," in metadata["report"].value
        written = json.loads(
            (registry.processed / "predictions" / pid / "prediction.json").read_text()
        )
        assert written["refer"] == metadata["refer"].value  # triage shows in the UI
        assert (
            written["patient"] == pid
            and written["patient_class"] == metadata["patient_class"].value
        )
        assets = [evaluation.champion_model, prediction.patient_prediction]
        key = prediction.patient_prediction.key
        assert get_stale_status_resolver(instance, assets).get_status(key, pid).value == "FRESH"

        new_champion = registry.register(seed=1)
        champion(new_champion)
        assert get_stale_status_resolver(instance, assets).get_status(key, pid).value == "STALE"
        again = predict_partition().asset_materializations_for_node("patient_prediction")[0]
        assert again.metadata["model_version"].value == new_champion > 1
        assert get_stale_status_resolver(instance, assets).get_status(key, pid).value == "FRESH"


def python_for(uid: int, gid: int) -> tuple[str, str] | None:
    """An interpreter that runs this environment's code as `uid`, and the line that gives it
    the venv's packages: the venv's interpreter, else the system's of the same version (a
    pyenv under a private home is out of another user's reach); None when neither runs."""
    site = next(p for p in sys.path if p.endswith("site-packages") and str(sys.prefix) in p)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    prelude = f"import site; site.addsitedir({site!r}); "
    for interpreter in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        try:
            probe = subprocess.run(
                [interpreter, "-c", prelude + "import cass_pipeline"],
                user=uid,
                group=gid,
                extra_groups=[],
                capture_output=True,
                cwd="/",
            )
        except PermissionError:  # the interpreter itself is out of reach
            continue
        if probe.returncode == 0:
            return interpreter, prelude
    return None


def test_another_user_reads_the_registered_model_and_gets_rejects_for_what_it_cannot_read(
    registry, tiny_cohort
):
    import pwd
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root")
    nobody = pwd.getpwnam("nobody")
    uid, gid = nobody.pw_uid, nobody.pw_gid
    python = python_for(uid, gid)
    if python is None:
        pytest.skip(
            f"no Python {sys.version_info.major}.{sys.version_info.minor} that uid {uid} can run"
        )
    previous = os.umask(0o022)
    base = Path(tempfile.mkdtemp(prefix="cass-second-user-"))
    try:
        base.chmod(0o755)
        tracking = Tracking(f"sqlite:///{base}/mlflow.db", "shared", (base / "artifacts").as_uri())
        shared = Registry(base, registry.processed, tracking, registry.manifest)
        tracking.set_alias(CHAMPION, shared.register(seed=0))
        unreadable = [
            p
            for p in (base / "artifacts").rglob("*")
            if p.is_file() and not p.stat().st_mode & 0o004
        ]
        assert unreadable == []  # every file of the registered model, others may read
        patient = base / "export" / PATIENT
        shutil.copytree(tiny_cohort / "mpr" / PATIENT, patient)
        (patient / "LAD" / "000.dcm").chmod(0o600)  # root's alone: unreadable for nobody
        (patient / "LAD-D1").chmod(0o700)
        home = base / "home"
        home.mkdir()
        os.chown(home, uid, gid)
        env = {
            "HOME": str(home),
            "PATH": "/usr/bin:/bin",
            "CASS_DATA_DIR": str(home / "data"),
            "MLFLOW_TRACKING_URI": tracking.tracking_uri,
        }

        def as_nobody(code: str, *arguments: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [python[0], "-c", python[1] + code, *arguments],
                user=uid,
                group=gid,
                extra_groups=[],
                env=env,
                cwd=home,
                capture_output=True,
                text=True,
                timeout=600,
            )

        cli = "import sys; from cass_pipeline.cli import main; sys.argv[0] = 'cass'; main()"
        result = as_nobody(cli, "predict", str(patient), "--out", str(home / "out"), "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        document = json.loads(result.stdout)
        reasons = {r["source"]: r["reason"] for r in document["rejected"]}
        assert "cannot be read by this account" in reasons["LAD/000.dcm"]
        assert "mode 0600" in reasons["LAD/000.dcm"]
        assert "folder cannot be listed" in reasons["LAD-D1"]
        assert "LCX" in document["branches"] and "D-1" not in document["branches"]
        (base / "export" / "mpr").mkdir()  # the same, for ingestion: the raw index's rejects
        patient.rename(base / "export" / "mpr" / PATIENT)
        index = as_nobody(
            "import sys; from pathlib import Path; "
            "from cass_pipeline.domain.cohort.index import index_cohort; "
            "print('\\n'.join(f'{r.path.name}: {r.reason}' for r in "
            "index_cohort(Path(sys.argv[1])).rejects))",
            str(base / "export"),
        )
        assert index.returncode == 0, index.stderr[-3000:]
        assert "000.dcm: file cannot be read by this account" in index.stdout
        assert "LAD-D1: folder cannot be listed by this account" in index.stdout
    finally:
        os.umask(previous)
        shutil.rmtree(base, ignore_errors=True)
