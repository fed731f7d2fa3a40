"""Deprecated: the file helpers moved to :mod:`fastfp.io`; this name keeps old imports working."""

from __future__ import annotations

import warnings

from .io import (  # noqa: F401  (re-exported)
    LockTimeout,
    append_records,
    atomic_path,
    check_target,
    lock,
    read_bytes,
    read_json,
    read_records,
    read_safetensors,
    safetensors_bytes,
    seal_matches,
    sealed_safetensors,
    write_bytes,
    write_json,
    write_text,
)

warnings.warn("fastfp.store is deprecated: import fastfp.io instead", DeprecationWarning,
              stacklevel=2)
