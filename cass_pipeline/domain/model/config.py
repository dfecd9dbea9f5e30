"""Training, evaluation and explanation settings, declared once: the CLI options and the
Dagster configs are generated from them (`domain.options`). Pure: no torch, so the CLI
starts fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from cass_pipeline.domain.options import option
from cass_pipeline.domain.storage import settings_hash

Architecture = Literal[
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"
]
#: How views decide a branch: the paper's majority vote, attention pooling (MIL) trained on
#: the finished network's embeddings, or trained end to end with the network on branch bags.
Aggregation = Literal["vote", "attention", "attention_end_to_end"]
#: The aggregation whose head trains with the network (`train`).
END_TO_END = "attention_end_to_end"
#: The aggregations with an attention head (`attention.pt` in a registered model).
ATTENTION_AGGREGATIONS = ("attention", END_TO_END)
#: What the network predicts: CAD-RADS grades from the report's interval (soft ordinal
#: targets, measured best in docs/benchmarks.md, or its likelihood), or the paper's classes.
Target = Literal["grade", "soft_grade", "class"]
#: What the network's three input channels hold: the view itself in each (the paper), or the
#: views before and after it in its branch beside it (the neighbouring angles).
ViewChannels = Literal["grey", "neighbours"]
TestTimeAugmentation = Literal["none", "flip", "flip_shift"]
LrSchedule = Literal["constant", "cosine"]
ImbalanceStrategy = Literal["sampler", "class_weights", "none"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run (logged whole to MLflow). The defaults follow
    the paper; the demo's settings are in the `demo` job."""

    arch: Architecture = option("shufflenet_v2_x1_0", "ShuffleNet V2 width")
    weights: str = option("auto", "auto | imagenet | none | PATH of a state dict")
    lr: float = option(1e-4, "Adam learning rate")
    lr_schedule: LrSchedule = option("constant", "constant, or cosine to 0 at the last epoch")
    batch_size: int = option(32, "views per step", min=1)
    accumulation_steps: int = option(1, "steps whose gradients add up to one update", min=1)
    epochs: int = option(30, "most epochs to train", min=1)
    patience: int = option(5, "epochs without a better validation F1 before stopping", min=1)
    view_step: int = option(1, "keep every n-th view of each branch", min=1)
    imbalance: ImbalanceStrategy = option("sampler", "class-balanced sampler, weights or none")
    target: Target = option(
        "soft_grade",
        "outputs: the six CAD-RADS grades with soft ordinal targets over the label's interval "
        "(soft_grade), with the interval's likelihood (grade), or the three classes (class)",
    )
    aggregation: Aggregation = option(
        "vote",
        "branch decision: majority vote of views, attention pooling (MIL) on the trained "
        "network, or attention_end_to_end (network and head trained together on branch bags)",
    )
    view_channels: ViewChannels = option(
        "grey",
        "network input: the view in all three channels (grey), or with the views before and "
        "after it in its branch (neighbours; needs view_step 1)",
    )
    tta: TestTimeAugmentation = option(
        "none",
        "test-time augmentation of the registered model (evaluated and served alike): the "
        "mean logits of the view and its mirror image (flip), and of the view shifted along "
        "the vessel by 1/32 of its height up and down (flip_shift); 2x and 4x the inference",
    )
    num_workers: int = option(
        1,
        "data-loader processes; on the CPU the training threads are the usable CPUs less these "
        "(a core for loading, a core for the network on 2 cores: fair beside other work)",
        min=0,
    )
    seed: int = option(7, "seed of weights, sampling and augmentation")
    device: str = option("auto", "auto | cpu | cuda | mps")
    channels_last: bool = option(True, "channels-last memory format")
    amp: bool = option(True, "mixed precision (CUDA only)")
    time_budget_s: float | None = option(None, "seconds; stop after the epoch that passes it")

    def __post_init__(self):
        if self.view_channels == "neighbours" and self.view_step != 1:
            raise ValueError(
                "view_channels neighbours needs view_step 1: served views are one angle apart"
            )

    def fingerprint(self) -> str:
        return settings_hash(asdict(self))


@dataclass(frozen=True)
class EvaluateSettings:
    """How the segment, artery and patient metrics are computed."""

    bootstrap: int = option(
        1000, "bootstrap rounds over patients for the 95% intervals (0: none)", min=0
    )


@dataclass(frozen=True)
class ExplainSettings:
    """Integrated Gradients of test views: how finely, how many, and what counts as vessel."""

    steps: int = option(32, "Integrated Gradients steps", min=1)
    per_class: int = option(2, "test views explained per true class", min=1)
    vessel_band: float = option(
        0.25, "share of the view's width around the centreline counted as the vessel"
    )


@dataclass(frozen=True)
class PretrainSettings:
    """How `cass pretrain` learns from unlabelled views."""

    arch: Architecture = option("shufflenet_v2_x1_0", "ShuffleNet V2 width (as trained later)")
    epochs: int = option(5, "passes over the unlabelled views", min=1)
    batch_size: int = option(64, "views per step (each seen twice)", min=2)
    lr: float = option(1e-3, "Adam learning rate")
    temperature: float = option(0.2, "NT-Xent temperature")
    view_step: int = option(1, "keep every n-th view of each branch", min=1)
    seed: int = option(7, "seed of weights, order and augmentation")
