"""CASS: coronary artery stenosis scoring from CCTA reports and curved MPR images."""

from cass_pipeline.domain.device import pin_cpu_kernels, share_cpu

__version__ = "0.1.0"
#: The CPU kernels this process trains with, fixed before torch starts (`CASS_CPU_KERNELS`).
CPU_KERNELS = pin_cpu_kernels()
#: How waiting threads wait, fixed before torch starts (`CASS_THREAD_WAIT`).
THREAD_WAIT = share_cpu()
