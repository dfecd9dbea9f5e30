"""Which torch device training and inference use on this machine, and which CPU kernels."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass

#: `CASS_CPU_KERNELS=avx2` makes oneDNN, MKL and ATen take their AVX2 code paths on any x86
#: CPU, so training repeats bit for bit on AVX-512 Intel and AVX2-only AMD machines with the
#: same thread count (demo training 120 -> 110 images/s on an AVX-512 machine). Set before
#: torch runs its first kernel.
PINNED_KERNELS = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2,STRICT",
    "ATEN_CPU_CAPABILITY": "avx2",
}


def pin_cpu_kernels(environ: MutableMapping[str, str] = os.environ) -> str:
    """Apply `CASS_CPU_KERNELS` (`native`, the default, or `avx2`); return the mode in force."""
    mode = environ.get("CASS_CPU_KERNELS", "native").lower()
    if mode not in ("native", "avx2"):
        raise ValueError(f"CASS_CPU_KERNELS must be native or avx2, not {mode!r}")
    if mode == "avx2":
        for name, value in PINNED_KERNELS.items():
            environ.setdefault(name, value)
    return mode


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
