"""Where and how a network runs: the processor, the cores it may use, the precision.

bfloat16 halves the work of a convolution only where the hardware computes it natively: a CUDA
GPU that supports it, or a CPU with AVX-512-BF16 or AMX. Elsewhere PyTorch emulates it, and a
768² tile of au-hrtem takes ten times as long as in float32 (5.4 s against 0.57 s on an
AVX2-only CPU, measured with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``). So the
precision is chosen from what the processor reports, unless the user says otherwise.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from ..errors import TEMAtomsError

__all__ = ["PRECISIONS", "Processor", "allowed_cores", "native_bfloat16", "processor",
           "resolve_precision", "use_allowed_cores"]

#: What users may ask for: ``auto`` picks bfloat16 where it is native, float32 elsewhere.
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Processor:
    """The CPU a process runs on, as speed figures must name it.

    Attributes
    ----------
    name : str
        Model name (``/proc/cpuinfo``), or what the platform says.
    capability : str
        ``torch.backends.cpu.get_cpu_capability()``: the vector instructions PyTorch uses
        (``"AVX2"``, ``"AVX512"``...).
    bfloat16 : str
        How bfloat16 is computed: ``"AMX"``, ``"AVX512-BF16"`` (native) or ``"emulated"``.
    cores : int
        Cores this process may use (affinity and cgroup quota).
    """

    name: str
    capability: str
    bfloat16: str
    cores: int

    @property
    def native_bfloat16(self) -> bool:
        """True when the CPU computes bfloat16 natively."""
        return self.bfloat16 != "emulated"

    def describe(self) -> str:
        """One line for logs, model cards and benchmark output."""
        return (f"{self.name} ({self.capability}, bfloat16 {self.bfloat16}, "
                f"{self.cores} core{'s' if self.cores != 1 else ''})")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cgroup_cpu_limit() -> float | None:
    """CPUs the cgroup quota allows (``cpu.max`` or v1's quota/period); None: no limit."""
    candidates = (("/sys/fs/cgroup/cpu.max", None),
                  ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    for quota_file, period_file in candidates:
        try:
            text = Path(quota_file).read_text().split()
            if period_file is None:
                quota, period = text[0], text[1]
            else:
                quota, period = text[0], Path(period_file).read_text().split()[0]
        except (OSError, IndexError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            return max(float(quota) / float(period), 1.0)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def allowed_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(cores, 1)


@functools.lru_cache(maxsize=1)
def processor() -> Processor:
    """The processor this process runs on (read once)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    bfloat16 = "emulated"
    # The capability says which kernels PyTorch dispatches to: forced down to AVX2 (as on an
    # AVX2-only CPU, or with ATEN_CPU_CAPABILITY=avx2), bfloat16 is not computed natively.
    if capability.startswith("AVX512"):
        cpu = getattr(torch, "cpu", None)
        if cpu is not None and getattr(cpu, "_is_amx_tile_supported", lambda: False)():
            bfloat16 = "AMX"
        elif cpu is not None and getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
            bfloat16 = "AVX512-BF16"
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa_cap and "BF16" not in isa_cap and "AMX" not in isa_cap and isa_cap != "ALL":
        bfloat16 = "emulated"  # oneDNN told not to use the bfloat16 instructions
    return Processor(_cpu_name(), capability, bfloat16, allowed_cores())


def native_bfloat16(device: str) -> bool:
    """True when `device` (``"cpu"``, ``"cuda"``, ``"cuda:1"``) computes bfloat16 natively."""
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return processor().native_bfloat16


def resolve_precision(precision: str | None, device: str) -> str:
    """The precision a network runs at on `device`: ``"fp32"`` or ``"bf16"``.

    Parameters
    ----------
    precision : str or None
        ``"auto"`` (or None): bfloat16 where `device` computes it natively, else float32;
        ``"fp32"`` or ``"bf16"``: as asked (bfloat16 on a CPU without it is emulated: correct,
        but several times slower).

    Raises
    ------
    TEMAtomsError
        An unknown precision, or bfloat16 on a GPU that does not support it.
    """
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise TEMAtomsError(f"unknown precision {precision!r}: use one of "
                            f"{', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bfloat16(device) else "fp32"
    if precision == "bf16" and device.startswith("cuda") and not native_bfloat16(device):
        raise TEMAtomsError(f"bfloat16 was asked for, but the GPU ({device}) does not support "
                            "it: use --precision fp32 (or auto)")
    return precision


def use_allowed_cores() -> int:
    """Let PyTorch use no more threads than the cores this process may use; return the count.

    PyTorch sizes its thread pool by the machine's cores, not by a container's CPU quota: on a
    2-CPU quota of a 64-core host it would run 64 threads that fight for two cores.
    """
    import torch

    cores = allowed_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()
