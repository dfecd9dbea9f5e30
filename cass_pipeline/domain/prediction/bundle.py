"""A registered model's folder: the ingestion settings (cleanup, minimum views per branch,
the series alias table), the class map, the roll-up rules, the network as ONNX and as
PyTorch weights, the calibration; written once at registration, read by every predictor."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from cass_pipeline.domain.anatomy import ARTERY_OF_BRANCH, CAD_RADS_OF_CLASS, STENOSIS_CLASSES
from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.imaging.series_names import merged_aliases
from cass_pipeline.domain.model.aggregation import AttentionPooling
from cass_pipeline.domain.model.calibration import Calibration
from cass_pipeline.domain.model.config import ATTENTION_AGGREGATIONS
from cass_pipeline.domain.model.ensemble import (
    EnsembleEngine,
    EnsembleHead,
    NetworkEnsemble,
    heads_of,
    members_of,
    torch_engine,
)
from cass_pipeline.domain.model.inference import (
    Engine,
    OnnxEngine,
    augmented,
    export_onnx,
    largest_difference,
    predict_probabilities,
)
from cass_pipeline.domain.model.network import build_model
from cass_pipeline.domain.model.targets import OutputSpace, output_map, output_space
from cass_pipeline.domain.storage import write_text_atomic

BUNDLE_FILE, ALIASES_FILE, ONNX_FILE, WEIGHTS_FILE, ATTENTION_FILE = (
    "bundle.json",
    "series_aliases.yaml",
    "model.onnx",
    "weights.pt",
    "attention.pt",
)


BRANCH_RULES = {
    "vote": "majority vote of its views' outputs (grades or classes), a tie going to the most "
    "severe; its class is the class of that grade",
    "attention": "the attention head's output over its views' embeddings (attention.pt), "
    "trained on the finished network's embeddings",
    "attention_end_to_end": "the attention head's output over its views' embeddings "
    "(attention.pt), trained with the network on whole branches",
}


ROLLUP_RULES = {
    "branch": "see `aggregation`; probabilities are the mean of its views'",
    "artery": "most severe of its branches (LM folds into LAD, RI into LCX); "
    "probabilities of that branch",
    "patient": "most severe of its arteries; probabilities of that artery",
    "ensemble": "a fold ensemble's members (`members`) each score every view; its logits "
    "are their mean logits (a normalised geometric mean of their probabilities), its "
    "embeddings theirs side by side, and each member's attention head reads its own",
    "cad_rads": "grade models: the CAD-RADS 2.0 category of the branch grades (4A for 70-99% "
    "in one or two vessels, 4B for left main >= 50% or 70-99% in all three, 5 for an "
    "occlusion); three-class models: the range of categories of the patient's class",
    "significant_score": "branch: its P(significant); artery and patient: the highest of "
    "their branches'",
    "refer": "a significant class, or significant_score at or above the model's referral "
    "threshold (fitted on validation for the target sensitivity)",
}


#: Largest probability difference allowed between the ONNX export and the PyTorch network.
ONNX_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ModelBundle:
    """What a registered model needs besides its weights."""

    arch: str
    ingest: IngestConfig
    classes: tuple[str, ...] = STENOSIS_CLASSES
    artery_of_branch: dict[str, str] = field(default_factory=lambda: dict(ARTERY_OF_BRANCH))
    recorded_cleanup: str | None = None
    calibration: Calibration = field(default_factory=Calibration)
    aggregation: str = "vote"
    attention: AttentionPooling | None = field(default=None, compare=False, repr=False)
    #: What the network outputs (`targets.OUTPUT_SPACES`); models before grades: class.
    target: str = "class"
    #: What the network's input channels hold (`model_views`); models before them: grey.
    view_channels: str = "grey"
    #: Test-time augmentation (`inference.augmentations`); models before it: none.
    tta: str = "none"
    #: A fold ensemble's member folders (`ensemble.py`), relative to the bundle folder,
    #: each with its own network and attention head; empty for one network.
    members: tuple[str, ...] = ()

    @property
    def outputs(self) -> OutputSpace:
        return output_space(self.target)

    def engine(self, runner: Engine) -> Engine:
        """`runner` (the network on some runtime) as the model serves it: with its test-time
        augmentation, then its calibration. Evaluation, serving and the export check use it."""
        return self.calibration.scaled(augmented(runner, self.tta))

    @property
    def image_size(self) -> int:
        return self.ingest.cleanup.size

    @property
    def cleanup_fingerprint(self) -> str:
        """How the training images were cleaned: recorded at registration (an older cleanup
        algorithm gives another fingerprint for the same settings)."""
        return self.recorded_cleanup or self.ingest.cleanup.fingerprint()

    def cleans_as_trained(self) -> bool:
        """Whether this code's cleanup is the one the model was trained with."""
        return self.cleanup_fingerprint == self.ingest.cleanup.fingerprint()

    def to_json(self) -> dict:
        ingest = asdict(self.ingest)
        ingest.pop("aliases")  # the merged table travels as its own file
        ingest.pop("site_aliases")
        return {
            "arch": self.arch,
            "image_size": self.image_size,
            "ingest": ingest,
            "cleanup_fingerprint": self.cleanup_fingerprint,
            "classes": list(self.classes),
            "target": self.target,
            "view_channels": self.view_channels,
            "tta": self.tta,
            "members": list(self.members),
            "output_map": output_map(self.outputs),
            "artery_of_branch": self.artery_of_branch,
            "rollup": ROLLUP_RULES,
            "aggregation": self.aggregation,
            "aggregation_rule": BRANCH_RULES[self.aggregation],
            "cad_rads_of_class": CAD_RADS_OF_CLASS,
            "calibration": self.calibration.to_json(),
        }

    @classmethod
    def read(cls, folder: Path) -> ModelBundle:
        data = json.loads((folder / BUNDLE_FILE).read_text())
        members = tuple(data.get("members", ()))
        ingest = dict(data["ingest"])
        cleanup = CleanupConfig(**ingest.pop("cleanup"))
        return cls(
            arch=data["arch"],
            ingest=IngestConfig(cleanup=cleanup, aliases=str(folder / ALIASES_FILE), **ingest),
            classes=tuple(data["classes"]),
            artery_of_branch=data["artery_of_branch"],
            recorded_cleanup=data.get("cleanup_fingerprint"),
            calibration=Calibration.from_json(data.get("calibration")),
            aggregation=data.get("aggregation", "vote"),
            attention=(
                read_attention(folder, members)
                if data.get("aggregation") in ATTENTION_AGGREGATIONS
                else None
            ),
            target=data.get("target", "class"),
            view_channels=data.get("view_channels", "grey"),
            tta=data.get("tta", "none"),
            members=members,
        )

    def check_store(self, fingerprints: Iterable[str]) -> None:
        """Refuse views cleaned otherwise than this bundle cleans (train/serve skew)."""
        found, expected = set(fingerprints), self.cleanup_fingerprint
        if found - {expected}:
            raise ValueError(
                f"the model expects views cleaned as {expected}, the image store holds "
                f"{sorted(found)}: re-run the image ingestion with the model's settings"
            )


def member_folders(folder: Path, members: tuple[str, ...]) -> list[Path]:
    """Where each network of a bundle lives: its members' folders, else the bundle's own."""
    return [folder / member for member in members] if members else [folder]


def read_head(folder: Path) -> AttentionPooling:
    state = torch.load(folder / ATTENTION_FILE, map_location="cpu", weights_only=True)
    head = AttentionPooling(state["classify.weight"].shape[1], state["classify.weight"].shape[0])
    head.load_state_dict(state)
    return head.eval()


def read_attention(folder: Path, members: tuple[str, ...] = ()) -> nn.Module:
    """The attention head, or a fold ensemble's heads as one `EnsembleHead`."""
    if not members:
        return read_head(folder)
    return EnsembleHead([read_head(member) for member in member_folders(folder, members)]).eval()


def write_bundle(
    model: nn.Module, bundle: ModelBundle, folder: Path, check_images: np.ndarray
) -> float:
    """Write the model folder (for a `NetworkEnsemble`, a folder per member); the ONNX
    export is checked against the network on `check_images` (as the network takes them,
    `model_views`) and refused when a class differs or a probability moves by more than
    `ONNX_TOLERANCE`. Returns the largest difference."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    networks = members_of(model)
    places = member_folders(folder, bundle.members)
    if len(places) != len(networks):
        raise ValueError(f"{len(networks)} networks for {len(places)} bundle members")
    for place, network, head in zip(
        places, networks, heads_of(bundle.attention, len(networks)), strict=True
    ):
        place.mkdir(parents=True, exist_ok=True)
        torch.save(network.state_dict(), place / WEIGHTS_FILE)
        if head is not None:
            torch.save(head.state_dict(), place / ATTENTION_FILE)
        export_onnx(network, bundle.image_size, place / ONNX_FILE, bundle.view_channels)
    site = Path(bundle.ingest.site_aliases) if bundle.ingest.site_aliases else None
    write_text_atomic(
        folder / ALIASES_FILE,
        yaml.safe_dump(merged_aliases(Path(bundle.ingest.aliases), site), sort_keys=True),
    )
    write_text_atomic(folder / BUNDLE_FILE, json.dumps(bundle.to_json(), indent=2))
    difference, changed = largest_difference(
        predict_probabilities(torch_engine(model), check_images),
        predict_probabilities(network_runner(folder, bundle, "onnxruntime"), check_images),
    )
    if changed or difference > ONNX_TOLERANCE:
        raise ValueError(
            f"the ONNX export disagrees with the network: {changed} views change class, "
            f"largest probability difference {difference:.2e} (allowed {ONNX_TOLERANCE:.0e})"
        )
    return difference


def torch_network(folder: Path, bundle: ModelBundle) -> nn.Module:
    """The bundle's PyTorch network (for gradients, GPUs and the ONNX check); a fold
    ensemble's as one `NetworkEnsemble`."""
    networks = []
    for place in member_folders(folder, bundle.members):
        network = build_model(bundle.arch, "none", bundle.outputs.size).model
        state = torch.load(place / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        networks.append(network.eval())
    return NetworkEnsemble(networks).eval() if bundle.members else networks[0]


def network_runner(folder: Path, bundle: ModelBundle, engine: str, device: str = "cpu") -> Engine:
    """The bundle's network, uncalibrated, on ONNX Runtime (CPU) or PyTorch (`device`); a
    fold ensemble's members as one `EnsembleEngine`."""
    if engine != "onnxruntime":
        return torch_engine(torch_network(folder, bundle), torch.device(device))
    runners = [OnnxEngine(place / ONNX_FILE) for place in member_folders(folder, bundle.members)]
    return EnsembleEngine(runners) if bundle.members else runners[0]
