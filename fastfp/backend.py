"""Which implementation serves each call: availability probes, the forced backend, bookkeeping.

Everything optional (triton, cupy, the compiled extension, a GPU) is imported lazily and probed,
so ``import fastfp`` works on a plain CPU machine. ``FASTFP_BACKEND`` forces one family of
implementations for tests and benchmarks:

- ``auto`` (default): the fastest path available for the tensor's device;
- ``reference``: the paper-literal twins in :mod:`fastfp.reference`;
- ``torch``: the vectorised torch paths (no extension, no Triton, no CuPy);
- ``triton``: ops that have a Triton kernel must use it (error if Triton cannot run);
- ``cuda``: ops that have a CUDA-extension kernel must use it (error if not built / no GPU).

A forced backend that an op does not implement leaves that op on ``auto``.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Any

BACKENDS = ("auto", "reference", "torch", "triton", "cuda")
IMPLEMENTATIONS = ("triton", "cuda", "cpu", "ext", "torch", "reference", "cupy", "numpy")

_last_used: dict[str, str] = {}


def forced() -> str:
    """The backend requested through ``FASTFP_BACKEND`` (read at every call: tests set it)."""
    value = os.environ.get("FASTFP_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"FASTFP_BACKEND: expected one of {', '.join(BACKENDS)}, got {value!r}")
    return value


def record(op: str, impl: str) -> None:
    """Note which implementation served the latest call of ``op``."""
    _last_used[op] = impl


def last_used(op: str) -> str | None:
    """Name of the implementation that served the last call of ``op`` (``None`` before any call)."""
    return _last_used.get(op)


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return None, f"{type(exc).__name__}: {exc}"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def triton_module() -> Any:
    """The ``triton`` module, or ``None`` when it cannot be imported."""
    return _import("triton")[0]


def triton_usable(device: Any) -> bool:
    """Can a Triton kernel run on tensors of ``device``? (CUDA, or CPU under TRITON_INTERPRET=1.)

    ``auto`` dispatch sends only CUDA tensors to Triton; the interpreter serves CPU tensors
    only when ``FASTFP_BACKEND=triton`` forces it (tests of the kernels on CPU).
    """
    if triton_module() is None:
        return False
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return True
    return kind == "cpu" and triton_interpreted()


@functools.cache
def cupy_usable() -> bool:
    """CuPy imports without a GPU but fails at first use, so probe with a real allocation."""
    cp = _import("cupy")[0]
    if cp is None:
        return False
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            return False
        cp.zeros(1).sum().item()
        return True
    except Exception:
        return False


def extension() -> Any:
    """The compiled ``fastfp._ext`` module, or ``None`` when it was not built."""
    return _import("fastfp._ext")[0]


@functools.cache
def extension_info() -> dict[str, Any]:
    ext = extension()
    if ext is None:
        return {"built": False, "openmp": False, "cuda": False, "threads": 0}
    return {"built": True, **dict(ext.build_info())}


def extension_cuda_usable() -> bool:
    return extension_info()["cuda"] and cuda_available()


_INSTALL_HINTS = {
    "triton": "install triton (pip install 'fastfp[gpu]') and use a CUDA device, "
    "or set TRITON_INTERPRET=1 to run Triton kernels on CPU tensors",
    "cuda": "build the extension with a CUDA compiler (pip install --no-build-isolation -e . on a "
    "machine with nvcc) and use a CUDA device",
    "cupy": "install CuPy for your CUDA version (pip install 'fastfp[gpu]') and use a CUDA device",
    "ext": "build the compiled extension (pip install -e . with a C++ compiler and cmake)",
}


def missing(what: str, op: str | None = None) -> RuntimeError:
    """An actionable error for a forced backend that cannot run here."""
    where = f" for {op}" if op else ""
    reason = {"triton": _import("triton")[1], "cupy": _import("cupy")[1],
              "ext": _import("fastfp._ext")[1], "cuda": _import("fastfp._ext")[1]}.get(what)
    detail = f" ({reason})" if reason else ""
    return RuntimeError(
        f"FASTFP_BACKEND={forced()} asks for the {what} implementation{where}, which is not "
        f"available here{detail}: {_INSTALL_HINTS.get(what, 'install it')}, "
        "or set FASTFP_BACKEND=auto."
    )


def report() -> dict[str, Any]:
    """What this machine offers to fastfp."""
    import torch

    triton = triton_module()
    cp = _import("cupy")[0]
    return {
        "fastfp_backend": forced(),
        "torch": torch.__version__,
        "cuda": cuda_available(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda_available() else None,
        "triton": getattr(triton, "__version__", None),
        "triton_interpreter": triton_interpreted(),
        "cupy": getattr(cp, "__version__", None),
        "cupy_usable": cupy_usable(),
        "extension": extension_info(),
        "cpu_threads": torch.get_num_threads(),
    }


def format_report(info: dict[str, Any] | None = None) -> str:
    info = report() if info is None else info
    ext = info["extension"]
    ext_text = (
        f"built (OpenMP: {ext['openmp']}, CUDA: {ext['cuda']}, threads: {ext['threads']})"
        if ext["built"] else "not built (torch fallbacks are used)"
    )
    rows = [
        ("FASTFP_BACKEND", info["fastfp_backend"]),
        ("torch", info["torch"]),
        ("CUDA", f"yes ({info['cuda_device']})" if info["cuda"] else "no"),
        ("Triton", info["triton"] or "not installed"),
        ("Triton interpreter", "on" if info["triton_interpreter"] else "off"),
        ("CuPy", (info["cupy"] + (" (usable)" if info["cupy_usable"] else " (no GPU: unusable)"))
         if info["cupy"] else "not installed"),
        ("extension", ext_text),
        ("CPU threads", str(info["cpu_threads"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
