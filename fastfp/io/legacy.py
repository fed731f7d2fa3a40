"""Files of fastfp 0.1.0, converted to the sealed container (``fastfp convert``).

The readers refuse the 0.1.0 layouts (:class:`~fastfp.io.formats.LegacyFileError`): their
checksums were weaker (a fingerprint's covered the tensor bytes only, or nothing) and a file
without one cannot be told from one whose checksum was stripped. :func:`convert_legacy` reads a
0.1.0 fingerprint, FBI database or shard, checks its old checksum where it has one, and writes
the current sealed format atomically, so the conversion is an explicit step a person takes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastfp import _validate

from .container import pack, parse_safetensors, seal_matches, unpack
from .files import check_target, read_bytes, write_bytes
from .formats import DATABASE, FINGERPRINT, FORMATS, Format, legacy_format
from .lock import lock

_DATABASE_KEYS = ("names", "families", "k", "num_classes", "num_inputs", "digest")


@dataclass(frozen=True)
class Converted:
    """What :func:`convert_legacy` did: ``format`` (the current name) of the file written to
    ``out`` from ``path``; ``checked``: whether the 0.1.0 file had a checksum, and it matched."""

    path: Path
    out: Path
    format: str
    version: str
    checked: bool


def _fingerprint_digest(inputs: torch.Tensor, labels: torch.Tensor) -> str:
    """0.1.0 fingerprints: SHA-256 of the tensor bytes only (inputs, then labels)."""
    return hashlib.sha256(b"".join(t.contiguous().numpy().tobytes() for t in (inputs, labels))
                          ).hexdigest()


def _database_digest(tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """0.1.0 databases: SHA-256 of the metadata JSON (but its checksum), then each array's
    name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "sha256"},
                                  sort_keys=True).encode())
    for key in sorted(tensors):
        a = np.ascontiguousarray(tensors[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _json_dict(text: str, source: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"{source}: not a 0.1.0 {what} (its metadata is not a JSON object)")
    return value


def _mismatch(source: str, fmt: Format) -> ValueError:
    return ValueError(f"{source}: checksum mismatch: not an intact 0.1.0 {fmt.noun} (corrupt, "
                      "or its header was rewritten); nothing converted")


def _upgrade(source: str, fmt: Format, tensors: dict[str, torch.Tensor],
             metadata: dict[str, str]) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
    """The tensors and meta of the current layout, from a checked 0.1.0 file."""
    digest = metadata.get("sha256")
    if fmt is FINGERPRINT:
        if set(tensors) != {"inputs", "labels"}:
            raise ValueError(f"{source}: not a 0.1.0 fingerprint (tensors {sorted(tensors)}, "
                             "expected 'inputs' and 'labels')")
        if digest is not None and digest != _fingerprint_digest(tensors["inputs"],
                                                                tensors["labels"]):
            raise _mismatch(source, fmt)
        return tensors, _json_dict(metadata.get("meta", "{}"), source, fmt.noun), digest is not None
    if fmt is DATABASE:
        meta = _json_dict(metadata["fastfp"], source, fmt.noun)
        missing = [k for k in _DATABASE_KEYS if k not in meta and k != "digest"]
        if missing or "topk" not in tensors:
            raise ValueError(f"{source}: not a 0.1.0 FBI database (it lacks "
                             f"{missing or ['topk']})")
        digest = meta.get("sha256")
        arrays = {k: t.numpy() for k, t in tensors.items()}
        if digest is not None and digest != _database_digest(arrays, meta):
            raise _mismatch(source, fmt)
        return tensors, {k: meta.get(k) for k in _DATABASE_KEYS}, digest is not None
    # shards: the 0.1.0 seal is the container's seal, over a header without format and version
    if digest is not None and not seal_matches(tensors, metadata):
        raise _mismatch(source, fmt)
    try:
        item = int(metadata["item"])
    except ValueError:
        raise ValueError(f"{source}: not a 0.1.0 shard (item {metadata['item']!r})") from None
    meta = {"settings_hash": metadata["settings_hash"], "item": item,
            "meta": _json_dict(metadata.get("meta", "{}"), source, fmt.noun)}
    return tensors, meta, digest is not None


def convert_legacy(path: str | os.PathLike[str],
                   out: str | os.PathLike[str] | None = None) -> Converted:
    """Convert the fastfp 0.1.0 file ``path`` (fingerprint, FBI database or shard) to the current
    sealed container, written atomically to ``out`` (default: ``path`` itself, upgraded in
    place). Its old checksum must match where it has one. ``out`` must not exist unless it is
    ``path``; it is checked before anything is read. Returns what was done."""
    path = _validate.path("path", path)
    target = path if out is None else _validate.path("out", out)
    if out is not None and os.path.lexists(target) and not (
            path.exists() and os.path.samefile(path, target)):
        raise FileExistsError(f"out: {str(target)!r} exists; refusing to replace it (give a new "
                              f"path, or leave --out out to upgrade {str(path)!r} in place)")
    check_target(target, "out" if out is not None else "path")
    source = str(path)
    data = read_bytes(path, name="path")
    try:
        tensors, metadata = parse_safetensors(data)
    except ValueError as exc:
        raise ValueError(f"{source}: not a file of fastfp 0.1.0 (unreadable safetensors file: "
                         f"{exc})") from None
    fmt = legacy_format(metadata)
    if fmt is None:
        current = next((f for f in FORMATS if f.name == metadata.get("format")), None)
        if current is not None and metadata.get("version") == current.version:
            raise ValueError(f"{source}: already {current.what} of format version "
                             f"{current.version}; nothing to convert")
        raise ValueError(f"{source}: not a file of fastfp 0.1.0 (expected a fingerprint of "
                         "format version 1, an FBI database or a shard of fastfp 0.1.0)")
    tensors, meta, checked = _upgrade(source, fmt, tensors, metadata)
    blob = pack(tensors, meta, format=fmt)
    unpack(blob, format=fmt, source=str(target))  # what is written reads back: never half a file
    name = "out" if out is not None else "path"
    # a database may be shared by builds that hold its lock: never replace it under one
    with lock(target, name=name) if fmt is DATABASE else contextlib.nullcontext():
        write_bytes(target, blob, name=name)
    return Converted(path, target, fmt.name, fmt.version, checked)
