"""Import released predictions: a folder with one ``<name>.npy`` per model (the FBI authors'
release layout) into a :class:`~fastfp.fbi.Database`.

Layout: ``<name>.npy`` holds (N,) or (N, k) integer labels of one model on the N benign inputs;
``ground_truth.npy`` the N true classes. A name ``FAMILY`` is the family's vanilla model and
``VARIANT-FAMILY-PARAMS`` a variant (family = the second ``-`` field); other layouts pass a
mapping name -> family. Every file is read with ``allow_pickle=False``: an object array is
skipped with a note, never unpickled. Everything is checked before the database is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .. import io as fileio
from .database import Database

GROUND_TRUTH = "ground_truth.npy"
# A database stores labels as at most int32: larger labels would wrap silently in the cast.
MAX_LABEL = np.iinfo(np.int32).max - 1


def family_of(name: str) -> str:
    """The family of a released model name: ``FAMILY`` or ``VARIANT-FAMILY-PARAMS``."""
    parts = name.split("-")
    return name if len(parts) == 1 else parts[1]


def _read(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(array, None) for an integer label array of rank 1 or 2, else (None, why skipped)."""
    fd = fileio.open_regular(path, path.name)
    with os.fdopen(fd, "rb") as fh:  # a FIFO or a device is refused above, never read
        try:  # the header first: object arrays (pickle) and forged sizes are refused
            arr = fileio.npy_from(fh, os.fstat(fd).st_size, name=path.name)
        except ValueError as exc:
            return None, f"not a plain array ({str(exc).removeprefix(path.name + ': ')})"
    if not isinstance(arr, np.ndarray):
        return None, "not a single array"
    if arr.dtype.kind not in "iu":
        return None, f"not integer labels (dtype {arr.dtype})"
    if arr.ndim not in (1, 2):
        return None, f"not (N,) or (N, k) labels (shape {arr.shape})"
    if arr.size == 0:  # no rows (or no columns): nothing to import
        return None, f"empty (shape {arr.shape})"
    # checked in the file's own dtype, before any cast (a uint64 or int64 label would wrap)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{path.name}: has negative labels")
    if arr.size and arr.max() > MAX_LABEL:
        raise ValueError(f"{path.name}: label {int(arr.max())} is larger than {MAX_LABEL}, the "
                         "largest class index a database stores")
    return (arr[:, None] if arr.ndim == 1 else arr), None


def import_predictions(
    folder: str | os.PathLike,
    *,
    families: Mapping[str, str] | None = None,
    ground_truth: str | os.PathLike | None = None,
    k: int | None = None,
    num_classes: int | None = None,
) -> tuple[Database, list[str]]:
    """Read a released prediction folder; returns ``(database, notes)``.

    families: name -> family for names outside the ``VARIANT-FAMILY-PARAMS`` layout;
    ground_truth: the true classes (default ``folder/ground_truth.npy`` when present);
    k: top-k kept (default: the fewest columns of any model); num_classes: default the largest
    label + 1. Raises ValueError naming the file for different lengths, labels out of range,
    duplicate names or a family without its vanilla model (named like the family).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder: {folder} is not a folder")
    if families is not None and not isinstance(families, Mapping):
        raise TypeError(
            f"families: expected a mapping name -> family, got {type(families).__name__}"
        )
    notes: list[str] = []
    gt_path = Path(ground_truth) if ground_truth is not None else folder / GROUND_TRUTH
    truth = None
    if ground_truth is not None or gt_path.exists():
        arr, why = _read(gt_path)
        if arr is None or arr.shape[1] != 1:
            raise ValueError(f"ground_truth: {gt_path} is {why or 'not an (N,) label array'}")
        truth = arr[:, 0].astype(np.int64)
    models: dict[str, tuple[Path, np.ndarray]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix != ".npy" or not path.is_file() or path.resolve() == gt_path.resolve():
            if path.is_file() and path.suffix != ".npy":
                notes.append(f"{path.name}: skipped (not a .npy file)")
            continue
        arr, why = _read(path)
        if arr is None:
            notes.append(f"{path.name}: skipped ({why})")
            continue
        name = path.stem
        # names differing only in case are one file on case-insensitive file systems
        same = [m for m in models if m.lower() == name.lower()]
        if same:
            raise ValueError(f"{path.name}: duplicate model name {name!r} (also {same[0]!r})")
        models[name] = (path, arr)
    if not models:
        raise ValueError(f"folder: {folder} holds no integer label .npy file")
    n = len(truth) if truth is not None else next(iter(models.values()))[1].shape[0]
    for path, arr in models.values():
        if arr.shape[0] != n:
            raise ValueError(f"{path.name}: has {arr.shape[0]} predictions, expected N = {n}")
    top = max([int(a.max()) for _, a in models.values()] + [int(truth.max()) if truth is not None
                                                             else 0])
    if num_classes is None:
        num_classes = top + 1
    elif not 2 <= int(num_classes) <= MAX_LABEL + 1:
        raise ValueError(f"num_classes: expected 2..{MAX_LABEL + 1}, got {num_classes}")
    for path, arr in models.values():
        if arr.max() >= num_classes:
            raise ValueError(f"{path.name}: label {int(arr.max())} >= num_classes = {num_classes}")
    if truth is not None and (truth.min() < 0 or truth.max() >= num_classes):
        raise ValueError(f"ground_truth: {gt_path.name} has labels outside 0..{num_classes - 1}")
    fam = {name: str((families or {}).get(name, family_of(name))) for name in models}
    for name, f in fam.items():
        if f not in models or fam[f] != f:
            raise ValueError(
                f"{models[name][0].name}: family {f!r} has no vanilla model ({f}.npy)"
            )
    cols = min(a.shape[1] for _, a in models.values())
    k = cols if k is None else int(k)
    if not 1 <= k <= cols:
        raise ValueError(f"k: expected 1..{cols} (the fewest columns of any model), got {k}")
    db = Database.empty(n, k=k, num_classes=num_classes, ground_truth=truth)
    for name, (_, arr) in models.items():
        db.add(name, fam[name], arr[:, :k])
    return db, notes


def save_extending(db: Database, path: str | os.PathLike) -> int:
    """Save ``db`` at ``path``, extending the database already there (as a resumed build does);
    returns the number of models added.

    An existing database is extended only when it has the same inputs (count, ground truth), k
    and classes, and every model both hold has the same family and the same labels; anything
    else is refused by name and the file is left as it was.
    """
    from fastfp import io

    path = Path(io.check_target(path))
    with io.lock(path):
        if not path.exists():
            db.save(path)
            return db.num_models
        old = Database.load(path)
        for what, have, new in (("inputs", old.num_inputs, db.num_inputs), ("k", old.k, db.k),
                                ("num_classes", old.num_classes, db.num_classes)):
            if have != new:
                raise ValueError(f"{what}: the database at {path} has {what} = {have}, the "
                                 f"import {new}; write it to another --out")
        if (old.ground_truth is None) != (db.ground_truth is None) or (
                old.ground_truth is not None
                and not np.array_equal(old.ground_truth, db.ground_truth)):
            raise ValueError(f"ground_truth: differs from the ground truth of the database at "
                             f"{path}; write it to another --out")
        added = 0
        for i, name in enumerate(db.names):
            if name in old:
                j = old.index(name)
                if old.families[j] != db.families[i] or not np.array_equal(old.topk[j],
                                                                            db.topk[i]):
                    raise ValueError(f"{name}: is stored at {path} with another family or other "
                                     "labels; write the import to another --out")
                continue
            old.add(name, db.families[i], db.topk[i])
            added += 1
        if added:
            old.save(path)
        return added


def export_predictions(db: Database, folder: str | os.PathLike) -> None:
    """Write ``db`` in the released layout (one ``<name>.npy`` per model, ``ground_truth.npy``):
    the inverse of :func:`import_predictions` for databases whose names follow the layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, labels in zip(db.names, db.topk, strict=True):
        np.save(folder / f"{name}.npy", labels.astype(np.int64))
    if db.ground_truth is not None:
        np.save(folder / GROUND_TRUTH, db.ground_truth.astype(np.int64))
