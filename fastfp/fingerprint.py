"""A fingerprint: inputs, their target labels and how they were made, in one .safetensors file.

Layout of the file: two tensors, ``inputs`` (float32, (num, C, H, W)) and ``labels`` (int64,
(num,)), and the safetensors header metadata ``{"format": "fastfp.fingerprint", "version": "2",
"meta": <JSON of meta>, "sha256": <checksum>}``; the checksum seals the whole file, header and
tensors (:func:`fastfp.store.sealed_safetensors`), so a flipped bit anywhere is seen. Version 1
files (checksum of the tensor data only, or none) still load. Same fingerprint, same bytes: the
header keys are sorted. Saving goes through :mod:`fastfp.store`
(temporary file, fsync, rename; never over a non-regular file); loading reads regular files only
and checks everything before returning, so a corrupt, truncated or foreign file raises
``ValueError`` and nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "fastfp.fingerprint"
FORMAT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")


def _digest_v1(inputs: torch.Tensor, labels: torch.Tensor) -> str:
    """Version 1: SHA-256 of the tensor data (inputs then labels, little-endian bytes)."""
    data = (t.detach().cpu().contiguous().numpy().tobytes() for t in (inputs, labels))
    return hashlib.sha256(b"".join(data)).hexdigest()


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
        from .store import sealed_safetensors

        header = {"format": FORMAT, "version": FORMAT_VERSION,
                  "meta": json.dumps(self.meta, sort_keys=True)}
        return sealed_safetensors({"inputs": self.inputs, "labels": self.labels}, header)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fingerprint to ``path`` (atomically); returns the path."""
        from . import store

        path = store.check_target(path)  # before the bytes are made
        store.write_bytes(path, self.to_bytes())
        return path

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "data") -> Fingerprint:
        """Parse and check a fingerprint file's bytes; ``source`` names it in errors."""
        from safetensors.torch import load

        from .store import seal_matches

        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expected the bytes of a fingerprint file, got "
                            f"{type(data).__name__}")
        data = bytes(data)

        def bad(why: str) -> ValueError:
            return ValueError(f"{source}: not a fastfp fingerprint ({why})")

        if len(data) < 8:
            raise bad(f"file too short: {len(data)} bytes")
        header_len = int.from_bytes(data[:8], "little")
        if header_len <= 0 or 8 + header_len > len(data):
            raise bad("truncated or not a safetensors file")
        try:
            header = json.loads(data[8:8 + header_len].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise bad("unreadable safetensors header") from None
        if not isinstance(header, dict):
            raise bad("unreadable safetensors header")
        metadata = header.get("__metadata__") or {}
        if metadata.get("format") != FORMAT:
            raise bad(f"header format is {metadata.get('format')!r}, expected {FORMAT!r}")
        version = metadata.get("version")
        if version not in READABLE_VERSIONS:
            raise bad(f"format version {version!r}, this fastfp reads "
                      f"{' and '.join(map(repr, READABLE_VERSIONS))}")
        meta_json = metadata.get("meta", "{}")
        if not isinstance(meta_json, str):
            raise bad("metadata is not a JSON string")
        try:
            meta = json.loads(meta_json)
        except ValueError:
            raise bad("metadata is not valid JSON") from None
        if not isinstance(meta, dict):
            raise bad("metadata is not a JSON object")
        try:
            tensors = load(data)
        except Exception as exc:  # safetensors raises its own error type for bad offsets
            raise bad(f"corrupt or truncated tensor data: {exc}") from None
        if set(tensors) != {"inputs", "labels"}:
            raise bad(f"expected tensors 'inputs' and 'labels', found {sorted(tensors)}")
        inputs, labels = tensors["inputs"], tensors["labels"]
        if inputs.dtype != torch.float32 or inputs.dim() != 4:
            raise bad(f"inputs must be float32 (num, C, H, W), got {inputs.dtype} "
                      f"{tuple(inputs.shape)}")
        if labels.dtype != torch.int64 or labels.shape != inputs.shape[:1]:
            raise bad(f"labels must be int64 ({inputs.shape[0]},), got {labels.dtype} "
                      f"{tuple(labels.shape)}")
        # safetensors checks the layout, not the values: a flipped bit in the tensor data or in
        # the meta would load as a silently different fingerprint. Version 1 files checksum the
        # tensor data only, or (the oldest) nothing.
        digest = metadata.get("sha256")
        if version == FORMAT_VERSION:
            if digest is None:
                raise bad("no checksum in a version 2 file")
            if not seal_matches(tensors, metadata):
                raise bad("checksum mismatch: the file is corrupt")
        elif digest is not None and digest != _digest_v1(inputs, labels):
            raise bad("checksum mismatch: the tensor data is corrupt")
        if labels.numel() and int(labels.min()) < 0:
            raise bad("negative labels")
        return cls(inputs, labels, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Fingerprint:
        """Read a fingerprint written by :meth:`save`; anything else raises ``ValueError``."""
        from .store import read_bytes

        data = read_bytes(path, name="path")  # a regular file only; TypeError for a non-path
        return cls.from_bytes(data, source=str(path))
