"""Checking a suspect named by a spec: a served model, a file, or the answers a remote party gave.

:func:`open_suspect` turns a spec of :func:`fastfp.blackbox.resolve` (the one grammar) into what
:func:`~fastfp.cexamples.verdict` asks: a model that runs here stays a torch model (the exact
examples, on ``device``); a service stays a black box, sent the 8-bit examples in the model's
declared shape and the fingerprint's normalisation, within its budget, through its answer cache;
an answers file is read as the rows of an :func:`export` (a sealed ``queries.json`` ties them to
one fingerprint: its digest and its count). :func:`check` is the whole ``fastfp verify``.

``export`` writes the examples as lossless PNGs and ``queries.json`` without the labels (they are
the secret); the remote party answers one row per image, in the order of ``files``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import _validate, suspects
from .. import blackbox as bb
from .. import io as fileio
from . import checks
from .verdict import Suspect, Verdict, query_images, verdict

QUERIES_FORMAT = "fastfp.cexamples-queries/1"


def fingerprint_digest(fp: Any) -> str:
    """SHA-256 of the fingerprint's file bytes (the same fingerprint gives the same bytes)."""
    return hashlib.sha256(fp.to_bytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote."""

    folder: Path
    files: list[str]   # the PNG names, in the order the answers must follow
    rounded: bool      # the examples were not 8-bit: the PNGs round them


def check_export_folder(out: str | os.PathLike[str], channels: int,
                        name: str = "out") -> Path:
    """``out`` as a folder :func:`export` can fill (created later), checked before any work."""
    folder = _validate.path(name, out)
    if channels not in fileio.PNG_MODES:
        raise ValueError(f"fp: PNG holds 1 or 3 channels, the examples have {channels}")
    if folder.is_dir() and not folder.is_symlink():
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"{name}: folder {str(folder)!r} is not writable")
        fileio.check_target(folder / "queries.json", name=name)
    elif os.path.lexists(folder):
        raise FileExistsError(f"{name}: {str(folder)!r} exists and is not a folder")
    else:
        fileio.check_target(folder, name=name)  # its parent exists and is writable
    return folder


def export(fp: Any, out: str | os.PathLike[str], *, name: str = "out") -> Exported:
    """Write the examples of ``fp`` as lossless 8-bit PNGs ``00000.png`` ... in the folder
    ``out`` (created) and a sealed ``queries.json``: the fingerprint's digest, the file names in
    order, shape, normalisation and class count, never the labels."""
    fp = _fingerprint(fp)
    folder = check_export_folder(out, int(fp.inputs.shape[1]), name)
    images, rounded = query_images(fp)
    files = [f"{i:05d}.png" for i in range(len(fp))]
    folder.mkdir(exist_ok=True)
    for file, data in zip(files, fileio.png_bytes(images), strict=True):
        fileio.write_bytes(folder / file, data, name=name)
    fileio.write_json(folder / "queries.json", {
        "format": QUERIES_FORMAT, "fingerprint": fingerprint_digest(fp), "files": files,
        "count": len(files), "shape": list(fp.inputs.shape[1:]),
        "normalize": fp.meta.get("normalize"), "num_classes": fp.meta.get("num_classes"),
        "rounded": rounded}, name=name, sealed=True)
    return Exported(folder, files, rounded)


def read_queries(path: str | os.PathLike[str], fp: Any, name: str = "queries") -> dict:
    """The sealed ``queries.json`` of :func:`export`, checked to belong to ``fp`` (its digest
    and its count): the rows of an answers file are then its examples, in order."""
    q = fileio.read_json(path, name=name, sealed=True)
    if not isinstance(q, dict) or q.get("format") != QUERIES_FORMAT:
        raise ValueError(f"{name}: {str(path)!r} is not a queries.json of `fastfp export` "
                         f"(format {QUERIES_FORMAT!r})")
    if q.get("fingerprint") != fingerprint_digest(fp):
        raise ValueError(f"{name}: {str(path)!r} was exported from another fingerprint (its "
                         "digest differs)")
    if q.get("count") != len(fp) or len(q.get("files") or ()) != len(fp):
        raise ValueError(f"{name}: {str(path)!r} lists {q.get('count')} images, the "
                         f"fingerprint has {len(fp)} examples")
    return q


@dataclasses.dataclass(frozen=True)
class Opened:
    """A suspect ready to be asked, and its name for reports."""

    suspect: Suspect
    name: str
    notes: list[str]  # what reading an answers file converted


def open_suspect(spec: str, fp: Any, *, arch: str | None = None,
                 num_classes: int | None = None, seed: int = 0, trust_code: bool = False,
                 device: str | torch.device | None = None,
                 named: suspects.NamedModels | Callable[[str], torch.nn.Module] | None = None,
                 queries: str | os.PathLike[str] | None = None, timeout: float = 30.0,
                 max_queries: int | None = None, cache: str | os.PathLike[str] | None = None,
                 batch_size: int = 64, what: str = "suspect",
                 suspect_timeout: float | None = suspects.SUSPECT_TIMEOUT_S) -> Opened:
    """The suspect ``spec`` names (:func:`fastfp.blackbox.resolve`), for the fingerprint ``fp``.

    ``queries``: the ``queries.json`` of :func:`export`, required for (and only for) an answers
    file. ``timeout``, ``max_queries`` (images) and ``cache`` apply to a service; ``device`` to a
    model that runs here; ``num_classes`` (default: the fingerprint's) to an ``arch`` head;
    ``suspect_timeout`` (seconds) to each inference of an ONNX model.
    Errors start with ``what``."""
    fp = _fingerprint(fp)
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"{what}: expected a spec string, got {spec!r}")
    n = len(fp)
    classes = num_classes if num_classes is not None else fp.meta.get("num_classes")
    if queries is not None and bb.is_service(spec):
        raise ValueError(f"queries: given, but {what} {spec!r} is a service, not an answers file")
    if queries is not None:
        read_queries(queries, fp)
    norm = fp.meta.get("normalize")
    try:
        box = bb.resolve(spec, lambda: query_images(fp)[0], 1, arch=arch,
                         num_classes=classes, seed=seed, trust_code=trust_code, named=named,
                         num_inputs=n, normalize=None if not norm else tuple(norm),
                         timeout=timeout, batch_size=batch_size, max_queries=max_queries,
                         cache=None if cache is None else Path(cache),
                         suspect_timeout=suspect_timeout)
    except (ValueError, TypeError, OSError) as exc:
        raise _renamed(exc, what) from None
    if isinstance(box, bb.Recorded):
        if queries is None:
            raise ValueError(f"{what}: {spec!r} is an answers file: give the queries.json that "
                             "`fastfp export` wrote (it ties the rows to this fingerprint)")
        return Opened(box, Path(spec).name, list(box.notes))
    if queries is not None:
        raise ValueError(f"queries: given, but {what} {spec!r} is a model, not an answers file")
    # A model that runs here is run as a model: exact examples, its own logits, on `device`.
    local = box.fn if isinstance(box, bb.FunctionBlackBox) else getattr(box, "model", None)
    if isinstance(local, torch.nn.Module) and not bb.is_service(spec):
        if device is not None:
            local = local.to(_validate.device("device", device))
        try:  # one example now: a wrong shape or class count is named before any work
            checks.probe(local, fp.inputs[:1], fp.meta.get("num_classes"),
                         checks.model_device(local))
        except suspects.SuspectError:
            raise  # a timeout, NaN outputs: the message names the model
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what}: not a classifier of the fingerprint's inputs and "
                             f"classes ({exc})") from None
        return Opened(local.eval(), _short_name(spec), [])
    return Opened(box, spec if bb.is_service(spec) else _short_name(spec), [])


def _renamed(exc: Exception, what: str) -> Exception:
    """``exc`` with its message naming ``what`` (the argument the user gave) instead of the
    library's parameter."""
    text = str(exc)
    for prefix in ("blackbox: ", "path: ", "model: "):
        text = text.removeprefix(prefix)
    try:
        return type(exc)(f"{what}: {text}")
    except TypeError:  # an exception type with another constructor
        return (OSError if isinstance(exc, OSError) else ValueError)(f"{what}: {text}")


def _short_name(spec: str) -> str:
    path = Path(spec)
    return path.stem if path.exists() else spec


def _fingerprint(fp: Any) -> Any:
    from ..fingerprint import Fingerprint

    if not isinstance(fp, Fingerprint):
        raise TypeError(f"fp: expected a fastfp.Fingerprint, got {type(fp).__name__}")
    if len(fp) == 0:
        raise ValueError("fp: the fingerprint is empty")
    return fp


@dataclasses.dataclass(frozen=True)
class Checked:
    """What :func:`check` decided, and what it cost."""

    verdict: Verdict
    name: str                   # the suspect's name
    sent: dict[str, Any]        # images and requests sent to a black box, cache hits
    notes: list[str]            # conversions of an answers file


def check(spec: str, fp: Any, *, negatives: Sequence[str] = (), threshold: float | None = None,
          alpha: float = 0.01, null: str | None = None, negatives_name: str = "negatives",
          **open_args: Any) -> Checked:
    """Open the suspect ``spec`` and the ``negatives`` specs (:func:`open_suspect`, the same
    ``open_args``; negatives take no ``queries``; their errors start with ``negatives_name``)
    and decide (:func:`verdict`). Whether a null exists is checked before anything is opened or
    sent."""
    from .verdict import check_decision, null_of

    fp = _fingerprint(fp)
    alpha, threshold = check_decision(alpha, threshold)
    if null is not None and null != "chance":
        raise ValueError(f"null: expected None or 'chance', got {null!r}")
    if not negatives and fp.meta.get("null_rate") is None:
        null_of(fp, None, null=null, threshold=threshold)  # raises when there is no null
    opened = open_suspect(spec, fp, **open_args)
    others = {k: v for k, v in open_args.items() if k != "queries"}
    negs = [open_suspect(s, fp, **{**others, "what": f"{negatives_name} {s}"}).suspect
            for s in negatives]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rounding: reported in the verdict instead
        v = verdict(opened.suspect, fp, negatives=negs or None, threshold=threshold,
                    alpha=alpha, null=null)
    box = opened.suspect
    sent = box.report() if isinstance(box, bb.BlackBox) else {"queries": 0, "images": 0,
                                                               "cached": 0}
    return Checked(v, opened.name, sent, opened.notes)
