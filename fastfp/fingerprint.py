"""A fingerprint: inputs, their target labels and how they were made, in one .safetensors file.

The file is :mod:`fastfp.io`'s sealed container of format ``fastfp.fingerprint``, version 2: two
tensors, ``inputs`` (float32, (num, C, H, W)) and ``labels`` (int64, (num,)), the meta as JSON,
and one checksum over all of it, so a flipped bit anywhere is seen. Same fingerprint, same bytes.
Saving is atomic (temporary file, fsync, rename; never over a non-regular file); loading reads
regular files only and checks everything before returning, so a corrupt, truncated, unsealed or
foreign file raises ``ValueError`` and nothing is half-loaded. Files of fastfp 0.1.0 (version 1)
are refused with the ``fastfp convert`` command that upgrades them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .io import FINGERPRINT, check_target, pack, read_bytes, unpack, write_bytes

FORMAT = FINGERPRINT.name
FORMAT_VERSION = FINGERPRINT.version
READABLE_VERSIONS = (FINGERPRINT.version,)


class Fingerprint:
    """``inputs`` float32 (num, C, H, W) on CPU, ``labels`` int64 (num,), ``meta`` a JSON dict."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor,
                 meta: dict[str, Any] | None = None) -> None:
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs: expected a torch.Tensor, got {type(inputs).__name__}")
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
        if inputs.dim() != 4:
            raise ValueError(f"inputs: expected shape (num, C, H, W), got {tuple(inputs.shape)}")
        if not inputs.is_floating_point():
            raise TypeError(f"inputs: expected a floating-point tensor, got {inputs.dtype}")
        if labels.dim() != 1 or labels.shape[0] != inputs.shape[0]:
            raise ValueError(f"labels: expected shape ({inputs.shape[0]},) to match inputs, "
                             f"got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels: expected an integer tensor, got {labels.dtype}")
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError("labels: expected non-negative class indices")
        meta = {} if meta is None else meta
        if not isinstance(meta, dict):
            raise TypeError(f"meta: expected a dict, got {type(meta).__name__}")
        try:
            # Round-trip through JSON now, so save() can never fail half-way on an odd value.
            meta = json.loads(json.dumps(meta))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"meta: must be JSON-serialisable ({exc})") from None
        self.inputs = inputs.detach().to("cpu", torch.float32).contiguous()
        self.labels = labels.detach().to("cpu", torch.int64).contiguous()
        self.meta = meta

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        shape = tuple(self.inputs.shape[1:])
        method = self.meta.get("method", "?")
        return f"Fingerprint(num={len(self)}, input_shape={shape}, method={method!r})"

    # ---------------------------------------------------------------- files

    def to_bytes(self) -> bytes:
        """The file's bytes (the same for the same fingerprint)."""
        return pack({"inputs": self.inputs, "labels": self.labels}, self.meta, format=FINGERPRINT)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fingerprint to ``path`` (atomically); returns the path."""
        path = check_target(path)  # before the bytes are made
        write_bytes(path, self.to_bytes())
        return path

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "data") -> Fingerprint:
        """Parse and check a fingerprint file's bytes; ``source`` names it in errors."""
        tensors, meta = unpack(data, format=FINGERPRINT, versions=READABLE_VERSIONS,
                               source=source)

        def bad(why: str) -> ValueError:
            return ValueError(f"{source}: not a fastfp fingerprint ({why})")

        if set(tensors) != {"inputs", "labels"}:
            raise bad(f"expected tensors 'inputs' and 'labels', found {sorted(tensors)}")
        inputs, labels = tensors["inputs"], tensors["labels"]
        if inputs.dtype != torch.float32 or inputs.dim() != 4:
            raise bad(f"inputs must be float32 (num, C, H, W), got {inputs.dtype} "
                      f"{tuple(inputs.shape)}")
        if labels.dtype != torch.int64 or labels.shape != inputs.shape[:1]:
            raise bad(f"labels must be int64 ({inputs.shape[0]},), got {labels.dtype} "
                      f"{tuple(labels.shape)}")
        if labels.numel() and int(labels.min()) < 0:
            raise bad("negative labels")
        return cls(inputs, labels, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Fingerprint:
        """Read a fingerprint written by :meth:`save`; anything else raises ``ValueError``
        (:class:`fastfp.io.LegacyFileError` for a file of fastfp 0.1.0)."""
        data = read_bytes(path, name="path")  # a regular file only; TypeError for a non-path
        return cls.from_bytes(data, source=str(path))
