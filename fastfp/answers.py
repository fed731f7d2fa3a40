"""A suspect's answers read from files: forgiving formats, never code.

Answers arrive in whatever a remote API or a notebook wrote: ``.npy`` / ``.npz`` / ``.pt`` integer
arrays, CSV or JSON rows of top-k labels, or float logits / probabilities (the top-k is taken here).
Every reader returns ``(value, notes)``: the notes say what was converted (the CLI prints them), and
anything it cannot read raises one ``ValueError`` naming the file, never a parser's traceback.
Tensor files are sniffed by :mod:`fastfp.suspects` before anything reads them: pickles,
TorchScript and ``.pt2`` archives are refused (an answers file never needs code). Every file is
opened as a regular file only (a FIFO would hang, ``/dev/zero`` would fill memory) and its size is
capped before it is parsed: bytes and rows of CSV / JSON, nesting of JSON, the array sizes an
``.npy`` / ``.npz`` header declares.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastfp import _validate, suspects
from fastfp import io as fileio

# a CSV header cell naming a leading index column (dropped)
INDEX_COLUMNS = ("index", "idx", "id", "image", "image_id", "input", "i", "n", "#")
# keys of an .npz / JSON object that hold the rows
ANSWER_KEYS = ("labels", "predictions")
TENSOR_FILES = (".npy", ".npz", ".pt", ".safetensors")
ANSWER_FILES = (".npy", ".npz", ".pt", ".csv", ".json")
# Text answers become Python objects (~30 bytes a value): larger answers belong in a .npy.
MAX_TEXT_BYTES = 64 * 2 ** 20
MAX_TEXT_VALUES = 2 ** 24


def top_k_labels(scores: np.ndarray, k: int) -> np.ndarray:
    """(N, C) scores -> (N, k) int64 classes, best first; of tied scores the lower class first."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k].astype(np.int64)


def existing_path(path: object, name: str) -> Path:
    """``path`` as a Path when it exists (a file or a folder); errors name ``name``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name}: no such file or folder: {str(p)!r}")
    return p


def read_answers(path: str | os.PathLike, *, num_inputs: int | None, k: int,
                 num_classes: int | None = None) -> tuple[np.ndarray, list[str]]:
    """A suspect's answers as (N, k') int64 labels with k' >= k, and the notes to print.

    ``num_inputs`` (None: any) is the number of rows expected; ``num_classes`` (None: unknown)
    bounds the labels and tells (N, C) scores from (N, k') labels."""
    if num_inputs is not None:
        _validate.integer("num_inputs", num_inputs, lo=1)
    _validate.integer("k", k, lo=1)
    if num_classes is not None:
        _validate.integer("num_classes", num_classes, lo=1)
    p = existing_path(path, "answers")
    if p.is_dir():
        raise ValueError(f"{p}: a folder, expected an answers file (.npy, .npz, .pt, .csv, "
                         ".json)")
    notes: list[str] = []
    suffix = p.suffix.lower()
    if suffix == ".csv":
        a = _read_csv(p, notes)
    elif suffix == ".json":
        a = _read_json(p)
    elif suffix in TENSOR_FILES:
        a = read_tensor_file(p, ANSWER_KEYS)
    else:
        raise ValueError(f"{p}: unknown answers format {p.suffix!r} (expected .npy, .npz, .pt, "
                         ".csv or .json)")
    return _as_labels(p, a, num_inputs, k, num_classes, notes), notes


def _as_labels(p: Path, a: np.ndarray, num_inputs: int | None, k: int,
               num_classes: int | None, notes: list[str]) -> np.ndarray:
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer)
                               or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{p}: expected integer labels or float scores, got {a.dtype} values")
    if a.size == 0:
        raise ValueError(f"{p}: no answers (the file is empty)")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{p}: expected (N,) or (N, k) answers, got shape {tuple(a.shape)}")
    if num_inputs is not None and a.shape[0] != num_inputs:
        raise ValueError(f"{p}: {a.shape[0]} rows of answers, the database has {num_inputs} "
                         "inputs (one row per input, in the database's order)")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{p}: NaN or infinite values in the answers")
        integral = bool((a == np.round(a)).all())
        if (num_classes is not None and a.shape[1] == num_classes and a.shape[1] > 1) or (
                not integral and a.shape[1] > 1):
            if num_classes is not None and a.shape[1] != num_classes:
                raise ValueError(f"{p}: {a.shape[1]} scores per input, the database has "
                                 f"{num_classes} classes")
            notes.append(f"{p}: (N, C) = {tuple(a.shape)} float scores: took the top-{k} "
                         "classes (ties to the lower class)")
            return top_k_labels(a, k)
        if not integral:
            raise ValueError(f"{p}: non-integer labels (expected class indices, or (N, C) "
                             "scores with C = the number of classes)")
    labels = a.astype(np.int64)
    if labels.shape[1] < k:
        raise ValueError(f"{p}: top-{labels.shape[1]} answers, the database needs top-{k} "
                         f"(k' = {labels.shape[1]} < k = {k})")
    if labels.min() < 0:
        raise ValueError(f"{p}: negative label {int(labels.min())}")
    if num_classes is not None and labels.max() >= num_classes:
        raise ValueError(f"{p}: label {int(labels.max())} is too large for {num_classes} "
                         f"classes (labels are 0..{num_classes - 1})")
    return np.ascontiguousarray(labels)


def _number(cell: str) -> int | float | None:
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        return None


def _text(p: Path) -> str:
    """The text of the regular file ``p``, capped at :data:`MAX_TEXT_BYTES` before reading."""
    try:
        data = fileio.read_bytes(p, name="answers", max_bytes=MAX_TEXT_BYTES)
    except ValueError as exc:
        if "bytes, more than" in str(exc):
            raise ValueError(f"{exc} (write larger answers as .npy)") from None
        raise
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a text file ({exc.reason})") from None


def _too_many(p: Path, values: int) -> None:
    if values > MAX_TEXT_VALUES:
        raise ValueError(f"{p}: more than {MAX_TEXT_VALUES} values, more than a CSV / JSON "
                         "answers file may hold (write larger answers as .npy)")


def _read_csv(p: Path, notes: list[str]) -> np.ndarray:
    text = _text(p)
    rows: list[list[str]] = []
    count = 0
    try:
        for r in csv.reader(io.StringIO(text, newline="")):
            cells = [c.strip() for c in r]
            if any(cells):
                count += len(cells)
                _too_many(p, count)  # checked row by row: a huge file never becomes lists
                rows.append(cells)
    except csv.Error as exc:
        raise ValueError(f"{p}: not a readable CSV file ({exc})") from None
    del text
    if not rows:
        raise ValueError(f"{p}: no answers (the file is empty)")
    drop_index, first_line = False, 1
    if any(_number(c) is None for c in rows[0]):  # a header row
        header, rows, first_line = rows[0], rows[1:], 2
        notes.append(f"{p}: skipped the header row {','.join(header)!r}")
        if header and header[0].lower() in INDEX_COLUMNS:
            drop_index = True
            notes.append(f"{p}: dropped the index column {header[0]!r}")
        if not rows:
            raise ValueError(f"{p}: no answers (only a header row)")
    width = len(rows[0])
    values: list[list[int | float]] = []
    for line, row in enumerate(rows, start=first_line):
        if len(row) != width:
            raise ValueError(f"{p}: row {line} has {len(row)} values, the first has {width} "
                             "(every row needs the same number of labels)")
        cells = row[1:] if drop_index else row
        nums = [_number(c) for c in cells]
        bad = [c for c, n in zip(cells, nums, strict=True) if n is None]
        if bad:
            raise ValueError(f"{p}: row {line}: non-numeric value {bad[0]!r}")
        values.append(nums)  # type: ignore[arg-type]
    return _from_rows(p, values)


def _from_rows(p: Path, rows: list[Any]) -> np.ndarray:
    """Nested lists of numbers (already checked rectangular) as an int64 or float64 array."""
    flat = [v for r in rows for v in (r if isinstance(r, list) else [r])]
    floats = any(isinstance(v, float) for v in flat)
    if floats and any(math.isnan(v) for v in flat):
        raise ValueError(f"{p}: NaN in the answers")
    try:
        return np.asarray(rows, dtype=np.float64 if floats else np.int64)
    except OverflowError:
        raise ValueError(f"{p}: a label is too large") from None


def _read_json(p: Path) -> np.ndarray:
    text = _text(p)
    if not text.strip():
        raise ValueError(f"{p}: no answers (the file is empty)")
    fileio.check_depth(text, name="answers", source=p)  # before json recurses per level
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        key = next((key for key in ANSWER_KEYS if key in data), None)
        if key is None:
            raise ValueError(f"{p}: expected a list of rows or an object with 'labels' or "
                             f"'predictions', got keys {sorted(data)}")
        data = data[key]
    if not isinstance(data, list):
        raise ValueError(f"{p}: expected a list of rows, got a JSON {type(data).__name__}")
    if not data:
        raise ValueError(f"{p}: no answers (an empty list)")

    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    width = len(data[0]) if isinstance(data[0], list) else None
    _too_many(p, len(data) * (width or 1))
    for i, row in enumerate(data):
        cells = row if isinstance(row, list) else [row]
        if (len(cells) if isinstance(row, list) else None) != width:
            raise ValueError(f"{p}: row {i + 1} has {len(cells)} values, the first has "
                             f"{width or 1} (every row needs the same number of labels)")
        bad = [v for v in cells if not number(v)]
        if bad:
            raise ValueError(f"{p}: row {i + 1}: non-numeric value {bad[0]!r}")
    return _from_rows(p, data)


def read_tensor_file(p: Path, keys: tuple[str, ...]) -> np.ndarray:
    """One array from .npy, .npz / .safetensors (one array, or one of ``keys``) or .pt (one
    tensor; a torch.save archive that :func:`fastfp.suspects.tensors_only` accepts), never a
    pickle: nothing in the file runs."""
    suffix = p.suffix.lower()
    fd = fileio.open_regular(p, str(p))  # a FIFO, a device or a folder is refused here
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise ValueError(f"{p}: the file is empty")
        if suffix in (".safetensors", ".pt"):
            fileio.check_size(size, fileio.MAX_ARRAY_BYTES, name=str(p), source=p)
        elif fh.read(4) == b"PK\x03\x04":  # .npz (a zip of .npy files), whatever its suffix
            fh.seek(0)
            return _read_npz(p, fh, keys)
        else:
            fh.seek(0)
            return fileio.npy_from(fh, size, name=str(p))
    if suffix == ".safetensors":
        from fastfp.io import read_bytes, read_safetensors

        tensors, _ = read_safetensors(read_bytes(p, name=str(p)), name=str(p))
        return _numpy(tensors[_one_key(p, sorted(tensors), keys, "tensors")])
    # .pt: sniffed first: only a torch.save of tensors reaches torch.load
    t = suspects.read_tensors(p, name=str(p))
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{p}: expected one tensor, got a {type(t).__name__}")
    return _numpy(t.detach().cpu())


def _read_npz(p: Path, fh: Any, keys: tuple[str, ...]) -> np.ndarray:
    """One array of the .npz archive open as ``fh``: its declared sizes (the zip's and the
    member's .npy header) are checked before anything is decompressed."""
    try:
        with zipfile.ZipFile(fh) as zf:
            members = {i.filename.removesuffix(".npy"): i for i in zf.infolist()
                       if i.filename.endswith(".npy")}
            if not members:
                raise ValueError(f"{p}: an .npz archive without arrays")
            info = members[_one_key(p, sorted(members), keys, "arrays")]
            if info.file_size > fileio.MAX_ARRAY_BYTES:
                raise ValueError(f"{p}: array {info.filename!r} holds {info.file_size} bytes "
                                 "uncompressed, more than fastfp reads")
            with zf.open(info) as member:
                return fileio.npy_from(member, info.file_size, name=f"{p}: {info.filename}")
    except (OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise ValueError(f"{p}: not a valid .npz file ({exc})") from None


def _one_key(p: Path, names: list[str], keys: tuple[str, ...], what: str) -> str:
    """The only array of a file holding several, or the one named as one of ``keys``."""
    key = names[0] if len(names) == 1 else next((n for n in keys if n in names), None)
    if key is None:
        raise ValueError(f"{p}: {len(names)} {what} {names}: name one of them "
                         f"{' or '.join(repr(n) for n in keys)}")
    return key


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as numpy (half floats, which numpy lacks or mishandles, as float32)."""
    return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()


def read_queries(path: str | os.PathLike, num_inputs: int) -> np.ndarray:
    """The input indices of a ``queries.json`` that ``fastfp fbi export-queries`` wrote (sealed
    JSON), checked to index ``num_inputs`` inputs: the rows of an answers file to it."""
    from fastfp import io as fileio

    _validate.integer("num_inputs", num_inputs, lo=1)
    try:
        indices = np.asarray(fileio.read_json(path, name="queries", sealed=True)["indices"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"queries: {path} is not a queries.json of export-queries") from exc
    if indices.ndim != 1 or indices.dtype.kind not in "iu" or indices.size == 0 or \
            indices.min() < 0 or indices.max() >= num_inputs:
        raise ValueError(f"queries: {path} does not hold input indices of this database")
    return indices
