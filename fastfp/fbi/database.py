"""The output database of the FBI paper: every known model queried once on the benign inputs.

Stores the top-k labels of M models on N inputs compactly (uint8 when the classes fit, else
int16/int32), the inputs' reference classes (ground truth, or the majority vote of all known
models' top-1 outputs, recomputed from the stored outputs so appending a model never needs the
others again), model names and one family per model. One ``.safetensors`` file holds it all:
:mod:`fastfp.io`'s sealed container of format ``fastfp.fbi.database`` (tensors + JSON metadata
under one checksum), written atomically. Databases of fastfp 0.1.0 are refused with the
``fastfp convert`` command that upgrades them.

Building streams: inputs go through each model in batches, one model on the device at a time,
with a progress bar; given ``path``, finished models are checkpointed (at most every
``checkpoint_s`` seconds, and always at the end or on an interruption) and a rerun skips the
models already stored, so an interruption loses only the model in progress.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastfp import _validate, io
from fastfp._models import eval_mode

from .surjection import surjection

FORMAT = io.DATABASE.name
STORE_INPUTS_MAX_BYTES = 256 * 2**20  # store_inputs=None keeps the benign inputs up to this size


def _label_dtype(num_classes: int):
    if num_classes <= 256:
        return np.uint8
    if num_classes <= 32768:
        return np.int16
    return np.int32


def inputs_digest(inputs: torch.Tensor) -> str:
    """A short hash of the benign inputs: a database only grows on the inputs it was built on."""
    t = inputs.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


Models = Mapping[Any, Any] | Iterable[tuple[Any, Any]]  # name -> model, or (name, model) pairs
Device = torch.device | str | None
PathLike = str | os.PathLike


def check_outputs(logits: Any, batch: int, name: str = "model") -> torch.Tensor:
    """A queried model's outputs must be finite (batch, classes) scores: top-k would rank a NaN
    as a label and store it. ValueError naming the model (``name``) otherwise."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
        raise ValueError(
            f"{name}: expected logits of shape (batch, classes) for a batch of {batch}, got "
            f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}"
        )
    finite = torch.isfinite(logits).all(dim=1)
    if not bool(finite.all()):
        raise ValueError(
            f"{name}: non-finite outputs (NaN or inf) on {int((~finite).sum())} of {batch} inputs"
        )
    return logits


@torch.no_grad()
def query_topk(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    k: int,
    *,
    batch_size: int = 256,
    device: Device = None,
    progress: bool = False,
    desc: str | None = None,
) -> np.ndarray:
    """Top-k labels (N, k) int64 of ``model`` (a callable: batch -> logits) on ``inputs``;
    outputs that are not finite (batch, classes) scores raise ValueError naming ``desc``."""
    _validate.tensor("inputs", inputs, min_dim=1)
    k = _validate.integer("k", k, lo=1)
    batch_size = _validate.integer("batch_size", batch_size, lo=1)
    from tqdm.auto import tqdm

    dev = torch.device(device) if device is not None else None
    name = "model" if desc is None else f"model {desc!r}"
    out = []
    starts = range(0, inputs.shape[0], batch_size)
    for i in tqdm(starts, desc=desc or "query", disable=not progress, leave=False):
        x = inputs[i : i + batch_size]
        if dev is not None:
            x = x.to(dev)
        logits = check_outputs(model(x), x.shape[0], name)
        if logits.shape[1] < k:
            raise ValueError(f"k: {k} exceeds the model's {logits.shape[1]} classes")
        out.append(logits.topk(k, dim=1).indices.cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, k), dtype=np.int64)


class Database:
    """Top-k outputs (M, N, k) of named models grouped into families, on N benign inputs."""

    def __init__(
        self,
        topk: Any,
        names: Sequence[str],
        families: Sequence[str],
        *,
        k: int,
        num_classes: int,
        ground_truth: Any = None,
        digest: str | None = None,
        inputs: torch.Tensor | None = None,
    ) -> None:
        k = _validate.integer("k", k, lo=1, hi=254)
        num_classes = _validate.integer("num_classes", num_classes, lo=1)
        try:
            topk = np.asarray(topk)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"topk: expected an (M, N, k) array of labels ({exc})") from None
        if topk.dtype.kind not in "iu":  # the cast to compact labels would truncate floats silently
            raise TypeError(f"topk: expected integer labels, got {topk.dtype}")
        if topk.ndim != 3 or topk.shape[2] != k:
            raise ValueError(f"topk: expected shape (M, N, k={k}), got {topk.shape}")
        names = [str(n) for n in names]
        families = [str(f) for f in families]
        if len(names) != topk.shape[0] or len(families) != topk.shape[0]:
            raise ValueError(
                f"names / families: expected {topk.shape[0]} entries each, got "
                f"{len(names)} / {len(families)}"
            )
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"names: duplicate model names {dup}")
        if topk.size and (topk.min() < 0 or topk.max() >= num_classes):
            raise ValueError(f"topk: labels must lie in 0..num_classes-1 = 0..{num_classes - 1}")
        if ground_truth is not None:
            ground_truth = np.asarray(ground_truth).astype(np.int64).reshape(-1)
            if ground_truth.shape[0] != topk.shape[1]:
                raise ValueError(
                    f"ground_truth: has {ground_truth.shape[0]} labels, "
                    f"expected N = {topk.shape[1]}"
                )
            # a class outside the model's outputs would silently map every output to S_k = 0
            if ground_truth.size and (ground_truth.min() < 0 or ground_truth.max() >= num_classes):
                raise ValueError(
                    f"ground_truth: labels must lie in 0..num_classes-1 = 0..{num_classes - 1}"
                )
        self._rows = np.ascontiguousarray(topk.astype(_label_dtype(num_classes)))  # capacity >= M
        self._count = topk.shape[0]
        self.names, self.families = names, families
        self.k, self.num_classes = k, num_classes
        self.ground_truth = ground_truth
        self.digest = digest
        self._inputs: torch.Tensor | None = None
        if inputs is not None:
            self.with_inputs(inputs)

    # --- benign inputs -------------------------------------------------------------------------
    @property
    def inputs(self) -> torch.Tensor | None:
        """The benign inputs (float32) when the database keeps them, else None."""
        return self._inputs

    def with_inputs(self, inputs: torch.Tensor) -> Database:
        """Keep ``inputs`` (as float32) with the database, so it can be extended or verified
        without them at hand; they must be the inputs it was built on (same digest)."""
        _validate.tensor("inputs", inputs, min_dim=1)
        if inputs.shape[0] != self.num_inputs:
            raise ValueError(
                f"inputs: has {inputs.shape[0]} entries, the database has {self.num_inputs}"
            )
        digest = inputs_digest(inputs)
        if self.digest is not None and digest != self.digest:
            raise ValueError("inputs: differ from the inputs this database was built on")
        self.digest = digest
        self._inputs = inputs.detach().to("cpu", torch.float32).contiguous()
        return self

    # --- shape and lookup ----------------------------------------------------------------------
    @property
    def topk(self) -> np.ndarray:
        """(M, N, k) top-k labels of the stored models (a view; do not append to it)."""
        return self._rows[: self._count]

    @property
    def num_models(self) -> int:
        return self._count

    @property
    def num_inputs(self) -> int:
        return self._rows.shape[1]

    def __len__(self) -> int:
        return self.num_models

    def __contains__(self, name) -> bool:
        return name in self.names

    def index(self, name: str) -> int:
        """Row of a model; a name not in the database is an error, never another model's row."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(
                f"name: model {name!r} is not in the database "
                f"(known: {', '.join(self.names[:8])}{' ...' if len(self.names) > 8 else ''})"
            ) from None

    def outputs(self, name: str) -> np.ndarray:
        return self.topk[self.index(name)]

    @property
    def family_names(self) -> list[str]:
        return list(dict.fromkeys(self.families))

    def members(self, family: str) -> list[int]:
        rows = [i for i, f in enumerate(self.families) if f == family]
        if not rows:
            raise ValueError(
                f"family: unknown family {family!r} (known: {', '.join(self.family_names)})"
            )
        return rows

    # --- reference classes and symbols ---------------------------------------------------------
    @property
    def reference(self) -> np.ndarray:
        """c(x): the ground truth when given, else the majority vote of all models' top-1 outputs
        (ties go to the smallest class)."""
        if self.ground_truth is not None:
            return self.ground_truth
        if self.num_models == 0:
            raise ValueError("database: no model yet, and no ground truth to serve as reference")
        top1 = self.topk[:, :, 0].astype(np.int64)
        votes = np.zeros((self.num_inputs, self.num_classes), dtype=np.int64)
        np.add.at(votes, (np.broadcast_to(np.arange(self.num_inputs), top1.shape), top1), 1)
        return votes.argmax(1)

    def symbols(self, k: int | None = None) -> np.ndarray:
        """S_k of every stored output: (M, N) uint8 in 0..k (k <= the database's k)."""
        k = self.k if k is None else _validate.integer("k", k, lo=1, hi=self.k)
        return surjection(self.topk, self.reference, k)  # compact labels compare as they are

    # --- growing ----------------------------------------------------------------------------------
    def add(self, name: str, family: str, topk: Any) -> None:
        """Append one model's precomputed top-k outputs (N, c >= k)."""
        name, family = str(name), str(family)
        if name in self.names:
            raise ValueError(f"name: model {name!r} is already in the database")
        topk = np.asarray(topk)
        if topk.dtype.kind not in "iu":
            raise TypeError(f"topk: expected integer labels, got {topk.dtype}")
        if topk.ndim != 2 or topk.shape[0] != self.num_inputs:
            raise ValueError(
                f"topk: expected ({self.num_inputs}, k) outputs, got shape {topk.shape}"
            )
        if topk.shape[1] < self.k:
            raise ValueError(
                f"topk: has {topk.shape[1]} columns; the database was built with k = {self.k}"
            )
        topk = topk[:, : self.k]
        if topk.size and (topk.min() < 0 or topk.max() >= self.num_classes):
            raise ValueError(f"topk: labels must lie in 0..{self.num_classes - 1}")
        if self._count == self._rows.shape[0]:  # grow geometrically: appending M models is O(M N k)
            grown = np.empty(
                (max(4, 2 * self._count), *self._rows.shape[1:]), dtype=self._rows.dtype
            )
            grown[: self._count] = self._rows[: self._count]
            self._rows = grown
        self._rows[self._count] = topk
        self._count += 1
        self.names.append(name)
        self.families.append(family)

    @classmethod
    def empty(
        cls,
        num_inputs: int,
        *,
        k: int,
        num_classes: int,
        ground_truth: Any = None,
        digest: str | None = None,
        inputs: torch.Tensor | None = None,
    ) -> Database:
        num_inputs = _validate.integer("num_inputs", num_inputs, lo=1)
        return cls(
            np.zeros((0, num_inputs, k), dtype=np.int64),
            [],
            [],
            k=k,
            num_classes=num_classes,
            ground_truth=ground_truth,
            digest=digest,
            inputs=inputs,
        )

    @classmethod
    def build(
        cls,
        models: Models,
        inputs: torch.Tensor,
        *,
        k: int,
        families: Mapping[Any, Any],
        labels: Any = None,
        num_classes: int | None = None,
        batch_size: int = 256,
        device: Device = None,
        path: PathLike | None = None,
        progress: bool = True,
        checkpoint_s: float = 30.0,
        store_inputs: bool | None = None,
        lock_wait: float | None = None,
    ) -> Database:
        """Query ``models`` (mapping name -> module, or (name, module) pairs) on ``inputs``.

        families: mapping model name -> family name (every model needs one); labels: ground-truth
        classes (N,) or None for the majority vote. With ``path`` the database is resumable: an
        existing file built on the same inputs and k is extended. The file is rewritten after a
        finished model once ``checkpoint_s`` seconds have passed since the last write (0: after
        every model), when the build ends and when it is interrupted, so a crash loses at most
        that much work and a long zoo is not rewritten once per model.

        store_inputs: keep the inputs in the database (None: when they take at most
        ``STORE_INPUTS_MAX_BYTES``). The whole build holds :func:`fastfp.io.lock` on ``path``:
        a concurrent build of the same file waits up to ``lock_wait`` seconds (None: until the
        other ends, then extends its file) and then fails naming the holder.
        """
        _validate.tensor("inputs", inputs, min_dim=1)
        k = _validate.integer("k", k, lo=1, hi=254)
        checkpoint_s = _validate.real("checkpoint_s", checkpoint_s, lo=0.0)
        batch_size = _validate.integer("batch_size", batch_size, lo=1)
        keep = wants_inputs(store_inputs, inputs)
        pairs = list(models.items()) if hasattr(models, "items") else list(models)
        if not pairs:
            raise ValueError("models: no model given")
        check_new_models(pairs, families, [])
        if path is None:
            return cls._build(pairs, inputs, k, families, labels, num_classes, batch_size,
                              device, None, progress, checkpoint_s, keep)
        path = io.check_target(path)  # before any model is queried
        with io.lock(path, wait=lock_wait):
            return cls._build(pairs, inputs, k, families, labels, num_classes, batch_size,
                              device, path, progress, checkpoint_s, keep)

    @classmethod
    def _build(cls, pairs, inputs, k, families, labels, num_classes, batch_size, device, path,
               progress, checkpoint_s, keep) -> Database:
        digest = inputs_digest(inputs)
        if path is not None and Path(path).exists():
            db = load_resumable(path, pairs, families, k=k, digest=digest, labels=labels)
        else:
            if num_classes is None:
                num_classes = probe_classes(
                    pairs[0][1], inputs, device, f"model {str(pairs[0][0])!r}"
                )
            gt = None if labels is None else np.asarray(labels).astype(np.int64).reshape(-1)
            if gt is not None and gt.shape[0] != inputs.shape[0]:
                raise ValueError(
                    f"labels: has {gt.shape[0]} entries, expected N = {inputs.shape[0]}"
                )
            if gt is not None and gt.size and (gt.min() < 0 or gt.max() >= num_classes):
                raise ValueError(
                    f"labels: classes must lie in 0..{num_classes - 1} (the models' outputs)"
                )
            db = cls.empty(
                inputs.shape[0], k=k, num_classes=num_classes, ground_truth=gt, digest=digest
            )
        if keep and db.inputs is None:
            db.with_inputs(inputs)
        from tqdm.auto import tqdm

        todo = [(str(n), m) for n, m in pairs if str(n) not in db.names]
        saved, last_write = db.num_models, time.monotonic()
        try:
            for name, model in tqdm(todo, desc="fbi database", unit="model", disable=not progress):
                db.add(
                    name,
                    families[name],
                    query_one(model, inputs, k, batch_size, device, progress, name),
                )
                release(model)
                if path is not None and time.monotonic() - last_write >= checkpoint_s:
                    db.save(path)
                    saved, last_write = db.num_models, time.monotonic()
        finally:  # finished models survive an interruption (the file only ever holds whole models)
            if path is not None and db.num_models > saved:
                db.save(path)
        return db

    def extend(
        self,
        models: Models,
        inputs: torch.Tensor | None = None,
        *,
        families: Mapping[Any, Any],
        batch_size: int = 256,
        device: Device = None,
        progress: bool = True,
    ) -> Database:
        """Query more models on the same inputs and append them (nothing else is recomputed);
        ``inputs`` may be left out when the database keeps its own."""
        if inputs is None:
            if self._inputs is None:
                raise ValueError("inputs: required, this database does not keep its inputs")
            inputs = self._inputs
        _validate.tensor("inputs", inputs, min_dim=1)
        if self.digest is not None and inputs_digest(inputs) != self.digest:
            raise ValueError("inputs: differ from the inputs this database was built on")
        pairs = list(models.items()) if hasattr(models, "items") else list(models)
        check_new_models(pairs, families, self.names)  # all of them before querying any
        for name, model in pairs:
            self.add(
                name,
                families[name],
                query_one(model, inputs, self.k, batch_size, device, progress, name),
            )
            release(model)
        return self

    # --- files ------------------------------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Write the database to ``path`` atomically, under the file's lock."""
        tensors: dict[str, Any] = {"topk": np.ascontiguousarray(self.topk)}
        if self.ground_truth is not None:
            tensors["ground_truth"] = np.ascontiguousarray(self.ground_truth)
        if self._inputs is not None:
            tensors["inputs"] = self._inputs
        meta = {
            "names": self.names,
            "families": self.families,
            "k": self.k,
            "num_classes": self.num_classes,
            "num_inputs": self.num_inputs,
            "digest": self.digest,
        }
        blob = io.pack(tensors, meta, format=io.DATABASE)
        path = io.check_target(path)  # a missing folder is named before the lock is made
        with io.lock(path):  # re-entrant: a locked build saves under its own lock
            io.write_bytes(path, blob)

    @classmethod
    def load(cls, path: PathLike) -> Database:
        """Read a database written by :meth:`save`; anything else raises ``ValueError``
        (:class:`fastfp.io.LegacyFileError` for a file of fastfp 0.1.0)."""
        data = io.read_bytes(path, name="path")  # a regular file only
        where = str(path)
        tensors, meta = io.unpack(data, format=io.DATABASE, source=where)
        missing = [
            key
            for key in ("names", "families", "k", "num_classes", "num_inputs")
            if key not in meta
        ]
        if missing or "topk" not in tensors:
            raise ValueError(
                f"{where}: corrupt FBI database (it lacks {missing or ['topk']})"
            )
        topk = tensors["topk"].numpy()
        if topk.shape[0] == 0:
            topk = topk.reshape(0, meta["num_inputs"], meta["k"])
        if topk.ndim != 3 or topk.shape[1] != meta["num_inputs"]:
            raise ValueError(
                f"{where}: corrupt FBI database (outputs of shape {topk.shape}, "
                f"expected {meta['num_inputs']} inputs)"
            )
        inputs = tensors.get("inputs")
        if inputs is not None and meta.get("digest") is not None \
                and inputs_digest(inputs) != meta["digest"]:
            raise ValueError(f"{where}: corrupt FBI database (inputs digest)")
        gt = tensors.get("ground_truth")
        return cls(
            topk,
            meta["names"],
            meta["families"],
            k=meta["k"],
            num_classes=meta["num_classes"],
            ground_truth=None if gt is None else gt.numpy(),
            digest=meta.get("digest"),
            inputs=inputs,
        )

    def __repr__(self) -> str:
        return (
            f"Database({self.num_models} models, {len(self.family_names)} families, "
            f"{self.num_inputs} inputs, k={self.k}, classes={self.num_classes})"
        )


def load_resumable(
    path: PathLike,
    pairs: Sequence[tuple[Any, Any]],
    families: Mapping[Any, Any],
    *,
    k: int,
    digest: str,
    labels: Any,
) -> Database:
    """The database at ``path``, if a build of ``pairs`` with these settings may extend it; an
    error naming the setting that differs otherwise (k, inputs, labels, a model's family)."""
    db = Database.load(path)
    if db.k != k:
        raise ValueError(f"k: the database at {path} was built with k = {db.k}, got k = {k}")
    if db.digest != digest:
        raise ValueError(f"inputs: differ from the inputs the database at {path} was built on")
    # a resumed build keeps the stored reference classes: other labels must not be ignored
    if labels is not None and (
        db.ground_truth is None
        or not np.array_equal(np.asarray(labels).astype(np.int64).reshape(-1), db.ground_truth)
    ):
        raise ValueError(f"labels: differ from the ground truth of the database at {path}")
    moved = [
        n
        for n, _ in pairs
        if str(n) in db.names and str(families[n]) != db.families[db.index(str(n))]
    ]
    if moved:  # a resumed build must not keep a family the model list now contradicts
        raise ValueError(f"families: models {moved} are stored at {path} with another family")
    return db


def wants_inputs(store_inputs: bool | None, inputs: torch.Tensor) -> bool:
    """Whether a build keeps ``inputs``: forced by True/False, else when their float32 copy
    takes at most ``STORE_INPUTS_MAX_BYTES``."""
    if store_inputs is not None and not isinstance(store_inputs, bool):
        raise TypeError(f"store_inputs: expected True, False or None, got {store_inputs!r}")
    if store_inputs is None:
        return inputs.numel() * 4 <= STORE_INPUTS_MAX_BYTES
    return store_inputs


def check_new_models(
    pairs: Sequence[tuple[Any, Any]], families: Mapping[Any, Any], known: Sequence[str]
) -> None:
    """Reject a bad model list before any model is queried: no half-built database on an error.

    pairs: (name, model) pairs; families: name -> family; known: names already stored."""
    if not hasattr(families, "get"):
        raise TypeError("families: expected a mapping model name -> family name")
    names = [str(n) for n, _ in pairs]
    missing = [str(n) for n, _ in pairs if n not in families]
    if missing:
        raise ValueError(f"families: no family given for models {missing}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"models: duplicate model names {dup}")
    stored = [n for n in names if n in known]
    if stored:
        raise ValueError(f"models: {stored} already in the database")


def probe_classes(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    device: Device,
    name: str = "model",
) -> int:
    """The number of classes ``model`` outputs, from one input (checked as every query is)."""
    with torch.no_grad():
        x = inputs[:1] if device is None else inputs[:1].to(device)
        return int(check_outputs(model(x), 1, name).shape[1])


def release(model: object) -> None:
    """Let a lazily loaded model (one with a ``release()`` method, e.g. the CLI's model-list
    entries) free its weights once its outputs are stored: a long model list then holds one
    model in memory at a time, not all of them."""
    free = getattr(model, "release", None)
    if callable(free):
        free()


def query_one(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    k: int,
    batch_size: int,
    device: Device,
    progress: bool,
    name: str,
) -> np.ndarray:
    """Top-k labels of one model (as :func:`query_topk`), in eval mode and on ``device`` for the
    query only: the caller's model comes back as it was given (train/eval mode, device)."""
    parameters = getattr(model, "parameters", None)
    params = parameters() if callable(parameters) else iter(())
    home = next((p.device for p in params), torch.device("cpu"))
    if device is not None and hasattr(model, "to"):
        model = model.to(device)
    try:
        with eval_mode(model):
            return query_topk(
                model, inputs, k, batch_size=batch_size, device=device, progress=progress,
                desc=name
            )
    finally:
        if device is not None and hasattr(model, "to"):
            model.to(home)  # one model on the device at a time
