"""Where a run trains and in which precision: the device trainer.device names here, the CPU's bf16 hardware,
what trainer.precision means on this machine, and the machine's name for the records.

No jal imports: the experiment (jal.experiment.choose), the training code, the sweep's plan and the benchmark
all ask it, and it asks none of them.
"""

import os
import platform
from pathlib import Path

import torch

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # bf16 hardware: AMX tiles, AVX-512 BF16 dot products

# What each precision trains its parameters and computes in: bf16 = fp32 parameters under bf16 autocast;
# fp64 = float64 everywhere, for checks where float32 rounding, amplified by training, could hide a wrong member.
PARAMETER_DTYPE = {"fp32": torch.float32, "bf16": torch.float32, "fp64": torch.float64}


def cpuinfo_field(name: str, cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The first `name : value` of Linux's CPU description; None where there is none (macOS, Windows)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags as Linux lists them; None where there is no such list."""
    flags = cpuinfo_field("flags", cpuinfo)
    return None if flags is None else set(flags.split())


def run_device(name: str) -> torch.device:
    """The torch device trainer.device names on this machine: auto = cuda where there is a GPU, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model: records and benchmark figures say which machine made them."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpuinfo_field("model name")
    if model is not None and hasattr(os, "sched_getaffinity"):
        return f"{model}, {len(os.sched_getaffinity(0))} cores"
    return platform.processor() or "cpu"


def choose_precision(precision: str, device: torch.device, flags: set[str] | None = None) -> tuple[str, str]:
    """(precision, reason): what trainer.precision means on `device` (fp32, bf16 autocast or fp64), and why,
    for the record.

    auto = bf16 on CUDA; on a CPU, bf16 only where the CPU's flags name bf16 hardware (BF16_CPU_FLAGS; flags
    default: /proc/cpuinfo's). Read from the flags, not timed: the choice is instant, the same on every run
    of a machine and not swayed by whatever else the cores are doing. Without those units bf16 is emulated
    and slower than fp32 (about 10x on an AVX2-only CPU); with AMX a step is about 3x faster (docs/performance.md)."""
    if precision != "auto":
        return precision, f"trainer.precision={precision}"
    if device.type == "cuda":
        return "bf16", "auto: bf16 autocast on CUDA"
    if device.type != "cpu":
        return "fp32", f"auto: fp32 on {device.type}"
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return "fp32", "auto: fp32, the CPU's flags are unknown here (no /proc/cpuinfo)"
    found = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    if found:
        return "bf16", f"auto: bf16 autocast, the CPU has bf16 hardware ({', '.join(found)} in its flags)"
    return "fp32", f"auto: fp32, the CPU has no bf16 hardware (no {' or '.join(BF16_CPU_FLAGS)} in its flags)"


def set_determinism(device: torch.device, deterministic: bool) -> None:
    """cuDNN's and torch's determinism for a run on `device` (trainer.deterministic), set when it starts to
    train: fixed input shapes let cuDNN pick its fastest kernels, unless bitwise repeatable runs are asked for."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable results
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, on an op with no such kernel


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a clock read after it times the work, not its launch)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
