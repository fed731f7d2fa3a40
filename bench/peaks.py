"""Peak memory bandwidth and FLOP/s of the device under test, for the "% of peak" column.

GPUs: a table of datasheet figures (dense, i.e. without 2:4 sparsity), matched on the name that
``torch.cuda.get_device_name`` returns. CPUs have no trustworthy datasheet figure for the memory
system a process actually gets, so the CPU bandwidth is *measured* once (a STREAM-like copy of a
buffer much larger than the caches) and the CPU FLOP/s peak is left unknown (no % reported).

Unknown GPU? Set ``FASTFP_PEAK_GBPS`` (and optionally ``FASTFP_PEAK_TFLOPS``, the bf16/fp16
tensor-core figure) to get percentages anyway; the same variables override the table.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

# name -> (memory GB/s, {precision: dense TFLOP/s}); precisions: bf16/fp16 tensor cores,
# tf32 tensor cores, fp32 plain CUDA cores. Figures from NVIDIA's data sheets / whitepapers.
GPU_PEAKS: dict[str, tuple[float, dict[str, float]]] = {
    "H100 SXM": (3350.0, {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    "H100 PCIe": (2000.0, {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    "H100 NVL": (3900.0, {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    "H200 SXM": (4800.0, {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    "H200 NVL": (4800.0, {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    "GH200": (4000.0, {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    "B200": (8000.0, {"bf16": 2250.0, "fp16": 2250.0, "tf32": 1100.0, "fp32": 75.0}),
    "A100 SXM 80GB": (2039.0, {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    "A100 SXM 40GB": (1555.0, {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    "A100 PCIe 80GB": (1935.0, {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    "A100 PCIe 40GB": (1555.0, {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    "L40S": (864.0, {"bf16": 362.1, "fp16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    "L40": (864.0, {"bf16": 181.0, "fp16": 181.0, "tf32": 90.5, "fp32": 90.5}),
    "L4": (300.0, {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    "A10": (600.0, {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    "RTX 4090": (1008.0, {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
    "V100 SXM2": (900.0, {"fp16": 125.0, "fp32": 15.7}),
    "V100 PCIe": (900.0, {"fp16": 112.0, "fp32": 14.0}),
    "T4": (320.0, {"fp16": 65.0, "fp32": 8.1}),
}

# First match wins, on the lower-cased device name; specific variants before generic ones.
_PATTERNS: list[tuple[str, str]] = [
    (r"h100.*pcie", "H100 PCIe"),
    (r"h100.*nvl", "H100 NVL"),
    (r"h200.*nvl", "H200 NVL"),
    (r"gh200", "GH200"),
    (r"h200", "H200 SXM"),
    (r"h100", "H100 SXM"),  # "NVIDIA H100 80GB HBM3" is the SXM part
    (r"b200", "B200"),
    (r"a100.*(80gb.*pcie|pcie.*80gb)", "A100 PCIe 80GB"),
    (r"a100.*pcie", "A100 PCIe 40GB"),
    (r"a100.*80gb", "A100 SXM 80GB"),
    (r"a100", "A100 SXM 40GB"),
    (r"l40s", "L40S"),
    (r"\bl40\b", "L40"),
    (r"\bl4\b", "L4"),
    (r"\ba10\b", "A10"),
    (r"rtx 4090", "RTX 4090"),
    (r"v100.*pcie", "V100 PCIe"),
    (r"v100", "V100 SXM2"),
    (r"\bt4\b", "T4"),
]

# torch dtype names (str(dtype) or short) -> the precision column of the table.
_DTYPE_PRECISION = {
    "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "half": "fp16", "fp16": "fp16",
    "float32": "fp32", "float": "fp32", "fp32": "fp32", "tf32": "tf32",
}


def lookup(device_name: str) -> tuple[str, float, dict[str, float]] | None:
    """``(table key, GB/s, {precision: TFLOP/s})`` for a GPU name, or ``None`` if unknown."""
    name = (device_name or "").lower()
    for pattern, key in _PATTERNS:
        if re.search(pattern, name):
            gbps, tflops = GPU_PEAKS[key]
            return key, gbps, dict(tflops)
    return None


def precision_of(dtype) -> str | None:
    """Map a dtype (``torch.bfloat16``, ``"float16"``, ``"bf16"`` ...) to a table precision."""
    if dtype is None:
        return None
    text = str(dtype).lower().removeprefix("torch.")
    return _DTYPE_PRECISION.get(text)


def measure_cpu_bandwidth(nbytes: int = 1 << 27, repeats: int = 5) -> float:
    """Best-of-``repeats`` copy bandwidth in GB/s (bytes read + bytes written per second).

    A ``torch`` copy between two ``nbytes`` buffers, far beyond the last-level cache, using the
    same threads the benchmarks use: what a memory-bound CPU kernel can hope for at best here.
    """
    import torch

    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults are not bandwidth
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


_cpu_cache: dict[str, float] = {}


def _env_float(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}: expected a positive number, got {value!r}") from None
    if not number > 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return number


def device_peaks(device_type: str, device_name: str, *, measure_cpu: bool = True) -> dict:
    """Peaks to compare against: ``{"name", "gbps", "tflops": {precision: x}, "source"}``.

    ``gbps`` / ``tflops`` are ``None`` / ``{}`` where nothing is known.
    """
    env_gbps, env_tflops = _env_float("FASTFP_PEAK_GBPS"), _env_float("FASTFP_PEAK_TFLOPS")
    peaks: dict[str, Any] = {"name": device_name, "gbps": None, "tflops": {}, "source": None}
    if device_type == "cuda":
        found = lookup(device_name)
        if found:
            key, gbps, tflops = found
            peaks.update(name=key, gbps=gbps, tflops=tflops, source="datasheet")
    elif device_type == "cpu" and measure_cpu:
        if "gbps" not in _cpu_cache:
            _cpu_cache["gbps"] = measure_cpu_bandwidth()
        peaks.update(gbps=round(_cpu_cache["gbps"], 2), source="measured copy bandwidth")
    if env_gbps is not None:
        peaks.update(gbps=env_gbps, source="FASTFP_PEAK_GBPS")
    if env_tflops is not None:
        peaks["tflops"] = {"bf16": env_tflops, "fp16": env_tflops, **{
            k: v for k, v in peaks["tflops"].items() if k not in ("bf16", "fp16")}}
    return peaks
