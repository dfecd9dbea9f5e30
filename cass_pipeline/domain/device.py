"""Which torch device training and inference use on this machine, which CPU kernels, and
how their threads share the CPU with other work.

`cass_pipeline` applies `pin_cpu_kernels` and `share_cpu` when it is first imported, before
torch or ONNX Runtime start: one setup for every entry point (the `cass` command, Dagster
steps, the REST service, torchrun ranks, worker processes). A program that imports torch
before `cass_pipeline` keeps the libraries' own defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
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


#: `CASS_THREAD_WAIT`: how a thread that waits for the others of its pool waits. `sleep`
#: (the default) gives the core back at once: OpenMP's `OMP_WAIT_POLICY=PASSIVE` (torch) and
#: ONNX Runtime without spinning. `spin` is the libraries' own default: a waiting thread
#: spins, which is faster only on a machine with nothing else to run; beside one busy process
#: on 2 cores, `cass predict` spinning kept 59% of its rate, sleeping 73% (docs/benchmarks.md,
#: "Sharing the CPU").
THREAD_WAITS = ("sleep", "spin")


def thread_wait(environ: Mapping[str, str] = os.environ) -> str:
    """The `CASS_THREAD_WAIT` in force: `sleep` (the default) or `spin`."""
    mode = environ.get("CASS_THREAD_WAIT", "sleep").lower()
    if mode not in THREAD_WAITS:
        raise ValueError(f"CASS_THREAD_WAIT must be sleep or spin, not {mode!r}")
    return mode


def share_cpu(environ: MutableMapping[str, str] = os.environ) -> str:
    """Apply `CASS_THREAD_WAIT` to OpenMP before torch loads it (an `OMP_WAIT_POLICY` set by
    the user wins); return the mode in force."""
    mode = thread_wait(environ)
    if mode == "sleep":
        environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return mode


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: taskset, a container's cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def training_threads(loader_workers: int, environ: Mapping[str, str] = os.environ) -> int | None:
    """Intra-op threads of a CPU training process, sized with its data-loader workers: the
    usable CPUs shared by the ranks on this machine (torchrun's `LOCAL_WORLD_SIZE`), less one
    for each worker, at least one; None where `OMP_NUM_THREADS` decides (the user's, or
    torchrun's for several ranks)."""
    if environ.get("OMP_NUM_THREADS"):
        return None
    ranks = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, usable_cpus() // ranks - loader_workers)


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
