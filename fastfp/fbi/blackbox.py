"""Deprecated home of the black boxes: they live in :mod:`fastfp.blackbox` (what the checked
party supplies, used by both methods). ``fastfp.fbi.blackbox.X`` keeps working."""

from __future__ import annotations

import warnings
from typing import Any

from fastfp.blackbox import (  # noqa: F401
    CACHE_HEADER,
    GRAMMAR,
    BlackBox,
    BudgetExceeded,
    FunctionBlackBox,
    Onnx,
    OpenInference,
    Recorded,
    ServiceUnavailable,
    image_digest,
    resolve,
    top_k_labels,  # noqa: F401  (this module exported it)
)

__all__ = ["CACHE_HEADER", "GRAMMAR", "BlackBox", "BudgetExceeded", "FunctionBlackBox", "Onnx",
           "OpenInference", "Recorded", "ServiceUnavailable", "image_digest", "resolve"]


def __getattr__(name: str) -> Any:
    if name == "Callable":  # its old name shadowed typing.Callable
        warnings.warn("fastfp.fbi.blackbox.Callable is deprecated: use "
                      "fastfp.blackbox.FunctionBlackBox", DeprecationWarning, stacklevel=2)
        return FunctionBlackBox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
