"""Conventions shared by every benchmark file (bench_<area>.py).

Each case is a *group* with one ``role="baseline"`` entry and one or more ``role="fastfp"``
entries measured in the same run; the reporter (bench/report.py) pairs them by group and prints
speed-up = baseline time / fastfp time, the fraction of the device's peak where ``bytes`` or
``flops`` are given, and pass/fail against ``target_speedup`` / ``target_peak`` (per device type).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import peaks, report

QUICK = os.environ.get("FASTFP_BENCH_QUICK", "0") not in ("", "0")


def bench_device() -> torch.device:
    """The device under test: FASTFP_BENCH_DEVICE (cpu|cuda), else cuda when present."""
    name = os.environ.get("FASTFP_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def small_cnn(channels: int = 1, classes: int = 10) -> nn.Module:
    """The bench's small CNN (digits scale: two convolutions, a max-pool), seeded, eval mode."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(32 * 16, classes)).eval()


def measure(benchmark: Any, fn: Callable[[], Any], *, group: str, role: str,
            device: torch.device, rounds: int = 5, warmup: int = 1,
            setup: Callable[[], None] | None = None, **extra: Any) -> Any:
    """Time ``fn()`` with warm-up rounds, synchronising the device inside the timed call.

    ``extra`` lands in ``extra_info``: shape, dtype, bytes (moved per call), flops (per call),
    target_speedup={"cpu": x, "cuda": y}, target_peak={"cuda": 0.75} ...; also understood by
    the reporter (bench/report.py): target_max_s={"cuda": 1e-3} (fastfp time bound),
    peak_precision="bf16" (which FLOP/s peak ``flops`` is compared with; default from dtype), and
    baseline_extrapolated_s on a baseline entry timed on a sample (replaces its measured time),
    paired_baseline_s on a fastfp entry that timed its baseline in alternate rounds (``setup``
    runs, untimed here, before each round).
    After timing, the achieved figures of the best round are added: achieved_gbps,
    achieved_tflops, peak_fraction, peak_of.
    """
    if role not in ("fastfp", "baseline"):
        raise ValueError(f"role: expected 'fastfp' or 'baseline', got {role!r}")
    benchmark.group = group
    benchmark.extra_info.update(role=role, device=device_name(device), device_type=device.type,
                                torch=torch.__version__, **extra)

    def timed():
        out = fn()
        synchronize(device)
        return out

    result = benchmark.pedantic(timed, rounds=rounds, warmup_rounds=warmup, iterations=1,
                                setup=setup)
    _record_achieved(benchmark)
    return result


def _record_achieved(benchmark: Any) -> None:
    """Achieved GB/s, TFLOP/s and fraction of peak (best round) into ``extra_info``, so the raw
    --benchmark-json carries them too; nothing when timing is disabled."""
    if benchmark.disabled:
        return
    seconds = benchmark.stats.stats.min
    info = benchmark.extra_info
    if not seconds or not (info.get("bytes") or info.get("flops")):
        return
    device_peaks = peaks.device_peaks(info["device_type"], info["device"])
    gbps, tflops, frac, of = report.peak_fraction(info, seconds, device_peaks)
    info.update(achieved_gbps=gbps, achieved_tflops=tflops, peak_fraction=frac, peak_of=of)
