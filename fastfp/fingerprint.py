"""A fingerprint: inputs, their target labels and how they were made, stored as one .safetensors file.

Layout of the file: two tensors, ``inputs`` (float32, (num, C, H, W)) and ``labels`` (int64, (num,)),
and the safetensors header metadata ``{"format": "fastfp.fingerprint", "version": "1",
"meta": <JSON of meta>, "sha256": <hex digest of the tensor data>}``. Saving goes through
:mod:`fastfp.store` (temporary file, fsync, rename), so an interrupted save never leaves half a
file; loading checks everything before returning (the checksum included, when the file has one),
so a corrupt, truncated or foreign file raises ``ValueError`` and nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

FORMAT = "fastfp.fingerprint"
FORMAT_VERSION = "1"


def _digest(inputs: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 of the tensor data (inputs then labels, contiguous little-endian bytes)."""
    h = hashlib.sha256()
    for t in (inputs, labels):
        h.update(t.detach().cpu().contiguous().numpy().data)
    return h.hexdigest()


class Fingerprint:
    """``inputs`` float32 (num, C, H, W) on CPU, ``labels`` int64 (num,), ``meta`` a JSON-able dict."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, meta: dict | None = None):
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
        from safetensors.torch import save

        header = {"format": FORMAT, "version": FORMAT_VERSION,
                  "meta": json.dumps(self.meta, sort_keys=True),
                  "sha256": _digest(self.inputs, self.labels)}
        return save({"inputs": self.inputs, "labels": self.labels}, metadata=header)

    def save(self, path) -> Path:
        """Write the fingerprint to ``path`` (atomically); returns the path."""
        from . import store

        path = Path(path)
        store.write_bytes(path, self.to_bytes())
        return path

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "data") -> "Fingerprint":
        from safetensors.torch import load

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
        if metadata.get("version") != FORMAT_VERSION:
            raise bad(f"format version {metadata.get('version')!r}, this fastfp reads "
                      f"{FORMAT_VERSION!r}")
        try:
            meta = json.loads(metadata.get("meta", "{}"))
        except ValueError:
            raise bad("metadata is not valid JSON") from None
        if not isinstance(meta, dict):
            raise bad("metadata is not a JSON object")
        try:
            tensors = load(bytes(data))
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
        # safetensors checks the layout, not the values: a flipped bit in the tensor data would
        # load as a silently different fingerprint. Files from before the checksum have none.
        digest = metadata.get("sha256")
        if digest is not None and digest != _digest(inputs, labels):
            raise bad("checksum mismatch: the tensor data is corrupt")
        if labels.numel() and int(labels.min()) < 0:
            raise bad("negative labels")
        return cls(inputs, labels, meta)

    @classmethod
    def load(cls, path) -> "Fingerprint":
        """Read a fingerprint written by :meth:`save`; anything else raises ``ValueError``."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"path: {str(path)!r} does not exist")
        if path.is_dir():
            raise IsADirectoryError(f"path: {str(path)!r} is a folder, expected a .safetensors file")
        return cls.from_bytes(path.read_bytes(), source=str(path))
