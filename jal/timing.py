"""Timing training steps on a device, for the benchmark and the sweep's speed probe: every clock read waits for
the device first, so the time lands in the step (or phase) that spent it. Images/s after a warm-up, a step cut
into phases, peak memory and the synchronising CUDA calls a step makes."""

import resource
import time
import warnings

import torch

from jal.device import sync

PHASES = ("data_bookkeeping", "forward_backward", "optimizer")


class PhaseTimer:
    """Wall time per phase; mark(phase) waits for the device first, so time lands in the phase that spent it.
    A phase is the time from the mark before it to its own mark."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, dict.fromkeys(PHASES, 0.0)

    def start(self) -> None:
        sync(self.device)
        self.last = time.perf_counter()

    def mark(self, phase: str) -> None:
        sync(self.device)
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.last = now

    def summary(self, steps: int) -> dict:
        total = sum(self.seconds.values())
        ms = {f"{p}_ms": 1000 * s / steps for p, s in self.seconds.items()}
        pct = {f"{p}_pct": 100 * s / total if total else 0.0 for p, s in self.seconds.items()}
        return {**ms, **pct, "step_ms": 1000 * total / steps, "steps": steps}


def images_per_second(run_steps, steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """(images/s, seconds) of `run_steps(steps)` (which returns how many images it trained on), after
    `run_steps(warmup)` (cuDNN autotuning, allocator, torch.compile, DataLoader workers starting)."""
    if warmup:
        run_steps(warmup)
    sync(device)
    started = time.perf_counter()
    images = run_steps(steps)
    sync(device)
    seconds = time.perf_counter() - started
    return images / seconds, seconds


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated since the last reset; on CPU this process's peak RSS so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def count_host_syncs(fn, device: torch.device) -> int | None:
    """How many synchronising CUDA calls `fn()` makes (torch's sync debug mode); None off CUDA."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)
