"""THE sealed container: safetensors tensors + JSON metadata under one checksum.

Layout: a safetensors file (an 8-byte little-endian header length, a JSON header, the tensor
bytes) whose header metadata is exactly ``{"format": NAME, "version": V, "meta": <JSON of a
dict>, "sha256": SEAL}``. SEAL is the SHA-256 of the same file written without ``sha256``, so it
covers every tensor's name, dtype, shape and bytes and every metadata string: a flipped bit
anywhere is seen. Same content, same bytes: header keys are sorted and tensors laid out in a
fixed order (largest element size first, then by name), each aligned to its element size.

:func:`pack` is the one writer and :func:`unpack` the one reader of these files (fingerprints, FBI
databases, shards, zoo cache entries). The header is parsed here, with every offset checked
before any tensor is made: a truncated, foreign, unsealed, resealed-by-hand or unknown-version
file raises ``ValueError`` with one line naming the file and what was expected, and nothing is
half-loaded. :func:`read_safetensors` reads safetensors files of other writers (a suspect's
weights, a party's answers) with the same parser.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .formats import Format, LegacyFileError, legacy_format

_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
           torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
           torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
for _bits in (16, 32, 64):  # unsigned wide integers exist in torch >= 2.3 only
    if hasattr(torch, f"uint{_bits}"):
        _DTYPES[getattr(torch, f"uint{_bits}")] = f"U{_bits}"
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")):
    if hasattr(torch, _name):
        _DTYPES[getattr(torch, _name)] = _code
_CODES = {code: dtype for dtype, code in _DTYPES.items()}
_MAX_HEADER = 100 * 2**20  # the safetensors limit: a bigger header is not a safetensors file
_KEYS = {"format", "version", "meta", "sha256"}

Tensors = Mapping[str, "torch.Tensor | np.ndarray"]


# ------------------------------------------------------------------------------ bytes
def safetensors_bytes(tensors: Tensors, metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors file whose bytes depend only on the content: sorted header keys (the
    ``safetensors`` package orders the metadata differently from one process to the next).

    Tensors are laid out by element size, largest first, then by name, so every tensor's data is
    aligned to its element size.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors: expected a mapping name -> tensor, got {type(tensors).__name__}")
    items = {}
    for key, value in tensors.items():
        if not isinstance(key, str) or key == "__metadata__":
            raise ValueError(f"tensors: {key!r} cannot name a tensor (a string other than "
                             "'__metadata__')")
        t = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) \
            else value
        if not isinstance(t, torch.Tensor) or t.dtype not in _DTYPES:
            raise TypeError(f"tensors[{key!r}]: expected a tensor of one of "
                            f"{', '.join(map(str, _DTYPES))}, got {getattr(t, 'dtype', type(t))}")
        items[key] = t.detach().cpu().contiguous()
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for key in sorted(items, key=lambda k: (-items[k].element_size(), k)):
        t = items[key]
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[key] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    return len(blob).to_bytes(8, "little") + blob + b"".join(chunks)


def _seal(tensors: Tensors, metadata: Mapping[str, str]) -> str:
    meta = {k: v for k, v in metadata.items() if k != "sha256"}
    return hashlib.sha256(safetensors_bytes(tensors, meta)).hexdigest()


def sealed_safetensors(tensors: Tensors, metadata: Mapping[str, str]) -> bytes:
    """:func:`safetensors_bytes` whose metadata holds ``sha256``: the digest of the same file
    written without it, so :func:`seal_matches` sees a changed byte in the header or data."""
    return safetensors_bytes(tensors, {**metadata, "sha256": _seal(tensors, metadata)})


def seal_matches(tensors: Tensors, metadata: Mapping[str, str]) -> bool:
    """Whether ``metadata["sha256"]`` is the seal of these tensors and the rest of the metadata."""
    return metadata.get("sha256") == _seal(tensors, metadata)


# ------------------------------------------------------------------------------ parsing
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):  # two entries for one name: which one a reader takes varies
        raise ValueError(f"duplicate keys {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_safetensors(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (CPU copies) and header metadata of the safetensors file ``data``. Every length,
    dtype, shape and offset is checked before a tensor is made; the tensors must tile the data
    exactly. ValueError saying what is wrong (without a file name) otherwise."""
    if len(data) < 8:
        raise ValueError(f"file too short: {len(data)} bytes")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"truncated or not a safetensors file (header of {n} bytes, file of "
                         f"{len(data)})")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"unreadable header ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("__metadata__ is not a map of strings")
    size = len(data) - 8 - n
    spans = []
    for key, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"tensor {key!r}: expected dtype, shape and data_offsets")
        dtype = _CODES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise ValueError(f"tensor {key!r}: unknown dtype {info['dtype']!r}")
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(_whole(d) for d in shape):
            raise ValueError(f"tensor {key!r}: bad shape {shape!r}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_whole, offsets)) \
                or not offsets[0] <= offsets[1] <= size:
            raise ValueError(f"tensor {key!r}: data offsets {offsets!r} outside the "
                             f"{size} bytes of data (truncated file?)")
        nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if offsets[1] - offsets[0] != nbytes:
            raise ValueError(f"tensor {key!r}: {offsets[1] - offsets[0]} bytes for shape "
                             f"{shape} of {info['dtype']} ({nbytes} bytes)")
        spans.append((offsets[0], offsets[1], key, dtype, shape))
    end = 0
    for begin, stop, key, _, _ in sorted(spans):
        if begin != end:  # a hole or an overlap: bytes no tensor accounts for, or shared ones
            raise ValueError(f"tensor {key!r}: data starts at byte {begin}, expected {end}")
        end = stop
    if end != size:
        raise ValueError(f"{size - end} bytes of data after the last tensor")
    body = memoryview(data)[8 + n:]
    tensors = {}
    for begin, stop, key, dtype, shape in spans:
        raw = np.frombuffer(body[begin:stop], dtype=np.uint8).copy()  # own memory, aligned
        t = torch.from_numpy(raw).view(dtype) if raw.size else torch.empty(0, dtype=dtype)
        if dtype == torch.bool and raw.size and int(raw.max()) > 1:
            raise ValueError(f"tensor {key!r}: bool values other than 0 and 1")
        tensors[key] = t.reshape(shape)
    return tensors, metadata


def read_safetensors(data: bytes, *, name: str = "path"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file of any writer (a suspect's weights, answers);
    ValueError naming ``name`` when it is unreadable or carries a ``sha256`` seal that does not
    match. fastfp's own files are read with :func:`unpack`, which also requires the seal."""
    try:
        tensors, meta = parse_safetensors(data)
    except ValueError as exc:
        raise ValueError(f"{name}: unreadable safetensors file ({exc})") from None
    if "sha256" in meta and not seal_matches(tensors, meta):
        raise ValueError(f"{name}: checksum mismatch (corrupt file)")
    meta.pop("sha256", None)
    return tensors, meta


# ------------------------------------------------------------------------------ the container
def _format_args(format: Format | str, version: str | None, what: str | None
                 ) -> tuple[str, str | None, str]:
    if isinstance(format, Format):
        return format.name, version or format.version, what or format.what
    if not isinstance(format, str) or not format:
        raise TypeError(f"format: expected a Format or a non-empty string, got {format!r}")
    return format, version, what or f"a {format} file"


def pack(tensors: Tensors, meta: Mapping[str, Any], *, format: Format | str,
         version: str | None = None) -> bytes:
    """The bytes of a sealed container holding ``tensors`` (name -> tensor or numpy array) and
    ``meta`` (a JSON-serialisable dict), of ``format`` (a :class:`Format`, whose version is the
    default, or a name with an explicit ``version``). Same content, same bytes."""
    name, version, _ = _format_args(format, version, None)
    if not isinstance(version, str) or not version:
        raise TypeError(f"version: expected a non-empty string, got {version!r}")
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta: expected a dict, got {type(meta).__name__}")
    try:
        meta_json = json.dumps(dict(meta), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"meta: must be JSON-serialisable ({exc})") from None
    return sealed_safetensors(tensors, {"format": name, "version": version, "meta": meta_json})


def unpack(data: bytes, *, format: Format | str, versions: Sequence[str] | None = None,
           source: str = "data", what: str | None = None
           ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and meta of a sealed container written by :func:`pack`, checked whole first.

    ``format``: the expected kind (a :class:`Format`, or a name with ``versions``); ``versions``:
    the versions this reader takes (default: the Format's); ``source`` names the file in
    errors; ``what`` is what the messages call it ("a fastfp fingerprint"). Raises
    :class:`LegacyFileError` for a file of fastfp 0.1.0, ValueError naming ``source`` for a
    truncated or foreign file, another format, an unknown version, a missing or wrong seal.
    """
    name, version, what = _format_args(format, None, what)
    versions = tuple(versions) if versions is not None else (version,) if version else ()
    if not versions or not all(isinstance(v, str) for v in versions):
        raise TypeError(f"versions: expected the readable versions as strings, got {versions!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected the bytes of {what}, got {type(data).__name__}")
    noun = what.split(" ", 1)[1] if what.startswith(("a ", "an ")) else what
    try:
        tensors, metadata = parse_safetensors(data)
    except ValueError as exc:
        raise ValueError(f"{source}: not {what} (unreadable safetensors file: {exc})") from None
    got = metadata.get("format")
    legacy = legacy_format(metadata)
    if legacy is not None and legacy.name == name:
        raise LegacyFileError(source)
    if got != name:
        raise ValueError(f"{source}: not {what} (header format is {got!r}, expected {name!r})")
    if metadata.get("version") not in versions:
        raise ValueError(f"{source}: {noun} of format version {metadata.get('version')!r}; this "
                         f"fastfp reads version {' and '.join(versions)}")
    if "sha256" not in metadata:
        raise ValueError(f"{source}: {noun} without its checksum (no sha256 in the header: "
                         "the seal was removed); refusing to read it unchecked")
    if set(metadata) != _KEYS:
        raise ValueError(f"{source}: not {what} (header keys {sorted(metadata)}, expected "
                         f"{sorted(_KEYS)})")
    if not seal_matches(tensors, metadata):
        raise ValueError(f"{source}: corrupt {noun} (checksum mismatch: a byte of its header or "
                         "tensors changed)")
    try:
        meta = json.loads(metadata["meta"])
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: not {what} (its meta is not a JSON object)")
    return tensors, meta
