"""Which torch device training and inference use on this machine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    """The chosen device and a short human description of it."""

    name: str
    description: str


def training_device(prefer: str = "auto") -> DeviceInfo:
    """`auto` picks CUDA, then Apple MPS, then the CPU; any other value is taken as given."""
    import torch

    if prefer != "auto":
        return DeviceInfo(prefer, prefer)
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return DeviceInfo("cuda", f"cuda ({count} x {torch.cuda.get_device_name(0)})")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return DeviceInfo("mps", "mps (Apple GPU)")
    return DeviceInfo("cpu", f"cpu ({torch.get_num_threads()} threads)")
