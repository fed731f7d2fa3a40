"""Black boxes: a suspect that answers top-k labels, queried by input index, and the one spec
grammar that names one (:func:`resolve`), for both methods and every command.

A black box holds the benign inputs ``x`` and answers ``bb(i) -> (k,)`` for one input index (the
walled-garden greedy asks one at a time) or ``bb(S) -> (L, k)`` for an index array (the open world
sends only its L selected inputs). Every image sent is counted (``images``), requests too
(``queries``), a retried request again; ``max_queries`` caps the images sent and is checked
before every send, retries included. Every answer is checked before it is used: finite scores,
labels in 0..num_classes-1 (when ``num_classes`` is known, else >= 0). An optional
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
import math
import os
import re
import socket
import ssl
import time
import urllib.parse
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


class BadReply(ValueError):
    """The black box's server answered something that is no valid reply: malformed HTTP or
    JSON, a redirect, a body over its cap, an output of the wrong shape, type or range."""


def image_digest(img: torch.Tensor) -> str:
    """SHA-256 of an image's float32 bytes and shape (the answer cache's key)."""
    arr = np.ascontiguousarray(img.detach().to("cpu", torch.float32).numpy())
    h = hashlib.sha256(repr(tuple(arr.shape)).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _label_range(labels: np.ndarray, num_classes: int | None) -> str:
    """What is wrong with integer ``labels`` [B, k] (a label outside 0..num_classes-1, or a
    negative one when the classes are unknown), or ``""``."""
    hi = None if num_classes is None else num_classes - 1
    bad = labels < 0 if hi is None else (labels < 0) | (labels > hi)
    if not bad.any():
        return ""
    i, j = (int(v) for v in np.argwhere(bad)[0])
    bound = "0..num_classes-1" + ("" if hi is None else f" = 0..{hi}")
    return f"label {int(labels[i, j])} (image {i}, rank {j + 1}) is outside {bound}"


class BlackBox:
    """A suspect answering top-k labels on the benign inputs ``x``, by input index.

    Subclasses implement ``_predict(x_batch) -> np.ndarray``: (B, C) float scores (the top-k is
    taken here) or (B, k') integer labels with k' >= k. Scores must be finite and labels lie in
    0..num_classes-1 (``num_classes`` given) or at least be >= 0; anything else is an error,
    never a label.
    """

    def __init__(self, x: torch.Tensor, k: int, *, batch_size: int = 64,
                 max_queries: int | None = None, cache: str | Path | None = None,
                 normalize: tuple[Any, Any] | None = None,
                 num_classes: int | None = None) -> None:
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
        self.num_classes = (None if num_classes is None
                            else _validate.integer("num_classes", num_classes, lo=1))
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
            self._spend(len(batch))
            labels = self._labels(self.x[batch])
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

    def _spend(self, n: int, retry: str = "") -> None:
        """Count ``n`` images (one request) as sent, before sending them: the budget is on what
        the other side receives, so a retry (``retry``: why) counts again."""
        if self.max_queries is not None and self.images + n > self.max_queries:
            what = f"resending {n} images after {retry}" if retry else f"sending {n} more images"
            raise BudgetExceeded(f"max_queries: {what} would exceed the budget of "
                                 f"{self.max_queries} images ({self.images} sent so far)")
        self.queries += 1
        self.images += n

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
            bad = np.argwhere(~np.isfinite(out))
            if len(bad):  # argsort would rank NaN as a label: refuse it
                i, j = (int(v) for v in bad[0])
                raise ValueError(f"{where}: non-finite score ({out[i, j]}) for image {i}, "
                                 f"class {j}")
            labels = top_k_labels(out, self.k)
        elif out.dtype.kind in "iu":
            if out.shape[1] < self.k:
                raise ValueError(f"{where}: returned {out.shape[1]} labels per image, fewer "
                                 f"than k = {self.k}")
            labels = out[:, : self.k]
            if labels.dtype == np.uint64 and labels.size and labels.max() > np.iinfo(np.int64).max:
                raise ValueError(f"{where}: label {labels.max()} is outside 0..num_classes-1")
            labels = labels.astype(np.int64)
        else:
            raise ValueError(f"{where}: expected float scores or integer labels, got {out.dtype}")
        problem = _label_range(labels, self.num_classes)
        if problem:
            raise ValueError(f"{where}: {problem}")
        return labels

    def _where(self) -> str:
        return self.identity()

    def _predict(self, xb: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """What was queried and what it cost: identity, requests, images sent, cache hits."""
        return {"blackbox": self.identity(), "queries": self.queries, "images": self.images,
                "cached": self.cached, "max_queries": self.max_queries}

    def ask(self, images: torch.Tensor) -> np.ndarray:
        """Top-k labels int64 [B, k] of the given ``images`` [B, C, H, W] (0..1, the shape of
        ``x``) instead of inputs of ``x``: sent, cached and counted as indexed queries are, and
        refused before anything is sent when the images not answered yet exceed the budget."""
        _validate.tensor("images", images, min_dim=2)
        if not images.is_floating_point() or tuple(images.shape[1:]) != tuple(self.x.shape[1:]):
            raise ValueError(f"images: expected float images of shape (B, "
                             f"{', '.join(map(str, self.x.shape[1:]))}) like the black box's "
                             f"inputs, got {images.dtype} {tuple(images.shape)}")
        digests = [image_digest(img) for img in images]
        new = len({h for h in digests if len(self._answers.get(h, ())) < self.k})
        if self.max_queries is not None and self.images + new > self.max_queries:
            raise BudgetExceeded(
                f"max_queries: sending {new} more images would exceed the budget of "
                f"{self.max_queries} images ({self.images} sent so far)")
        saved = self.x, self._digests
        self.x, self._digests = images, dict(enumerate(digests))
        try:
            return self(np.arange(len(images)))
        finally:
            self.x, self._digests = saved


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

    def __init__(self, path: str | Path, x: torch.Tensor, k: int, *,
                 timeout: float | None = suspects.SUSPECT_TIMEOUT_S, **kw: Any) -> None:
        if not isinstance(path, str | Path):
            raise TypeError(f"path: expected a path, got {type(path).__name__}")
        kind = suspects.sniff(path, fileio.read_bytes(path, name="path")[:64])
        if kind != "onnx":
            raise ValueError(f"path: {str(path)!r} is not an ONNX model (looks like {kind})")
        self.path = str(path)
        self.model = suspects.OnnxClassifier(path, providers=["CPUExecutionProvider"],
                                             timeout=timeout)  # seconds per inference
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


# What a server may send: a reply is read within these bounds, or refused.
MAX_LINE = 8 << 10  # bytes of the status line or of one header line
MAX_HEADERS = 100  # header lines
MAX_HEADER_BYTES = 64 << 10  # all header lines together
MIN_REPLY_BYTES = 4 << 20  # the floor of a reply's cap
NUMBER_BYTES = 32  # one JSON number and its separator, generously
ERROR_BYTES = 64 << 10  # read of an error reply (its first 200 characters are shown)
MAX_JSON_DEPTH = 32  # nesting of a reply's JSON (json.loads recurses)
DEFAULT_CLASSES = 1000  # sizes the cap when neither the caller nor the model's metadata says
MAX_DECLARED_CLASSES = 100_000  # the most classes the metadata may size the cap with
SCORE_TYPES: dict[str, type[np.floating[Any]]] = {"FP16": np.float16, "FP32": np.float32,
                                                  "FP64": np.float64}
LABEL_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")


class OpenInference(BlackBox):
    """A model served over the Open Inference Protocol (KServe v2 REST), standard library only.

    Checks server health, model readiness and metadata first; sends FP32 inputs in the model's
    declared layout (NCHW or NHWC, a batch dimension of -1 allowed), normalised by
    ``normalize=(mean, std)`` when given; reads scores (B, C) (FP16/32/64) or integer labels
    (B, k).

    The server is the checked party's, so nothing it sends is trusted: each request has one
    deadline, ``timeout`` seconds from the connect to the last byte of the reply (retries and
    their backoff included); a reply is read up to a cap sized by the answer expected (batch x
    classes x 32 bytes, at least 4 MB; ``num_classes``, else the classes the metadata declare,
    else 1000), with at most 100 header lines of 8 KB; redirects are refused; every reply is
    checked (JSON nesting, ``outputs``, datatype, shape against the batch, number of values,
    finite scores, integer labels in range). Anything else is a :class:`BadReply` (a
    ``ValueError``) naming the URL and the field. Timeouts, lost connections and HTTP 5xx are
    retried ``retries`` times with exponential backoff (``backoff``, 2x each time) while the
    deadline allows, each retry counted against ``max_queries`` as the images it resends, then
    :class:`ServiceUnavailable`. Connections go straight to the server (no proxy).
    """

    def __init__(self, url: str, x: torch.Tensor, k: int, *,
                 timeout: float = 10, retries: int = 3, backoff: float = 0.5,
                 **kw: Any) -> None:
        self.base, self.model_path = _check_url(url)
        parts = urllib.parse.urlsplit(self.base)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"url: bad port in {url!r}") from None
        self._tls = parts.scheme == "https"
        self._host = str(parts.hostname)
        self._port = port or (443 if self._tls else 80)
        self._host_header = parts.netloc.rpartition("@")[2]
        self.url = url.rstrip("/")
        self.timeout = _validate.real("timeout", timeout, lo=1e-3)  # seconds per request
        self.retries = _validate.integer("retries", retries, lo=0)
        self.backoff = _validate.real("backoff", backoff, lo=0.0)
        self.declared_classes: int | None = None
        super().__init__(x, k, **kw)
        self._check_service()

    def identity(self) -> str:
        return f"oip:{self.url}"

    def _where(self) -> str:
        return f"url {self.url!r}"

    def report(self) -> dict[str, Any]:
        return {**super().report(), "url": self.url}

    def _bad(self, path: str, field: str, problem: str) -> BadReply:
        return BadReply(f"{self._where()}: {path}: {field}: {problem}")

    # ---------------------------------------------------------------------------- transport
    def _request(self, path: str, body: Any = None, *, images: int = 0,
                 limit: int = MIN_REPLY_BYTES) -> Any:
        """JSON of GET (or POST ``body``) ``path`` within one deadline of ``timeout`` seconds,
        retried on timeouts, 5xx and lost connections while time is left. ``images``: what the
        body sends (a retry counts them again against the budget); ``limit``: the reply's cap
        in bytes."""
        data = None if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + self.timeout
        last, attempts, late = "", 0, False
        for attempt in range(self.retries + 1):
            if attempt:
                pause = self.backoff * 2 ** (attempt - 1)
                if time.monotonic() + pause >= deadline:
                    late = True
                    break
                time.sleep(pause)
                if images:
                    self._spend(images, retry=last)
            attempts += 1
            try:
                status, raw = self._exchange("GET" if data is None else "POST", path, data,
                                             deadline, limit)
            except OSError as exc:  # timeouts, refused or lost connections, TLS errors
                last = _clip(str(exc) or type(exc).__name__, 120)
                late = time.monotonic() >= deadline
                continue
            if 300 <= status < 400:  # another origin or scheme may be behind it: never follow
                raise self._bad(path, "status", f"a redirect (HTTP {status}); fastfp follows "
                                "no redirect: give the final URL")
            if status < 300:
                return self._json(raw, path)
            if status < 500:
                raise _HTTPStatus(status, _clip(raw))
            last = f"HTTP {status} {_clip(raw)}".strip()
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if late:
            raise ServiceUnavailable(f"{self._where()}: did not answer {path} within "
                                     f"{self.timeout:g} s ({tries}; {last})")
        raise ServiceUnavailable(f"{self._where()}: did not answer {path} after {tries} "
                                 f"({last})")

    def _exchange(self, method: str, path: str, data: bytes | None, deadline: float,
                  limit: int) -> tuple[int, bytes]:
        """One HTTP/1.1 request on its own connection, within ``deadline``: (status, body).
        The body of a 2xx reply is read up to ``limit`` bytes (more is an error), of an error
        reply up to ERROR_BYTES (the rest ignored), of a redirect not at all."""
        sock = socket.create_connection((self._host, self._port), timeout=_left(deadline))
        try:
            if self._tls:
                sock.settimeout(_left(deadline))
                sock = ssl.create_default_context().wrap_socket(sock,
                                                                server_hostname=self._host)
            head = (f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\n"
                    "Accept: application/json\r\nUser-Agent: fastfp\r\nConnection: close\r\n")
            if data is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            sock.settimeout(_left(deadline))
            sock.sendall(head.encode("latin-1") + b"\r\n" + (data or b""))
            reader = _Reader(sock, deadline)
            status, headers = self._head(reader, path)
            if 300 <= status < 400:
                return status, b""
            ok = status < 300
            return status, self._body(reader, headers, path, limit if ok else ERROR_BYTES, ok)
        finally:
            sock.close()

    def _head(self, reader: _Reader, path: str) -> tuple[int, dict[str, str]]:
        """The status and headers (names in lower case) of a reply, within the header caps."""
        line = reader.line(MAX_LINE)
        if line is None:
            raise self._bad(path, "status line", f"more than {MAX_LINE} bytes")
        if not line:  # closed before answering: a lost connection, retried
            raise ConnectionResetError("the server closed the connection without answering")
        match = re.fullmatch(rb"HTTP/1\.[01] ([2-5]\d\d)(?: [^\r\n]*)?\r?\n", line)
        if match is None:
            raise self._bad(path, "status line", f"expected 'HTTP/1.x' and a status 200..599, "
                                                 f"got {_clip(line, 60)!r}")
        headers: dict[str, str] = {}
        total = 0
        for count in range(MAX_HEADERS + 1):
            line = reader.line(MAX_LINE)
            if line is None:
                raise self._bad(path, "headers", f"a header line of more than {MAX_LINE} bytes")
            total += len(line)
            if total > MAX_HEADER_BYTES:
                raise self._bad(path, "headers", f"more than {MAX_HEADER_BYTES} bytes")
            if line in (b"\r\n", b"\n"):
                return int(match.group(1)), headers
            if count == MAX_HEADERS:
                raise self._bad(path, "headers", f"more than {MAX_HEADERS} header lines")
            if not line.endswith(b"\n"):
                raise self._bad(path, "headers", "the connection closed within the headers")
            name, sep, value = line.decode("latin-1").partition(":")
            key, value = name.lower(), value.strip()
            if not sep or not key or key != key.strip():
                raise self._bad(path, "headers", f"malformed line {_clip(line, 60)!r}")
            if key in ("content-length", "transfer-encoding") and headers.get(key, value) != value:
                raise self._bad(path, "headers", f"two different {name} headers")
            headers[key] = value
        raise AssertionError("unreachable")  # the loop returns or raises

    def _body(self, reader: _Reader, headers: dict[str, str], path: str, limit: int,
              strict: bool) -> bytes:
        """The body, at most ``limit`` bytes; ``strict``: more, or fewer than announced, is an
        error (else what arrived within the limit is returned)."""
        coding = headers.get("transfer-encoding", "").lower()
        if coding:
            if coding != "chunked":
                if strict:
                    raise self._bad(path, "headers", f"Transfer-Encoding {_clip(coding, 40)!r} "
                                                     "is not supported")
                return b""
            return self._chunked(reader, path, limit, strict)
        if "content-length" in headers:
            text = headers["content-length"]
            if not (text.isascii() and text.isdigit()):
                raise self._bad(path, "Content-Length", f"{_clip(text, 40)!r} is not a number")
            n = int(text) if len(text) <= 18 else 10 ** 18
            if n > limit:
                if strict:
                    raise self._bad(path, "Content-Length", f"{text} bytes, more than the "
                                                            f"{limit} bytes a reply may have")
                n = limit
            raw = reader.read(n)
            if len(raw) < n and strict:
                raise self._bad(path, "body", f"{len(raw)} of {n} bytes (Content-Length) "
                                              "before the connection closed")
            return raw
        raw = reader.read(limit + 1)  # no length: read to the end, one byte past the cap
        if len(raw) > limit:
            if strict:
                raise self._bad(path, "body", f"more than {limit} bytes")
            return raw[:limit]
        return raw

    def _chunked(self, reader: _Reader, path: str, limit: int, strict: bool) -> bytes:
        """A chunked body (each chunk adds a byte at least, so the cap bounds the loop)."""
        body = bytearray()
        while True:
            line = reader.line(MAX_LINE)
            size = line.split(b";")[0].strip() if line else b""
            if not re.fullmatch(rb"[0-9a-fA-F]{1,15}", size):
                if strict:
                    raise self._bad(path, "body", "a malformed chunk size")
                return bytes(body)
            n = int(size, 16)
            if n == 0:
                return bytes(body)  # trailers, if any, are not read: the connection closes
            if len(body) + n > limit:
                if strict:
                    raise self._bad(path, "body", f"more than {limit} bytes")
                return bytes(body)
            chunk = reader.read(n)
            if len(chunk) < n or reader.line(2) not in (b"\r\n", b"\n"):
                if strict:
                    raise self._bad(path, "body", "a chunk shorter than its declared size")
                return bytes(body + chunk)
            body += chunk

    def _json(self, raw: bytes, path: str) -> Any:
        if _json_depth(raw) > MAX_JSON_DEPTH:
            raise self._bad(path, "body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            return json.loads(raw or b"null")
        except (ValueError, RecursionError) as exc:
            raise self._bad(path, "body", f"not JSON ({_clip(str(exc), 80)}): "
                                          f"{_clip(raw, 60)!r}") from None

    # ----------------------------------------------------------------------------- protocol
    def _check_service(self) -> None:
        try:
            self._request("/v2/health/ready")
        except _HTTPStatus as exc:
            raise ServiceUnavailable(f"{self._where()}: the server is not ready "
                                     f"(HTTP {exc.code})") from None
        path = self.model_path
        try:
            self._request(path + "/ready")
            meta = self._request(path)
        except _HTTPStatus as exc:
            raise ValueError(f"{self._where()}: unknown or unready model (HTTP {exc.code}: "
                             f"{exc.detail})") from None
        if not isinstance(meta, dict):
            raise self._bad(path, "body", f"expected the model's metadata (an object), got "
                                          f"{_kind(meta)}")
        inputs = meta.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise self._bad(path, "inputs", f"expected a list of the model's inputs, got "
                                            f"{_kind(inputs)}")
        first = inputs[0]
        if not isinstance(first, dict) or not isinstance(first.get("name"), str) \
                or not first["name"]:
            raise self._bad(path, "inputs[0].name", "expected the input's name (a string)")
        shape = first.get("shape", [])
        if not isinstance(shape, list) or len(shape) > 8 \
                or not all(type(d) is int and d >= -1 for d in shape):
            raise self._bad(path, "inputs[0].shape", f"expected a list of dimensions (-1: "
                                                     f"any), got {_clip(repr(shape), 60)}")
        self.input_name = first["name"]
        C, H, W = (int(d) for d in self.x.shape[1:4]) if self.x.dim() == 4 else (0, 0, 0)
        self.nhwc = len(shape) == 4 and shape[-1] == C and shape[1] != C
        if len(shape) == 4:
            want = [H, W, C] if self.nhwc else [C, H, W]
            if any(d not in (-1, w) for d, w in zip(shape[1:], want, strict=True)):
                raise ValueError(f"{self._where()} declares input shape {shape}, the inputs "
                                 f"are {tuple(self.x.shape[1:])} (C, H, W)")
        outputs = meta.get("outputs")  # the classes it declares size the reply cap
        out = outputs[0] if isinstance(outputs, list) and outputs else None
        dims = out.get("shape") if isinstance(out, dict) else None
        if isinstance(dims, list) and dims and type(dims[-1]) is int \
                and 0 < dims[-1] <= MAX_DECLARED_CLASSES:
            self.declared_classes = dims[-1]

    def _predict(self, xb: torch.Tensor) -> np.ndarray:
        if self.nhwc:
            xb = xb.permute(0, 2, 3, 1)
        arr = xb.contiguous().numpy()
        body = {"inputs": [{"name": self.input_name, "shape": list(arr.shape),
                            "datatype": "FP32", "data": arr.reshape(-1).tolist()}]}
        classes = self.num_classes or self.declared_classes or DEFAULT_CLASSES
        limit = max(MIN_REPLY_BYTES, len(arr) * classes * NUMBER_BYTES + (64 << 10))
        path = self.model_path + "/infer"
        try:
            resp = self._request(path, body, images=len(arr), limit=limit)
        except _HTTPStatus as exc:
            raise BadReply(f"{self._where()} refused the request (HTTP {exc.code}: "
                           f"{exc.detail})") from None
        return self._outputs(resp, len(arr), path)

    def _outputs(self, resp: Any, n: int, path: str) -> np.ndarray:
        """The first output of an inference reply for ``n`` images, checked: scores [n, C]
        (finite, within the datatype's range) or labels [n, k] (integers in range)."""
        if not isinstance(resp, dict):
            raise self._bad(path, "body", f"expected an object, got {_kind(resp)}")
        outs = resp.get("outputs")
        if not isinstance(outs, list) or not outs:
            raise self._bad(path, "outputs", f"expected a list of outputs, got {_kind(outs)}")
        out = outs[0]
        if not isinstance(out, dict):
            raise self._bad(path, "outputs[0]", f"expected an object, got {_kind(out)}")
        dtype = out.get("datatype")
        if dtype not in SCORE_TYPES and dtype not in LABEL_TYPES:
            raise self._bad(path, "outputs[0].datatype",
                            f"{_clip(repr(dtype), 40)} is not one of FP16, FP32, FP64 (scores) "
                            "or INT8..INT64, UINT8..UINT64 (labels)")
        shape = out.get("shape")
        if not isinstance(shape, list) or len(shape) != 2 or shape[0] != n \
                or not all(type(d) is int and d >= 1 for d in shape):
            raise self._bad(path, "outputs[0].shape",
                            f"returned shape {_clip(repr(shape), 60)} for {n} images; expected "
                            "(batch, classes) or (batch, k)")
        data = out.get("data")
        flat = _flatten(data, shape) if isinstance(data, list) else None
        if flat is None:
            raise self._bad(path, "outputs[0].data", f"expected a list of {shape[0]} x "
                                                     f"{shape[1]} values, flat or nested")
        if len(flat) != shape[0] * shape[1]:
            raise self._bad(path, "outputs[0].data", f"{len(flat)} values for shape {shape}")
        field = "outputs[0].data"
        if dtype in LABEL_TYPES:
            odd = next((v for v in flat if type(v) is not int), _NONE)
            if odd is not _NONE:
                raise self._bad(path, field, f"expected integer labels ({dtype}), got "
                                             f"{_clip(repr(odd), 40)}")
            hi = np.iinfo(np.int64).max if self.num_classes is None else self.num_classes - 1
            wrong = next(((i, v) for i, v in enumerate(flat) if not 0 <= v <= hi), None)
            if wrong is not None:
                bound = "0..num_classes-1" + (f" = 0..{hi}" if self.num_classes else "")
                raise self._bad(path, field, f"label {_clip(str(wrong[1]), 40)} (image "
                                             f"{wrong[0] // shape[1]}) is outside {bound}")
            return np.array(flat, dtype=np.int64).reshape(shape)
        odd = next((v for v in flat if type(v) not in (int, float)), _NONE)
        if odd is not _NONE:
            raise self._bad(path, field, f"expected numbers ({dtype}), got "
                                         f"{_clip(repr(odd), 40)}")
        try:
            scores = np.array(flat, dtype=np.float64)
        except OverflowError:  # an integer beyond any float
            scores = np.full(len(flat), np.inf)
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            v = scores[bad[0]]
            name = "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")
            raise self._bad(path, field, f"{name} at index {bad[0]} (image "
                                         f"{bad[0] // shape[1]}): scores must be finite")
        big = np.flatnonzero(np.abs(scores) > np.finfo(SCORE_TYPES[dtype]).max)
        if big.size:
            raise self._bad(path, field, f"{scores[big[0]]:g} at index {big[0]} is outside the "
                                         f"{dtype} range")
        return scores.astype(SCORE_TYPES[dtype]).reshape(shape)


class _HTTPStatus(Exception):
    """A 4xx answer (not retried)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code, self.detail = code, detail


class _Reader:
    """Reads a socket within a deadline: each read waits at most the time left, so a server
    that trickles bytes cannot hold a request past it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline
        self.buf = bytearray()

    def _fill(self) -> bool:
        self.sock.settimeout(_left(self.deadline))
        chunk = self.sock.recv(1 << 16)
        self.buf += chunk
        return bool(chunk)

    def line(self, limit: int) -> bytes | None:
        """The next line with its newline (without one at the end of the stream, empty when
        nothing is left), or None when it is longer than ``limit`` bytes."""
        start = 0
        while True:
            at = self.buf.find(b"\n", start)
            if at >= 0:
                if at >= limit:
                    return None
                out = bytes(self.buf[:at + 1])
                del self.buf[:at + 1]
                return out
            if len(self.buf) > limit:
                return None
            start = len(self.buf)
            if not self._fill():
                out = bytes(self.buf)
                self.buf.clear()
                return out

    def read(self, n: int) -> bytes:
        """``n`` bytes, or fewer when the stream ends first."""
        while len(self.buf) < n and self._fill():
            pass
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


_NONE = object()  # no such value


def _left(deadline: float) -> float:
    """Seconds left until ``deadline``; a TimeoutError when none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _clip(text: bytes | str, n: int = 200) -> str:
    """What a server sent, as one short printable line (for an error message)."""
    if isinstance(text, bytes):
        text = text[: 4 * n].decode("utf-8", "replace")
    text = " ".join("".join(c if c.isprintable() else " " for c in text[: 4 * n]).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, list) and not value:
        return "an empty list"
    return "nothing" if value is None else type(value).__name__


def _flatten(data: list, shape: list[int]) -> list | None:
    """The values of ``data`` [rows, cols] in row-major order: flat, or nested one list per row
    (the protocol allows both); None when the nesting does not match ``shape``."""
    if not any(isinstance(v, list) for v in data):
        return data
    rows, cols = shape
    if len(data) != rows or not all(isinstance(r, list) and len(r) == cols for r in data):
        return None
    return [v for r in data for v in r]


def _json_depth(raw: bytes) -> int:
    """How deep brackets and braces nest in ``raw`` outside strings (an upper bound for text
    that is no JSON), without parsing it."""
    opening = raw.count(b"[") + raw.count(b"{")
    if opening <= MAX_JSON_DEPTH:
        return opening  # cannot nest deeper than it opens
    b = np.frombuffer(raw, np.uint8)
    opens, closes = (b == ord("[")) | (b == ord("{")), (b == ord("]")) | (b == ord("}"))
    quote = b == ord('"')
    if quote.any():  # a quote after an odd run of backslashes is escaped
        pos = np.arange(len(b), dtype=np.int32)
        other = np.maximum.accumulate(np.where(b == ord("\\"), -1, pos))
        run = np.zeros(len(b), np.int32)
        run[1:] = pos[:-1] - other[:-1]
        inside = (np.cumsum(quote & (run % 2 == 0), dtype=np.int32) % 2).astype(bool)
        opens &= ~inside
        closes &= ~inside
    depth = np.cumsum(opens.astype(np.int32) - closes.astype(np.int32), dtype=np.int32)
    return int(depth.max()) if depth.size else 0


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
            cache: str | Path | None = None,
            suspect_timeout: float | None = suspects.SUSPECT_TIMEOUT_S) -> BlackBox | Recorded:
    """The black box that ``spec`` names, for the inputs ``x`` [N, C, H, W] (or a function
    returning them, called only when images must be sent) and top-``k`` answers:

    - ``http(s)://HOST:PORT/v2/models/NAME[/versions/V]``: :class:`OpenInference` (``timeout``,
      ``cache``: its answer cache);
    - ``onnx:PATH`` or an ONNX file: :class:`Onnx` (``suspect_timeout``: seconds per inference);
    - ``zoo:NAME`` or a bare ``NAME`` that is no file: a model ``named`` knows (the command
      line passes the embedded zoo's loader);
    - ``arch:NAME[:WEIGHTS]``, or a state dict file (or ``random``) with ``arch=NAME``: a
      torchvision / timm architecture (``num_classes``, ``seed`` of a random init);
    - ``db:NAME``: the outputs ``recorded(NAME)`` (a database's model: a simulation);
    - an answers file (``.npy``, ``.npz``, ``.csv``, ``.json``, a ``.pt`` of tensors): the labels
      (or scores) on each of the ``num_inputs`` inputs, or, with ``queries`` (a queries.json of
      export-queries), on each exported input: :class:`Recorded`;
    - any other model file: :func:`fastfp.suspects.load_suspect` (pickles, TorchScript and
      ``.pt2`` only with ``trust_code``), as a :class:`FunctionBlackBox`.

    Files are told apart by :func:`fastfp.suspects.sniff` (their bytes), never by loading them.
    ``normalize`` (``"imagenet"``, ``"none"``, ``"M1,M2,M3/S1,S2,S3"`` or ``(mean, std)``) is
    what a served or ONNX model expects; ``batch_size`` and ``max_queries`` (images, retries
    included) bound what is sent; ``timeout``: seconds per request to a service, all of it;
    ``num_classes`` also bounds the labels a queried black box may answer."""
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
    # what bounds a queried black box: images per request, images in all, the label range
    budget: dict[str, Any] = {"batch_size": batch_size, "max_queries": max_queries,
                              "num_classes": num_classes}
    if is_service(spec):
        return OpenInference(spec, _images(x, spec), k, normalize=normalize, timeout=timeout,
                             cache=cache, **budget)
    if spec.startswith("db:"):
        if recorded is None:
            raise ValueError(f"blackbox: {spec!r} names recorded outputs: give recorded=...")
        return Recorded(recorded(spec[3:]), k, name=spec)
    if spec.startswith("onnx:"):
        return Onnx(spec[len("onnx:"):], _images(x, spec), k, normalize=normalize,
                    timeout=suspect_timeout, **budget)
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
    if not path.exists() and arch is not None and spec == "random":  # a seeded random init
        model = suspects.load_suspect(None, arch=arch, num_classes=num_classes, seed=seed)
        return FunctionBlackBox(model, _images(x, spec), k, name=arch, **budget)
    names = suspects.as_named(named)
    if not path.exists() and names is not None and arch is None and os.sep not in spec:
        try:  # a bare name the loader knows (``cnn-s0``), as ``zoo:cnn-s0``
            model = names.load(spec)
        except ValueError as exc:
            raise ValueError(f"blackbox: expected {GRAMMAR}; got {spec!r} (no such file, and "
                             f"not a {names.kind}: {exc})") from None
        return FunctionBlackBox(model.eval(), _images(x, spec), k, name=spec, **budget)
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
        return Onnx(path, _images(x, spec), k, normalize=normalize, timeout=suspect_timeout,
                    **budget)
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
