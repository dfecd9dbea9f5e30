"""The prediction as DICOM objects that go back into the patient's study: a Comprehensive
SR (TID 1500 measurement report) and a Secondary Capture of `report.png`.

Both carry the source study's patient module and reference its series and instances, so
they are written on the key holder's side only (the inbox's side), never under processed/.
Codes: SNOMED CT for the branches, the finding and the procedure; CASS's own scheme
(`99CASS`) for the classes, grades and category, which have no standard codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from cass_pipeline.domain.anatomy import GRADES
from cass_pipeline.domain.prediction.document import grade_text

SCHEME = "99CASS"
MANUFACTURER = "CASS"
#: SNOMED CT codes of the branches (DICOM CID 3014); OM without a number has none.
BRANCH_CODES = {
    "LM": ("3227004", "Left main coronary artery"),
    "LAD": ("59438005", "Left anterior descending coronary artery"),
    "D-1": ("91750005", "First diagonal coronary artery"),
    "D-2": ("91751009", "Second diagonal coronary artery"),
    "D-3": ("91752002", "Third diagonal coronary artery"),
    "LCX": ("57396003", "Circumflex coronary artery"),
    "OM-1": ("91754001", "First obtuse marginal coronary artery"),
    "OM-2": ("91755000", "Second obtuse marginal coronary artery"),
    "OM-3": ("91756004", "Third obtuse marginal coronary artery"),
    "PDA-LCX": ("91760001", "Left posterior descending circumflex coronary artery"),
    "PLV-LCX": ("57823005", "Left posterolateral circumflex coronary artery"),
    "RI": ("244252004", "Ramus intermedius coronary artery"),
    "RCA": ("13647002", "Right coronary artery"),
    "PDA-RCA": ("53655008", "Posterior descending right coronary artery"),
    "PLV-RCA": ("17269004", "Posterolateral branch of right coronary artery"),
}
NOT_A_DIAGNOSIS = (
    "Second opinion of a machine-learning model (CASS), not a diagnosis: to be read by a "
    "physician beside the images."
)


class NoSourceStudyError(ValueError):
    """An export without DICOM headers (PNG, JPEG): there is no study to write results into."""


def cass_code(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, SCHEME, meaning)


CLASS_NAME = cass_code("CLASS", "Stenosis class (CNN-CASS)")
GRADE_NAME = cass_code("GRADE", "CAD-RADS 2.0 stenosis grade")
CATEGORY_NAME = cass_code("CADRADS", "CAD-RADS 2.0 category")
REFER_NAME = cass_code("REFER", "Referral suggested")
SCORE_NAME = cass_code("PSIG", "Probability of significant stenosis")
VIEWS_NAME = cass_code("VIEWS", "Views used")
CLASS_MEANINGS = {
    "no_stenosis": "No stenosis",
    "non_significant": "Non-significant stenosis (< 50 %)",
    "significant": "Significant stenosis (>= 50 %)",
}


def branch_site(branch: str) -> hd.sr.FindingSite:
    value, meaning = BRANCH_CODES.get(branch, (None, None))
    code = (
        hd.sr.CodedConcept(value, "SCT", meaning)
        if value
        else cass_code(f"BR-{branch}", f"Coronary branch {branch}")
    )
    return hd.sr.FindingSite(anatomic_location=code)


@dataclass(frozen=True)
class Algorithm:
    """What made the prediction: the registered model's name, version and MLflow run."""

    name: str
    version: str
    run_id: str

    @classmethod
    def of(cls, model: dict) -> Algorithm:
        return cls(
            str(model.get("name", "cass-stenosis")),
            str(model.get("version", "")),
            str(model.get("run_id", "")),
        )

    def identification(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=f"CASS ShuffleNet V2 ({self.name})",
            version=self.version or "unregistered",
            parameters=[f"mlflow run {self.run_id}"] if self.run_id else None,
            manufacturer=MANUFACTURER,
        )


#: Type 2 attributes of the patient and study modules that the results copy: present,
#: empty where an export left them out.
COPIED_EMPTY_WHEN_ABSENT = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
)


def source_headers(folder: Path) -> dict[str, pydicom.Dataset]:
    """The DICOM headers of a study folder's files by their path relative to it (what
    `prediction.json` names as each view's source), the copied type 2 attributes present."""
    headers = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM: not evidence
            continue
        if "SOPInstanceUID" in dataset and "StudyInstanceUID" in dataset:
            for keyword in COPIED_EMPTY_WHEN_ABSENT:
                if keyword not in dataset:
                    setattr(dataset, keyword, "")
            headers[path.relative_to(folder).as_posix()] = dataset
    return headers


def branch_group(
    branch: str, finding: dict, headers: dict[str, pydicom.Dataset], algorithm: Algorithm
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One branch's finding: its class, its grade where the model has one, its probability
    of a significant stenosis and the views it was decided from."""
    evaluations = [
        hd.sr.QualitativeEvaluation(
            CLASS_NAME, cass_code(finding["class"], CLASS_MEANINGS[finding["class"]])
        )
    ]
    if finding.get("grade"):
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                GRADE_NAME,
                cass_code(f"G{GRADES.index(finding['grade'])}", grade_text(finding["grade"])),
            )
        )
    probabilities = finding.get("probabilities") or {}
    measurements = [
        hd.sr.Measurement(
            SCORE_NAME,
            float(probabilities.get("significant", finding.get("significant_score") or 0.0)),
            codes.UCUM.NoUnits,
        ),
        hd.sr.Measurement(VIEWS_NAME, float(finding["views_used"] or 0), codes.UCUM.NoUnits),
    ]
    sources = [
        hd.sr.SourceImageForMeasurementGroup(
            headers[view["source"]].SOPClassUID, headers[view["source"]].SOPInstanceUID
        )
        for view in finding["views"]
        if view["source"] in headers
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=branch),
        finding_type=codes.SCT.Stenosis,
        algorithm_id=algorithm.identification(),
        finding_sites=[branch_site(branch)],
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=sources or None,
    )


def patient_group(
    document: dict, algorithm: Algorithm
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The patient's category, class and referral flag, and that it is not a diagnosis."""
    evaluations = []
    if document.get("patient_class"):
        patient_class = document["patient_class"]
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                CLASS_NAME, cass_code(patient_class, CLASS_MEANINGS[patient_class])
            )
        )
    if document.get("cad_rads"):
        category = str(document["cad_rads"])
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                CATEGORY_NAME, cass_code(f"CR-{category}", f"CAD-RADS {category}")
            )
        )
    if document.get("refer") is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                REFER_NAME, codes.SCT.Yes if document["refer"] else codes.SCT.No
            )
        )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="patient"),
        finding_type=codes.SCT.Stenosis,
        algorithm_id=algorithm.identification(),
        finding_sites=[hd.sr.FindingSite(codes.SCT.CoronaryArtery)],
        measurements=[
            hd.sr.Measurement(
                SCORE_NAME, float(document.get("significant_score") or 0.0), codes.UCUM.NoUnits
            )
        ],
        qualitative_evaluations=evaluations or None,
    )
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=codes.DCM.Comment,
            value=NOT_A_DIAGNOSIS,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    return group


def new_series(number: int, description: str) -> dict:
    """The identifiers of a new one-instance CASS series in the source study."""
    return {
        "series_instance_uid": hd.UID(),
        "series_number": number,
        "sop_instance_uid": hd.UID(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "series_description": description,
    }


def structured_report(
    document: dict, headers: dict[str, pydicom.Dataset], device_uid: str
) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR of one patient's `prediction.json`, in the source study."""
    if not headers:
        raise NoSourceStudyError("the study folder holds no DICOM file to take the study from")
    algorithm = Algorithm.of(document.get("model") or {})
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name="CASS",
            manufacturer_name=MANUFACTURER,
            model_name=f"{algorithm.name} version {algorithm.version}",
        ),
    )
    groups = [patient_group(document, algorithm)] + [
        branch_group(branch, finding, headers, algorithm)
        for branch, finding in document["branches"].items()
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.CTAngiographyOfCoronaryArteries,
        imaging_measurements=groups,
    )
    evidence = list(headers.values())
    return hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=report[0],
        **new_series(9901, "CASS stenosis second opinion (SR)"),
    )


def key_image(png: bytes, headers: dict[str, pydicom.Dataset]) -> hd.sc.SCImage:
    """`report.png` as a Secondary Capture (RGB) in the source study."""
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if picture is None:
        raise ValueError("report.png could not be decoded")
    reference = next(iter(headers.values()))
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=cv2.cvtColor(picture, cv2.COLOR_BGR2RGB),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),  # replaced below: highdicom wants one
        **new_series(9902, "CASS stenosis second opinion (key image)"),
    )
    image.PatientOrientation = ""  # a page of text and views has no orientation (type 2)
    return image
