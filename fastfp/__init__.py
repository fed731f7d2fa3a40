"""fastfp: fast, faithful DNN fingerprinting.

Characteristic examples (C, RC, RC+GM, LTRC; Wang et al., IJCAI'21) and FBI, fingerprinting with
benign inputs (Maho, Furon, Le Merrer, TIFS'23), with compiled kernels where they pay off.
Heavy optional pieces (Triton, CuPy, the compiled extension) load lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from . import backend  # noqa: E402  (light: no optional imports at module level)

_SUBMODULES = ("cexamples", "ops", "noise", "fbi", "metrics", "variants", "zoo", "attacks", "store",
               "reference", "fingerprint", "distributed")


def __getattr__(name: str) -> Any:
    # Submodules load on first access so that `import fastfp` stays cheap.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "Fingerprint":
        return importlib.import_module(".fingerprint", __name__).Fingerprint
    if name in ("highpass", "sign_step"):  # ops imports torch: only when used
        return getattr(importlib.import_module(".ops", __name__), name)
    raise AttributeError(f"module 'fastfp' has no attribute {name!r}")


__all__ = ["__version__", "backend", "highpass", "sign_step", "Fingerprint", *_SUBMODULES]
