"""Files: atomic writes, locks, journals, PNG images and THE sealed container.

- :mod:`~fastfp.io.files`: atomic writes (temporary, fsync, rename), reads of regular files only,
  sealed JSON;
- :mod:`~fastfp.io.lock`: one writer at a time for a shared file;
- :mod:`~fastfp.io.journal`: append-only, checksummed JSON lines (the answer cache);
- :mod:`~fastfp.io.images`: 8-bit PNG write and read;
- :mod:`~fastfp.io.container`: safetensors tensors + JSON metadata under one checksum, the one
  writer (:func:`pack`) and reader (:func:`unpack`) of fingerprints, FBI databases, shards and
  zoo cache entries;
- :mod:`~fastfp.io.legacy`: :func:`convert_legacy` for the files of fastfp 0.1.0.
"""

from __future__ import annotations

from .container import (
    pack,
    parse_safetensors,
    read_safetensors,
    safetensors_bytes,
    seal_matches,
    sealed_safetensors,
    unpack,
)
from .files import (
    MAX_ARRAY_BYTES,
    MAX_FILE_BYTES,
    MAX_JSON_DEPTH,
    atomic_path,
    canonical_json,
    check_depth,
    check_size,
    check_target,
    npy_from,
    open_regular,
    parse_json,
    read_bytes,
    read_json,
    read_npy,
    write_bytes,
    write_json,
    write_text,
)
from .formats import (
    DATABASE,
    FINGERPRINT,
    SHARD,
    ZOO_MODEL,
    Format,
    LegacyFileError,
    legacy_format,
)
from .images import PNG_MODES, png_bytes, read_png_folder
from .journal import append_records, read_records
from .legacy import Converted, convert_legacy
from .lock import LockTimeout, lock

__all__ = [
    "MAX_ARRAY_BYTES", "MAX_FILE_BYTES", "MAX_JSON_DEPTH", "check_depth", "check_size",
    "npy_from", "parse_json", "read_npy",
    "DATABASE", "FINGERPRINT", "PNG_MODES", "SHARD", "ZOO_MODEL", "Converted", "Format",
    "LegacyFileError", "LockTimeout", "append_records", "atomic_path", "canonical_json",
    "check_target", "convert_legacy", "legacy_format", "lock", "open_regular", "pack",
    "parse_safetensors", "png_bytes", "read_bytes", "read_json", "read_png_folder",
    "read_records", "read_safetensors", "safetensors_bytes", "seal_matches",
    "sealed_safetensors", "unpack", "write_bytes", "write_json", "write_text",
]
