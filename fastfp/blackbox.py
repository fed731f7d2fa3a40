"""Black boxes: a suspect that answers top-k labels, queried by input index, and the one spec
grammar that names one (:func:`resolve`), for both methods and every command.

A black box holds the benign inputs ``x`` and answers ``bb(i) -> (k,)`` for one input index (the
walled-garden greedy asks one at a time) or ``bb(S) -> (L, k)`` for an index array (the open world
sends only its L selected inputs). Every image sent is counted (``images``), requests too
(``queries``); ``max_queries`` caps the images sent and is checked before sending. An optional
answer cache (``cache=PATH``: a journal of sealed JSON lines, each batch's answers appended under
the file's lock, so several processes may share it) is keyed by the black box's identity and the
SHA-256 of each image, so a repeated or resumed run never pays twice for an image.

Subclasses: :class:`OpenInference` (a model served over the Open Inference Protocol, the KServe v2
REST protocol of Triton, KServe, MLServer), :class:`Onnx` (a local ONNX file run by onnxruntime),
:class:`FunctionBlackBox` (any python function or model on image batches). :class:`Recorded`
answers from labels given in advance (an answers file, a database's outputs) and sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable as CallableT
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fastfp import _validate, suspects
from fastfp import io as fileio
from fastfp.answers import ANSWER_FILES, read_answers, read_queries, top_k_labels

# the answer cache's first line (a journal: one sealed JSON line per answer after it)
CACHE_HEADER = {"format": "fastfp.blackbox-cache/2"}


class BudgetExceeded(RuntimeError):
    """Sending the next batch would exceed the black box's query budget (``max_queries``)."""


class ServiceUnavailable(ConnectionError):
    """The black box's server could not be reached or answered an error after the retries."""


def image_digest(img: torch.Tensor) -> str:
    """SHA-256 of an image's float32 bytes and shape (the answer cache's key)."""
    arr = np.ascontiguousarray(img.detach().to("cpu", torch.float32).numpy())
    h = hashlib.sha256(repr(tuple(arr.shape)).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


class BlackBox:
    """A suspect answering top-k labels on the benign inputs ``x``, by input index.

    Subclasses implement ``_predict(x_batch) -> np.ndarray``: (B, C) float scores (the top-k is
    taken here) or (B, k') integer labels with k' >= k.
    """

    def __init__(self, x: torch.Tensor, k: int, *, batch_size: int = 64,
                 max_queries: int | None = None, cache: str | Path | None = None,
                 normalize: tuple[Any, Any] | None = None) -> None:
        _validate.tensor("x", x, min_dim=2)
        if not x.is_floating_point():
            raise TypeError(f"x: expected float images in 0..1, got {x.dtype}")
        self.normalize = None  # what the model expects: it is sent (x - mean) / std
        if normalize is not None:
            if not isinstance(normalize, tuple | list) or len(normalize) != 2:
                raise TypeError("normalize: expected (mean, std)")
            mean, std = (torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1, 1)
                         for v in normalize)
            if (std <= 0).any():
                raise ValueError("normalize: std must be > 0")
            self.normalize = (mean, std)
        self.x = x
        self.k = _validate.integer("k", k, lo=1)
        self.batch_size = _validate.integer("batch_size", batch_size, lo=1)
        self.max_queries = (None if max_queries is None
                            else _validate.integer("max_queries", max_queries, lo=0))
        if cache is not None and not isinstance(cache, str | Path):
            raise TypeError(f"cache: expected a path, got {type(cache).__name__}")
        self.cache = None if cache is None else Path(cache)
        self.queries = 0
        self.images = 0
        self.cached = 0
        self._answers: dict[str, list[int]] = {}
        self._digests: dict[int, str] = {}
        if self.cache is not None and self.cache.exists():
            self._answers = self._load_cache(self.cache)

    # ------------------------------------------------------------------ identity and cache
    def identity(self) -> str:
        """A string naming what is queried (the answer cache's namespace)."""
        return type(self).__name__

    def _load_cache(self, path: Path) -> dict[str, list[int]]:
        answers: dict[str, list[int]] = {}
        for rec in fileio.read_records(path, header=CACHE_HEADER, name="cache"):
            if rec.get("box") != self.identity():
                continue
            image, labels = rec.get("image"), rec.get("labels")
            if not isinstance(image, str) or not isinstance(labels, list):
                raise ValueError(f"cache: {str(path)!r} holds a record without image and labels")
            if len(labels) >= len(answers.get(image, ())):  # the longest top-k asked
                answers[image] = labels
        return answers

    def _digest(self, i: int) -> str:
        if i not in self._digests:
            self._digests[i] = image_digest(self.x[i])
        return self._digests[i]

    # ----------------------------------------------------------------------------- queries
    def __call__(self, indices: Any) -> np.ndarray:
        """Top-k labels int64: (k,) for one index, (L, k) for a 1-D index array."""
        single = isinstance(indices, int | np.integer) and not isinstance(indices, bool)
        idx = np.atleast_1d(np.asarray(indices))
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError(f"indices: expected an int or a 1-D integer array, got "
                            f"{getattr(indices, 'dtype', type(indices).__name__)} "
                            f"shape {idx.shape}")
        N = self.x.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= N):
            raise ValueError(f"indices: must lie in 0..{N - 1}")
        keys = [self._digest(int(i)) for i in idx]
        # an answer cached with a smaller k is asked again
        new = [len(self._answers.get(h, ())) < self.k for h in keys]
        todo = list(dict.fromkeys(int(i) for i, n in zip(idx, new, strict=True) if n))
        self.cached += len(idx) - sum(new)
        for s in range(0, len(todo), self.batch_size):
            batch = todo[s:s + self.batch_size]
            if self.max_queries is not None and self.images + len(batch) > self.max_queries:
                raise BudgetExceeded(
                    f"max_queries: sending {len(batch)} more images would exceed the budget of "
                    f"{self.max_queries} images ({self.images} sent so far)")
            labels = self._labels(self.x[batch])
            self.queries += 1
            self.images += len(batch)
            fresh = {self._digest(i): [int(v) for v in row]
                     for i, row in zip(batch, labels, strict=True)}
            self._answers.update(fresh)
            if self.cache is not None:  # answers already paid for survive a later failure
                fileio.append_records(self.cache, [
                    {"box": self.identity(), "image": h, "labels": v} for h, v in fresh.items()
                ], header=CACHE_HEADER, name="cache")
        rows = [self._answers[h][: self.k] for h in keys]
        out = np.array(rows, dtype=np.int64).reshape(len(idx), self.k)
        return out[0] if single else out

    def _labels(self, xb: torch.Tensor) -> np.ndarray:
        xb = xb.detach().to("cpu", torch.float32)
        if self.normalize is not None:
            xb = (xb - self.normalize[0]) / self.normalize[1]
        out = np.asarray(self._predict(xb))
        where = self._where()
        if out.ndim != 2 or out.shape[0] != len(xb):
            raise ValueError(f"{where}: expected (batch, classes) scores or (batch, k) labels "
                             f"for {len(xb)} images, got shape {out.shape}")
        if out.dtype.kind == "f":
            if out.shape[1] < self.k:
                raise ValueError(f"{where}: returned {out.shape[1]} scores, fewer than "
                                 f"k = {self.k}")
            return top_k_labels(out, self.k)
        if out.dtype.kind in "iu":
            if out.shape[1] < self.k:
                raise ValueError(f"{where}: returned {out.shape[1]} labels per image, fewer "
                                 f"than k = {self.k}")
            return out[:, : self.k].astype(np.int64)
        raise ValueError(f"{where}: expected float scores or integer labels, got {out.dtype}")

    def _where(self) -> str:
        return self.identity()

    def _predict(self, xb: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """What was queried and what it cost: identity, requests, images sent, cache hits."""
        return {"blackbox": self.identity(), "queries": self.queries, "images": self.images,
                "cached": self.cached, "max_queries": self.max_queries}


class FunctionBlackBox(BlackBox):
    """Any python function on image batches: torch (B, C, H, W) -> (B, C) scores or (B, k)
    labels (an ``nn.Module`` too: it is run under ``torch.no_grad``)."""

    def __init__(self, fn: CallableT[[torch.Tensor], Any], x: torch.Tensor, k: int,
                 *, name: str | None = None, **kw: Any) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name: expected a string, got {type(name).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", type(fn).__name__)
        super().__init__(x, k, **kw)

    def identity(self) -> str:
        return f"callable:{self.name}"

    def _predict(self, xb: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = self.fn(xb)
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        return np.asarray(out)


class Onnx(BlackBox):
    """A local ONNX classifier run by onnxruntime on the CPU (a format that cannot run code)."""

    def __init__(self, path: str | Path, x: torch.Tensor, k: int, **kw: Any) -> None:
        if not isinstance(path, str | Path):
            raise TypeError(f"path: expected a path, got {type(path).__name__}")
        kind = suspects.sniff(path, fileio.read_bytes(path, name="path")[:64])
        if kind != "onnx":
            raise ValueError(f"path: {str(path)!r} is not an ONNX model (looks like {kind})")
        self.path = str(path)
        self.model = suspects.OnnxClassifier(path, providers=["CPUExecutionProvider"])
        super().__init__(x, k, **kw)

    def identity(self) -> str:
        return f"onnx:{Path(self.path).resolve()}"

    def _predict(self, xb: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.model(xb).numpy()

    def report(self) -> dict[str, Any]:
        return {**super().report(), "path": self.path}


def _check_url(url: Any) -> tuple[str, str]:
    """(server base, model path) of ``http(s)://HOST:PORT/v2/models/NAME[/versions/V]``."""
    if not isinstance(url, str):
        raise TypeError(f"url: expected a string, got {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    segs = parts.path.rstrip("/").split("/")
    ok = (parts.scheme in ("http", "https") and parts.hostname and not parts.query
          and (len(segs) == 4 or (len(segs) == 6 and segs[4] == "versions" and segs[5]))
          and segs[:3] == ["", "v2", "models"] and segs[3])
    if not ok:
        raise ValueError(f"url: expected http(s)://HOST:PORT/v2/models/NAME[/versions/V], got "
                         f"{url!r}")
    return f"{parts.scheme}://{parts.netloc}", "/".join(segs)


class OpenInference(BlackBox):
    """A model served over the Open Inference Protocol (KServe v2 REST), standard library only.

    Checks server health, model readiness and metadata first; sends FP32 inputs in the model's
    declared layout (NCHW or NHWC, a batch dimension of -1 allowed), normalised by
    ``normalize=(mean, std)`` when given; reads FP32 scores (B, C) or INT64 labels (B, k).
    Timeouts, connection errors and HTTP 5xx are retried ``retries`` times with exponential
    backoff (``backoff``, 2x each time), then :class:`ServiceUnavailable`.
    """

    def __init__(self, url: str, x: torch.Tensor, k: int, *,
                 timeout: float = 10, retries: int = 3, backoff: float = 0.5,
                 **kw: Any) -> None:
        self.base, self.model_path = _check_url(url)
        self.url = url.rstrip("/")
        self.timeout = _validate.real("timeout", timeout, lo=1e-3)  # seconds
        self.retries = _validate.integer("retries", retries, lo=0)
        self.backoff = _validate.real("backoff", backoff, lo=0.0)
        super().__init__(x, k, **kw)
        self._check_service()

    def identity(self) -> str:
        return f"oip:{self.url}"

    def _where(self) -> str:
        return f"url {self.url!r}"

    def report(self) -> dict[str, Any]:
        return {**super().report(), "url": self.url}

    # ---------------------------------------------------------------------------- transport
    def _request(self, path: str, body: Any = None) -> Any:
        """JSON of GET (or POST ``body``) ``path``, retried on timeouts, 5xx and lost
        connections."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(self.base + path, data=data, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                try:
                    return json.loads(raw or b"null")
                except json.JSONDecodeError:
                    raise ValueError(f"url: {self.url!r} answered {path} with non-JSON "
                                     f"{raw[:80]!r}") from None
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:200].decode("utf-8", "replace")
                if exc.code < 500:
                    raise _HTTPStatus(exc.code, detail) from None
                last = f"HTTP {exc.code} {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
        raise ServiceUnavailable(f"url: {self.url!r} did not answer {path} after "
                                 f"{self.retries + 1} attempts ({last})")

    def _check_service(self) -> None:
        try:
            self._request("/v2/health/ready")
        except _HTTPStatus as exc:
            raise ServiceUnavailable(f"url: the server of {self.url!r} is not ready "
                                     f"(HTTP {exc.code})") from None
        try:
            self._request(self.model_path + "/ready")
            meta = self._request(self.model_path)
        except _HTTPStatus as exc:
            raise ValueError(f"url: {self.url!r}: unknown or unready model (HTTP {exc.code}: "
                             f"{exc.detail})") from None
        inputs = meta.get("inputs") if isinstance(meta, dict) else None
        if not inputs or not isinstance(inputs[0], dict) or "name" not in inputs[0]:
            raise ValueError(f"url: {self.url!r}: metadata declare no input ({meta!r:.200})")
        self.input_name = str(inputs[0]["name"])
        shape = [int(d) for d in inputs[0].get("shape", [])]
        C, H, W = (int(d) for d in self.x.shape[1:4]) if self.x.dim() == 4 else (0, 0, 0)
        self.nhwc = len(shape) == 4 and shape[-1] == C and shape[1] != C
        if len(shape) == 4:
            want = [H, W, C] if self.nhwc else [C, H, W]
            if any(d not in (-1, w) for d, w in zip(shape[1:], want, strict=True)):
                raise ValueError(f"url: {self.url!r} declares input shape {shape}, the inputs "
                                 f"are {tuple(self.x.shape[1:])} (C, H, W)")

    def _predict(self, xb: torch.Tensor) -> np.ndarray:
        if self.nhwc:
            xb = xb.permute(0, 2, 3, 1)
        arr = xb.contiguous().numpy()
        body = {"inputs": [{"name": self.input_name, "shape": list(arr.shape),
                            "datatype": "FP32", "data": arr.reshape(-1).tolist()}]}
        try:
            resp = self._request(self.model_path + "/infer", body)
        except _HTTPStatus as exc:
            raise ValueError(f"url: {self.url!r} refused the request (HTTP {exc.code}: "
                             f"{exc.detail})") from None
        outs = resp.get("outputs") if isinstance(resp, dict) else None
        if not outs or not isinstance(outs[0], dict):
            raise ValueError(f"url: {self.url!r} returned no outputs ({resp!r:.200})")
        out = outs[0]
        dtype = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64,
                 "INT32": np.int32}.get(str(out.get("datatype")))
        if dtype is None:
            raise ValueError(f"url: {self.url!r} returned datatype {out.get('datatype')!r}; "
                             "expected FP32 scores or INT64 labels")
        shape = [int(d) for d in out.get("shape", [])]
        data = np.asarray(out.get("data", []), dtype=dtype)
        if len(shape) != 2 or shape[0] != len(arr) or data.size != shape[0] * shape[1]:
            raise ValueError(f"url: {self.url!r} returned shape {shape} with {data.size} values "
                             f"for {len(arr)} images; expected (batch, classes) or (batch, k)")
        return data.reshape(shape)


class _HTTPStatus(Exception):
    """A 4xx answer (not retried)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code, self.detail = code, detail


class Recorded:
    """Answers given in advance (an answers file, a database model's outputs), asked by input
    index like a :class:`BlackBox`; nothing is sent anywhere.

    ``labels``: (N, k') int64 top-k labels, one row per input, or one row per index of
    ``indices`` (the inputs that were exported and answered by hand; asking any other input is
    an error). ``notes``: what the reader converted (to print)."""

    def __init__(self, labels: np.ndarray, k: int, *, indices: np.ndarray | None = None,
                 name: str = "answers", notes: list[str] | None = None) -> None:
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = labels[:, None]
        if labels.ndim != 2 or labels.dtype.kind not in "iu":
            raise TypeError(f"labels: expected (N, k) integer top-k labels, got {labels.dtype} "
                            f"shape {labels.shape}")
        self.k = _validate.integer("k", k, lo=1)
        if labels.shape[1] < self.k:
            raise ValueError(f"labels: top-{labels.shape[1]} answers, fewer than k = {self.k}")
        self.row: dict[int, int] | None = None
        if indices is not None:
            indices = np.asarray(indices)
            if indices.ndim != 1 or len(indices) != len(labels):
                raise ValueError(f"indices: expected one input index per row of labels "
                                 f"({len(labels)}), got shape {indices.shape}")
            self.row = {int(i): r for r, i in enumerate(indices)}
        self.labels = labels.astype(np.int64, copy=False)
        self.name = name
        self.notes = list(notes or [])
        self.queries = self.images = self.cached = 0

    def identity(self) -> str:
        return f"recorded:{self.name}"

    def __call__(self, indices: Any) -> np.ndarray:
        """The recorded labels: (k',) for one index, (L, k') for a 1-D index array."""
        idx = np.atleast_1d(np.asarray(indices))
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError(f"indices: expected an int or a 1-D integer array, got shape "
                            f"{idx.shape}")
        if self.row is not None:
            missing = [int(i) for i in idx if int(i) not in self.row]
            if missing:
                raise ValueError(f"queries: input {missing[0]} was not exported; ask with the "
                                 "same family, L, selection and seed as export-queries")
            rows = np.array([self.row[int(i)] for i in idx], dtype=np.int64)
        else:
            rows = idx.astype(np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= len(self.labels)):
                raise ValueError(f"indices: must lie in 0..{len(self.labels) - 1}")
        out = self.labels[rows]
        return out[0] if np.ndim(indices) == 0 else out

    def report(self) -> dict[str, Any]:
        """Nothing was sent: 0 requests, 0 images."""
        return {"blackbox": self.identity(), "queries": 0, "images": 0, "cached": 0,
                "max_queries": None}


GRAMMAR = ("http(s)://HOST:PORT/v2/models/NAME[/versions/V], onnx:PATH or PATH.onnx, "
           "zoo:NAME, arch:NAME[:WEIGHTS], db:NAME, a model file, or an answers file "
           "(.npy, .npz, .pt, .csv, .json)")

Inputs = torch.Tensor | CallableT[[], torch.Tensor] | None  # [N, C, H, W], or how to get them


def is_service(spec: str) -> bool:
    """Whether ``spec`` names a served model (an Open Inference Protocol URL)."""
    return isinstance(spec, str) and spec.startswith(("http://", "https://"))


def _images(x: Inputs, spec: str) -> torch.Tensor:
    """The inputs a model or a service is asked on (a callable is called only now)."""
    if x is None:
        raise ValueError(f"x: the black box {spec!r} is asked on images: give the inputs")
    return x() if callable(x) and not isinstance(x, torch.Tensor) else x


def resolve(spec: str, x: Inputs, k: int, *, arch: str | None = None,
            num_classes: int | None = None, seed: int = 0, trust_code: bool = False,
            named: suspects.NamedModels | CallableT[[str], nn.Module] | None = None,
            recorded: CallableT[[str], np.ndarray] | None = None,
            num_inputs: int | None = None, queries: str | os.PathLike[str] | None = None,
            normalize: str | tuple[Any, Any] | None = None, timeout: float = 10,
            batch_size: int = 64, max_queries: int | None = None,
            cache: str | Path | None = None) -> BlackBox | Recorded:
    """The black box that ``spec`` names, for the inputs ``x`` [N, C, H, W] (or a function
    returning them, called only when images must be sent) and top-``k`` answers:

    - ``http(s)://HOST:PORT/v2/models/NAME[/versions/V]``: :class:`OpenInference` (``timeout``,
      ``cache``: its answer cache);
    - ``onnx:PATH`` or an ONNX file: :class:`Onnx`;
    - ``zoo:NAME``: a model ``named`` knows (the command line passes the embedded zoo's loader);
    - ``arch:NAME[:WEIGHTS]``, or a state dict file with ``arch=NAME``: a torchvision / timm
      architecture (``num_classes``, ``seed`` of a random init);
    - ``db:NAME``: the outputs ``recorded(NAME)`` (a database's model: a simulation);
    - an answers file (``.npy``, ``.npz``, ``.csv``, ``.json``, a ``.pt`` of tensors): the labels
      (or scores) on each of the ``num_inputs`` inputs, or, with ``queries`` (a queries.json of
      export-queries), on each exported input: :class:`Recorded`;
    - any other model file: :func:`fastfp.suspects.load_suspect` (pickles, TorchScript and
      ``.pt2`` only with ``trust_code``), as a :class:`FunctionBlackBox`.

    Files are told apart by :func:`fastfp.suspects.sniff` (their bytes), never by loading them.
    ``normalize`` (``"imagenet"``, ``"none"``, ``"M1,M2,M3/S1,S2,S3"`` or ``(mean, std)``) is
    what a served or ONNX model expects; ``batch_size`` and ``max_queries`` (images) bound what
    is sent."""
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"blackbox: expected a string, got {spec!r}")
    _validate.integer("k", k, lo=1)
    if not isinstance(trust_code, bool):
        raise TypeError(f"trust_code: expected a bool, got {type(trust_code).__name__}")
    if max_queries is not None:
        _validate.integer("max_queries", max_queries, lo=1)
    if num_inputs is None and isinstance(x, torch.Tensor):
        num_inputs = int(x.shape[0])
    if isinstance(normalize, str):
        normalize = suspects.parse_normalize(normalize)
    if normalize == "imagenet":
        normalize = suspects.IMAGENET
    budget: dict[str, Any] = {"batch_size": batch_size, "max_queries": max_queries}
    if is_service(spec):
        return OpenInference(spec, _images(x, spec), k, normalize=normalize, timeout=timeout,
                             cache=cache, **budget)
    if spec.startswith("db:"):
        if recorded is None:
            raise ValueError(f"blackbox: {spec!r} names recorded outputs: give recorded=...")
        return Recorded(recorded(spec[3:]), k, name=spec)
    if spec.startswith("onnx:"):
        return Onnx(spec[len("onnx:"):], _images(x, spec), k, normalize=normalize, **budget)
    model: nn.Module
    if spec.startswith("zoo:"):
        names = suspects.as_named(named)
        if names is None:
            raise ValueError(f"blackbox: {spec!r} names a model: give named=... (a loader)")
        model = names.load(spec[4:])
        return FunctionBlackBox(model.eval(), _images(x, spec), k, name=spec, **budget)
    if spec.startswith("arch:"):
        name, _, weights = spec[5:].partition(":")
        model = suspects.load_suspect(weights or None, arch=name, num_classes=num_classes,
                                      seed=seed)
        return FunctionBlackBox(model, _images(x, spec), k, name=spec, **budget)
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"blackbox: expected {GRAMMAR}; got {spec!r} (no such file)")
    if arch is not None:
        model = suspects.load_suspect(path, arch=arch, num_classes=num_classes, seed=seed)
        return FunctionBlackBox(model, _images(x, spec), k, name=spec, **budget)
    data = fileio.read_bytes(path, name="blackbox")
    kind = suspects.sniff(path, data)
    suffix = path.suffix.lower()
    if (suffix in ANSWER_FILES and suffix != ".pt") or kind in ("npy", "npz") or (
            kind == "torch.save" and suspects.tensors_only(path, data)):
        asked = None if queries is None else read_queries(queries, _count(num_inputs))
        labels, notes = read_answers(path, num_inputs=num_inputs if asked is None else len(asked),
                                     k=k, num_classes=num_classes)
        return Recorded(labels, k, indices=asked, name=str(path), notes=notes)
    if kind == "onnx":
        return Onnx(path, _images(x, spec), k, normalize=normalize, **budget)
    model = suspects.load_suspect(path, trust_code=trust_code)
    return FunctionBlackBox(model, _images(x, spec), k, name=spec, **budget)


def _count(num_inputs: int | None) -> int:
    if num_inputs is None:
        raise ValueError("num_inputs: needed to check the exported queries")
    return num_inputs


def __getattr__(name: str) -> Any:
    if name == "Callable":  # its old name shadowed typing.Callable
        warnings.warn("fastfp.blackbox.Callable is deprecated: use FunctionBlackBox",
                      DeprecationWarning, stacklevel=2)
        return FunctionBlackBox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
