"""The prediction as DICOM objects that go back into the patient's study: a Comprehensive
SR (TID 1500 measurement report), a Secondary Capture of `report.png`, and a Key Object
Selection (TID 2010) of the views that decided.

They carry the source study's patient module and reference its series and instances, so
they are written on the key holder's side only (the inbox's side), never under processed/.
Codes: SNOMED CT for the branches, the finding and the procedure; CASS's own scheme
(`99CASS`, declared in each object) for the classes, grades and category, which have no
standard codes. One prediction always gets the same UIDs, so a second sending of it
replaces the first in the PACS instead of adding a copy.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.sr.codedict import codes
from pydicom.valuerep import validate_value

from cass_pipeline.domain.anatomy import GRADES, SNOMED_OF_BRANCH
from cass_pipeline.domain.prediction.document import BranchFinding, PredictionDocument, grade_text

SCHEME = "99CASS"
MANUFACTURER = "CASS"
#: The declaration of CASS's private coding scheme, carried by every object that uses it.
CODING_SCHEMES = [
    hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=SCHEME,
        name="CASS stenosis classes, CAD-RADS 2.0 grades and categories",
        responsible_organization="CASS",
    )
]
NOT_A_DIAGNOSIS = (
    "Second opinion of a machine-learning model (CASS), not a diagnosis: to be read by a "
    "physician beside the images."
)


class NoResultError(ValueError):
    """A prediction that has no DICOM result, and why (the step notes it and goes on)."""


class NoSourceStudyError(NoResultError):
    """An export without DICOM headers (PNG, JPEG): there is no study to write results into."""


class NotScoredError(NoResultError):
    """A prediction without a computed score: a result would state a value never computed."""


class ResultBuildError(RuntimeError):
    """An object the study's headers did not let us build (the step fails with this)."""


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
    value, meaning = SNOMED_OF_BRANCH.get(branch, (None, None))
    code = (
        hd.sr.CodedConcept(value, "SCT", meaning)
        if value
        else cass_code(f"BR-{branch}", f"Coronary branch {branch}")
    )
    return hd.sr.FindingSite(anatomic_location=code)


@dataclass(frozen=True)
class Algorithm:
    """What made the prediction: the registered model's name, version, architecture and
    MLflow run."""

    name: str
    version: str
    run_id: str
    arch: str

    @classmethod
    def of(cls, model: dict) -> Algorithm:
        return cls(
            str(model.get("name") or "unregistered model"),
            str(model.get("version") or ""),
            str(model.get("run_id") or ""),
            str(model.get("arch") or "network"),
        )

    def identification(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=f"CASS {self.arch} ({self.name})",
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
        if path.name.startswith("."):  # a temporary or a copy tool's file: not evidence
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM: not evidence
            continue
        if "SOPInstanceUID" in dataset and "StudyInstanceUID" in dataset:
            for keyword in COPIED_EMPTY_WHEN_ABSENT:
                if keyword not in dataset:
                    setattr(dataset, keyword, "")
            headers[path.relative_to(folder).as_posix()] = conformant(dataset)
    return headers


def branch_group(
    branch: str,
    finding: BranchFinding,
    headers: dict[str, pydicom.Dataset],
    algorithm: Algorithm,
    uids: ResultUids,
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
    measurements = [
        hd.sr.Measurement(VIEWS_NAME, float(finding["views_used"] or 0), codes.UCUM.NoUnits)
    ]
    score = (finding.get("probabilities") or {}).get("significant")
    if score is not None:  # a branch without usable views states no probability
        measurements.insert(0, hd.sr.Measurement(SCORE_NAME, float(score), codes.UCUM.NoUnits))
    sources = [
        hd.sr.SourceImageForMeasurementGroup(
            headers[view["source"]].SOPClassUID, headers[view["source"]].SOPInstanceUID
        )
        for view in finding["views"]
        if view["source"] in headers
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.uid("group", branch), identifier=branch
        ),
        finding_type=codes.SCT.Stenosis,
        algorithm_id=algorithm.identification(),
        finding_sites=[branch_site(branch)],
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=sources or None,
    )


def patient_group(
    document: PredictionDocument, algorithm: Algorithm, uids: ResultUids
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
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.uid("group", "patient"), identifier="patient"
        ),
        finding_type=codes.SCT.Stenosis,
        algorithm_id=algorithm.identification(),
        finding_sites=[hd.sr.FindingSite(codes.SCT.CoronaryArtery)],
        measurements=[
            hd.sr.Measurement(SCORE_NAME, float(document["significant_score"]), codes.UCUM.NoUnits)
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


@dataclass(frozen=True)
class ResultUids:
    """The UIDs of one prediction's objects: derived from the source study and the
    prediction, so that the same prediction written twice is the same objects."""

    seed: str

    @classmethod
    def of(cls, document: PredictionDocument, headers: dict[str, pydicom.Dataset]) -> ResultUids:
        study = str(next(iter(headers.values())).StudyInstanceUID)
        body = json.dumps(document, sort_keys=True, default=str)
        return cls(hashlib.sha256(f"{study}\n{body}".encode()).hexdigest())

    def uid(self, *parts: str) -> str:
        return pydicom.uid.generate_uid(entropy_srcs=[self.seed, *parts])

    def new_series(self, kind: str, number: int, description: str) -> dict:
        """The identifiers of a one-instance CASS series of `kind` in the source study."""
        return {
            "series_instance_uid": self.uid(kind, "series"),
            "series_number": number,
            "sop_instance_uid": self.uid(kind, "instance"),
            "instance_number": 1,
            "manufacturer": MANUFACTURER,
            "series_description": description,
        }


def structured_report(
    document: PredictionDocument,
    headers: dict[str, pydicom.Dataset],
    device_uid: str,
    uids: ResultUids,
) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR of one patient's `prediction.json`, in the source study."""
    if not headers:
        raise NoSourceStudyError("the study folder holds no DICOM file to take the study from")
    if document.get("significant_score") is None:
        raise NotScoredError(f"not scored: {document.get('note') or 'no view could be used'}")
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
    groups = [patient_group(document, algorithm, uids)] + [
        branch_group(branch, finding, headers, algorithm, uids)
        for branch, finding in document["branches"].items()
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.CTAngiographyOfCoronaryArteries,
        imaging_measurements=groups,
    )
    return hd.sr.ComprehensiveSR(
        evidence=list(headers.values()),
        content=report[0],
        coding_schemes=CODING_SCHEMES,
        **uids.new_series("sr", 9901, "CASS stenosis second opinion (SR)"),
    )


def report_capture(
    png: bytes, headers: dict[str, pydicom.Dataset], uids: ResultUids
) -> hd.sc.SCImage:
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
        **uids.new_series("sc", 9902, "CASS stenosis second opinion (report picture)"),
    )
    image.PatientOrientation = ""  # a page of text and views has no orientation (type 2)
    image.BodyPartExamined = "HEART"  # unpaired, so no Laterality (type 2C)
    return image


def decisive_views(document: PredictionDocument) -> list[str]:
    """The source files of the views that decided: those of the branch that decided the
    artery that decided the patient, where they agree with their branch."""
    artery = (document.get("arteries") or {}).get(document.get("decided_by") or "", {})
    branch = (document.get("branches") or {}).get(artery.get("decided_by") or "", {})
    views = branch.get("views") or []
    agreeing = [v["source"] for v in views if v.get("class") == branch.get("class")]
    return agreeing or [v["source"] for v in views]


def key_objects(
    document: PredictionDocument,
    headers: dict[str, pydicom.Dataset],
    capture: pydicom.Dataset | None,
    uids: ResultUids,
) -> hd.ko.KeyObjectSelectionDocument:
    """A Key Object Selection ("Of Interest") of the views that decided and the report
    picture, so that a viewer opens the study on them (IHE AIR)."""
    selected = [headers[s] for s in decisive_views(document) if s in headers]
    selected = selected or list(headers.values())[:1]
    referenced = selected + ([capture] if capture is not None else [])
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest,
        referenced_objects=referenced,
        description="CASS second opinion: the views that decided, and its report picture",
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=referenced,
        content=content,
        **uids.new_series("ko", 9903, "CASS key views"),
    )


def conformant(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """The copied patient and study attributes with a value their VR does not allow
    (StudyTime '15:18:59', a birth date '12/03/1955') left empty: the objects stay valid,
    and no error quotes the value."""
    for keyword in COPIED_EMPTY_WHEN_ABSENT:
        element = dataset.data_element(keyword)
        value = "" if element is None or element.value is None else str(element.value)
        try:
            validate_value(element.VR, value, pydicom_config.RAISE)
        except ValueError:
            element.value = ""
    return dataset


def built_quietly(what: str, build, *args):
    """`build(*args)` with highdicom's and pydicom's warnings silenced (they quote header
    values, names among them, into logs a UI shows) and any error but a `NoResultError`
    stripped of its message (which may quote one too)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build(*args)
    except NoResultError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise ResultBuildError(
            f"the {what} could not be built from the study's headers ({type(error).__name__}; "
            "the message is withheld as it may quote patient data)"
        ) from None
