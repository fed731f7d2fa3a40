"""What the checked party supplies, read in formats that cannot run code.

A suspect model comes from the party being checked: unpickling it (``torch.load`` with
``weights_only=False``), ``torch.jit.load`` (a scripted ``__setstate__`` runs at load) or
``torch.export.load`` (a ``.pt2`` holds pickles) would let the file run any code in the checker,
e.g. patch the verification to report any score. So this module holds:

- :func:`sniff`, the one format sniffer: it tells a file's format from its bytes (nothing is
  unpickled or run), and :func:`tensors_only` says whether a torch.save archive only rebuilds
  tensors (so ``weights_only=True`` reads it and no other code is named in it);
- :func:`load_suspect` / :func:`load_model`, the one suspect loader: ONNX (``.onnx``, run by
  onnxruntime, :class:`OnnxClassifier`), a safetensors state dict (or a plain ``.pt`` state dict)
  with its architecture ``arch`` (torchvision / timm, :func:`load_arch`), a model known by name
  (``named``: the caller's loader, e.g. the embedded zoo's), and an FBI model-list entry
  (:func:`load_entry`, :class:`DeferredModel`).

Pickles, TorchScript and ``.pt2`` files are refused with :class:`UnsafeFormatError` unless
``trust_code=True`` (like ``trust_remote_code`` in the Hugging Face ecosystem), which warns with
:class:`TrustCodeWarning`. The format is told by the file's content, not only its name, so a pickle
renamed ``.onnx`` or ``.safetensors`` is still refused.
"""

from __future__ import annotations

import io
import os
import pickletools
import stat
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fastfp import _validate

SAFE_FORMATS = ("safe formats: ONNX (.onnx), a safetensors state dict with its architecture "
                "(--arch NAME [--num-classes N]; Python: arch=...), or precomputed top-k labels "
                "(.npy) for FBI")
CODE_FORMATS = ("torchscript", "pt2", "torch.save", "pickle")  # what sniff() calls them
ONNX_EXTRA = "pip install 'fastfp[onnx]'"
# Wall-clock limit of one inference of a suspect ONNX model (one onnxruntime run), in seconds:
# a Loop of 2**40 iterations would otherwise hold the checker forever. The CLI's
# --suspect-timeout sets it; timeout=None lifts it.
SUSPECT_TIMEOUT_S = 60.0
MAX_TIMEOUT_S = 7 * 24 * 3600.0  # threading.Timer takes no larger wait

PathLike = str | os.PathLike[str]


class UnsafeFormatError(ValueError):
    """A suspect file in a format whose loading runs code (pickle, TorchScript, .pt2)."""


class TrustCodeWarning(UserWarning):
    """A file was loaded with ``trust_code=True``: its code ran in this process."""


class SuspectError(ValueError):
    """A suspect model misbehaved while it was queried (it failed, answered NaN / inf or a shape
    that is no classifier's): the message names the model; callers pass it on as it is."""


class InferenceTimeout(SuspectError):
    """One inference of a suspect model took longer than its time limit and was stopped."""


def check_timeout(timeout: object, name: str = "timeout") -> float | None:
    """A time limit in seconds: None (no limit) or a finite number in (0, 7 days]."""
    if timeout is None:
        return None
    value = _validate.real(name, timeout, hi=MAX_TIMEOUT_S)
    if not value > 0:
        raise ValueError(f"{name}: expected a number of seconds > 0 (or None for no limit), "
                         f"got {value:g}")
    return value


def sniff(path: PathLike, data: bytes | None = None) -> str:
    """The format of a file from its content (nothing is unpickled or run): ``"onnx"``,
    ``"safetensors"``, ``"torchscript"``, ``"pt2"``, ``"torch.save"`` (a zip of pickles),
    ``"pickle"`` (a bare or legacy pickle), ``"npy"``, ``"npz"`` or ``"unknown"``."""
    if data is None:
        from fastfp.io import read_bytes

        data = read_bytes(path, name="path")
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("archive_format") or "serialized_exported_program" in n
               or n.startswith("models/") for n in names) or Path(path).suffix == ".pt2":
            return "pt2"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return "torch.save"
    if data[:6] == b"\x93NUMPY":
        return "npy"
    if len(data) >= 10:  # safetensors: an 8-byte header length, then the JSON header
        n = int.from_bytes(data[:8], "little")
        if 0 < n <= len(data) - 8 and data[8:9] == b"{":
            return "safetensors"
    if data[:1] == b"\x80":  # pickle protocol 2+ (torch.save's legacy format, pickle.dump)
        return "pickle"
    if Path(path).suffix == ".onnx" or data[:1] == b"\x08":  # ModelProto opens with ir_version
        return "onnx"
    return "unknown"


# What torch.save writes for tensors, parameters and (ordered) dicts of them: any other name in
# the pickle (a class, a function) would be called while unpickling.
TENSOR_GLOBALS = frozenset({("torch._utils", "_rebuild_tensor_v2"),
                            ("torch._utils", "_rebuild_parameter"),
                            ("collections", "OrderedDict")})
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                         "SHORT_BINSTRING", "BINSTRING", "STRING"})


def _pickle_globals(pkl: bytes) -> set[tuple[str, str]] | None:
    """The (module, name) pairs a pickle looks up, read from its opcodes (nothing runs); None
    when one cannot be told from the bytes alone."""
    found: set[tuple[str, str]] = set()
    memo: dict[int, str | None] = {}
    recent: list[str | None] = []  # what the last opcodes pushed (a string or something else)
    try:
        for op, arg, _ in pickletools.genops(pkl):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.add((module, attr))
                recent.append(None)
            elif name == "STACK_GLOBAL":
                if len(recent) < 2 or recent[-1] is None or recent[-2] is None:
                    return None
                found.add((str(recent[-2]), str(recent[-1])))
                recent[-2:] = [None]
            elif name in _STRING_OPS:
                recent.append(str(arg))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if name == "MEMOIZE" else int(str(arg))] = recent[-1] if recent \
                    else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(int(str(arg))))
            else:
                recent.append(None)
    except Exception:  # not a well-formed pickle
        return None
    return found


def tensors_only(path: PathLike, data: bytes | None = None) -> bool:
    """Whether ``path`` is a torch.save archive (:func:`sniff` ``"torch.save"``) whose pickles
    only rebuild tensors, parameters and dicts of them (a tensor file or a state dict): read from
    its bytes, nothing is unpickled. Such a file is then read with ``weights_only=True``."""
    if data is None:
        from fastfp.io import read_bytes

        data = read_bytes(path, name="path")
    if sniff(path, data) != "torch.save":
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pickles = [z.read(n) for n in z.namelist() if n.endswith(".pkl")]
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    if not pickles:
        return False
    for pkl in pickles:
        names = _pickle_globals(pkl)
        if names is None or any(g not in TENSOR_GLOBALS and not (
                g[0] == "torch" and g[1].endswith("Storage")) for g in names):
            return False
    return True


def read_tensors(path: PathLike, data: bytes | None = None, *, name: str = "path") -> Any:
    """The tensors (one tensor, or a dict of them) of a torch.save file that
    :func:`tensors_only` accepts, read with ``weights_only=True``. Anything else raises, before
    torch reads a byte: :class:`UnsafeFormatError` for a file that names other code, ValueError
    otherwise; messages start with ``name`` (say the file's path)."""
    if data is None:
        from fastfp.io import read_bytes

        data = read_bytes(path, name=name)
    if not tensors_only(path, data):
        kind = sniff(path, data)
        if kind in CODE_FORMATS:
            raise UnsafeFormatError(f"{name}: a {kind} file that holds more than tensors "
                                    "(reading it runs code from it): refused; save the tensors "
                                    "with torch.save, numpy or safetensors")
        raise ValueError(f"{name}: not a tensor file torch can load safely (looks like {kind})")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not its own
        raise ValueError(f"{name}: not a tensor file torch can load safely "
                         f"({type(exc).__name__})") from None


def _onnx_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of an ONNX model: initializers (sparse ones too), tensor attributes, in
    the main graph, every subgraph (Loop / If / Scan bodies), functions and training info."""
    def graph(g: Any) -> Iterator[Any]:
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in g.node:
            yield from attributes(node)

    def attributes(node: Any) -> Iterator[Any]:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sparse in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(
                    a.sparse_tensors):
                yield from (sparse.values, sparse.indices)
            if a.HasField("g"):
                yield from graph(a.g)
            for sub in a.graphs:
                yield from graph(sub)

    yield from graph(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from attributes(node)
    for info in model.training_info:
        yield from graph(info.initialization)
        yield from graph(info.algorithm)


def check_external_data(path: PathLike, model: Any) -> bool:
    """Check every external-data file that the ONNX ``model`` (a ModelProto read from ``path``)
    names: a regular file in ``path``'s own folder (no absolute path, no ``..``, no symlink out
    of the folder), long enough for the bytes it should hold. A suspect must not read the
    checker's files (say ``./fp.safetensors``) into its weights. Returns whether there are any;
    ValueError naming the file and the tensor otherwise."""
    from pathlib import PurePosixPath, PureWindowsPath

    from onnx import TensorProto

    folder = Path(path).parent.resolve()
    found = False
    for tensor in _onnx_tensors(model):
        if not tensor.external_data and tensor.data_location != TensorProto.EXTERNAL:
            continue
        found = True
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        what = f"{path}: external data {location!r} of tensor {tensor.name!r}"
        win = PureWindowsPath(location)  # splits on both separators, knows drives
        if not location or "\0" in location:
            raise ValueError(f"{what}: names no file")
        if PurePosixPath(location).is_absolute() or win.is_absolute() or win.drive or \
                ".." in win.parts:
            raise ValueError(f"{what}: lies outside the model's folder (external data must be a "
                             "file beside the model, named without '..' or an absolute path)")
        try:
            real = (folder / location).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            raise ValueError(f"{what}: no such file in the model's folder {str(folder)!r}"
                             ) from None
        if not real.is_relative_to(folder):
            raise ValueError(f"{what}: a symlink out of the model's folder {str(folder)!r}")
        mode = os.stat(real).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{what}: not a regular file (a "
                             f"{'folder' if stat.S_ISDIR(mode) else 'special file'})")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", 0))
        except ValueError:
            raise ValueError(f"{what}: offset and length must be numbers") from None
        size = os.stat(real).st_size
        if offset < 0 or length < 0 or offset + length > size:
            raise ValueError(f"{what}: the file holds {size} bytes, the tensor asks for "
                             f"{length} at offset {offset}")
        kind = _structured_kind(real, size)
        if kind:
            raise ValueError(f"{what}: a {kind} file, not raw tensor data (a suspect may not "
                             "read other files, such as a fingerprint or exported queries, into "
                             "its weights)")
    return found


def _structured_kind(path: Path, size: int) -> str:
    """What a file that should hold raw tensor bytes looks like from its first bytes, when it
    is one of the files a checker keeps (fingerprints and databases are safetensors, exported
    queries JSON or PNG, inputs .npy / .pt): ``""`` for anything else."""
    from fastfp.io import open_regular

    fd = open_regular(path, "external data")
    try:
        head = os.read(fd, 64)
    finally:
        os.close(fd)
    if head[:6] == b"\x93NUMPY":
        return "numpy"
    if head[:4] == b"PK\x03\x04":
        return "zip (torch.save / .npz)"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    n = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if 0 < n <= size - 8 and head[8:9] == b"{":
        return "safetensors"
    text = all(32 <= b < 127 or b in b"\t\r\n" for b in head)  # raw floats never are
    if text and head.lstrip()[:1] in (b"{", b"["):
        return "JSON"
    return ""


def _terminate(options: Any) -> None:
    options.terminate = True  # onnxruntime stops the run between two nodes (Loop steps too)


class OnnxClassifier(nn.Module):
    """An ONNX classifier run by onnxruntime, as an ``nn.Module`` (batch -> logits).

    Forward only: the session computes no gradients, which is enough for verification and FBI
    queries; generating characteristic examples needs a PyTorch model. ``providers``: onnxruntime
    execution providers (default: CUDA when both onnxruntime and torch see a GPU, then CPU).
    Inputs are moved to the CPU for the session and the logits come back on the input's device.

    The file comes from the checked party: external data is read only from the model's own
    folder (:func:`check_external_data`), each onnxruntime run is stopped after ``timeout``
    seconds (:class:`InferenceTimeout`; None: no limit), and outputs that are not finite
    ``(batch, classes)`` scores, like a failing run, raise :class:`SuspectError` naming the file.
    """

    def __init__(self, path: PathLike, providers: list[str] | None = None, *,
                 timeout: float | None = SUSPECT_TIMEOUT_S) -> None:
        super().__init__()
        self.timeout = check_timeout(timeout)
        try:
            import onnx
            import onnxruntime as ort
        except ImportError:
            raise ImportError(f"path: ONNX models need onnx and onnxruntime ({ONNX_EXTRA})"
                              ) from None
        from fastfp.io import read_bytes

        if providers is not None and (not isinstance(providers, list | tuple) or not all(
                isinstance(p, str) for p in providers)):
            raise TypeError(f"providers: expected a list of onnxruntime provider names, got "
                            f"{providers!r}")
        self.path = str(path)
        data = read_bytes(path, name="path")
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in available and (p != "CUDAExecutionProvider"
                                                or torch.cuda.is_available())]
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ValueError(f"providers: {unknown} not available in onnxruntime (available: "
                             f"{available})")
        try:  # the graph only: nothing is read from external data files here
            proto = onnx.load_model_from_string(data)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ValueError(f"path: cannot read {self.path!r} as an ONNX model "
                             f"({type(exc).__name__}: {exc})") from None
        # from bytes, onnxruntime would look for external data in the working directory; from
        # the file (checked above), in the model's folder
        source = os.fspath(path) if check_external_data(path, proto) else data
        del proto
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.log_severity_level = 4  # failures become exceptions, said in one line
        try:
            self.session = ort.InferenceSession(source, opts, providers=list(providers))
        except Exception as exc:
            raise ValueError(f"path: cannot read {self.path!r} as an ONNX model "
                             f"({type(exc).__name__}: {exc})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ValueError(f"path: {self.path!r} has {len(inputs)} inputs and {len(outputs)} "
                             "outputs; a classifier takes one image batch and returns logits")
        self._input = inputs[0].name
        self._shape = list(inputs[0].shape)
        self._dtype = {"tensor(float16)": "float16", "tensor(double)": "float64"}.get(
            inputs[0].type, "float32")
        out_shape = list(outputs[0].shape)
        self._classes = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
        # an empty buffer: .to(device) and fastfp's device lookups see where outputs should go
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        """The declared (C, H, W) input when it is static, else None."""
        dims = self._shape[1:]
        if len(dims) == 3 and all(isinstance(d, int) and d > 0 for d in dims):
            return (int(dims[0]), int(dims[1]), int(dims[2]))
        return None

    @property
    def num_classes(self) -> int | None:
        """The declared number of logits when it is static, else None."""
        return self._classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.requires_grad and torch.is_grad_enabled():
            raise ValueError(f"model: the ONNX model {self.path!r} runs forward only (no "
                             "gradients); generating characteristic examples needs a PyTorch "
                             "model")
        want = self.input_shape
        if x.dim() != len(self._shape) or (want is not None and tuple(x.shape[1:]) != want):
            raise ValueError(f"x: the ONNX model {self.path!r} takes inputs of shape "
                             f"{self._shape}, got {tuple(x.shape)}")
        arr = x.detach().to("cpu", torch.float32).numpy().astype(self._dtype, copy=False)
        batch = self._shape[0]
        if isinstance(batch, int) and batch > 0 and batch != len(arr):  # a fixed batch size
            out = torch.cat([self._run_fixed(arr[i:i + batch], batch)
                             for i in range(0, len(arr), batch)])
        else:
            out = self._run(arr)
        if out.dim() != 2 or out.shape[0] != len(arr):
            raise SuspectError(f"{self.path}: expected (batch, classes) outputs for a batch of "
                               f"{len(arr)}, got shape {tuple(out.shape)}")
        finite = torch.isfinite(out).all(dim=1)
        if not bool(finite.all()):
            raise SuspectError(f"{self.path}: non-finite outputs (NaN or inf) on "
                               f"{int((~finite).sum())} of {len(arr)} inputs")
        return out.to(x.device)

    def _run(self, arr: Any) -> torch.Tensor:
        import numpy as np
        import onnxruntime as ort

        options = ort.RunOptions()
        options.log_severity_level = 4
        timer = None
        if self.timeout is not None:  # a watchdog: onnxruntime checks the flag between nodes
            timer = threading.Timer(self.timeout, _terminate, (options,))
            timer.daemon = True
            timer.start()
        try:
            (out, *_) = self.session.run(None, {self._input: arr}, options)
        except Exception as exc:
            if options.terminate:
                raise InferenceTimeout(f"{self.path}: inference took longer than "
                                       f"{self.timeout:g} s (--suspect-timeout)") from None
            raise SuspectError(f"{self.path}: onnxruntime failed ({type(exc).__name__}: {exc})"
                               ) from None
        finally:
            if timer is not None:
                timer.cancel()
        if not isinstance(out, np.ndarray) or out.dtype.kind not in "fiub":
            raise SuspectError(f"{self.path}: expected a numeric tensor of scores, got "
                               f"{getattr(out, 'dtype', type(out).__name__)}")
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def _run_fixed(self, arr: Any, batch: int) -> torch.Tensor:
        import numpy as np

        n = len(arr)
        if n < batch:  # pad the last chunk to the model's batch, keep only the real rows
            arr = np.concatenate([arr, np.zeros((batch - n, *arr.shape[1:]), arr.dtype)])
        return self._run(arr)[:n]

    def extra_repr(self) -> str:
        return (f"{self.path!r}, providers={self.session.get_providers()}, "
                f"timeout={self.timeout}")


@dataclass(frozen=True)
class ArchConfig:
    """What an architecture's own pretrained config says about its inputs."""

    input_shape: tuple[int, int, int]
    normalize: tuple[tuple[float, ...], tuple[float, ...]]


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def arch_config(name: str, model: nn.Module) -> ArchConfig:
    """The input shape and normalisation of ``model`` built by :func:`load_arch` as ``name``:
    timm's ``pretrained_cfg`` (``input_size``, ``mean``, ``std``); for torchvision the default
    weights' transforms (crop size, mean, std), else 3x224x224 and ImageNet's mean/std."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size") and cfg.get("mean") and cfg.get("std"):
        c, h, w = (int(v) for v in cfg["input_size"])
        return ArchConfig((c, h, w), (tuple(map(float, cfg["mean"])),
                                      tuple(map(float, cfg["std"]))))
    try:
        import torchvision

        t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        size = int(t.crop_size[0])
        return ArchConfig((3, size, size), (tuple(map(float, t.mean)), tuple(map(float, t.std))))
    except Exception:  # no torchvision weights registered for it: the ImageNet convention
        return ArchConfig((3, 224, 224), IMAGENET)


def parse_normalize(text: str, name: str = "normalize"
                    ) -> str | tuple[list[float], list[float]] | None:
    """``imagenet``, ``none`` or ``M1,M2,M3/S1,S2,S3`` (what a model expects: it is given
    ``(x - mean) / std`` of 0..1 images) as ``"imagenet"``, None or ``(mean, std)``; ``name``
    names the value in errors."""
    if not isinstance(text, str):
        raise TypeError(f"{name}: expected a string, got {type(text).__name__}")
    if text in ("imagenet", "none"):
        return None if text == "none" else text
    mean, sep, std = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return [float(v) for v in mean.split(",")], [float(v) for v in std.split(",")]
    except ValueError:
        raise ValueError(f"{name}: expected imagenet, none or MEAN/STD such as "
                         f"0.5,0.5,0.5/0.25,0.25,0.25, got {text!r}") from None


def load_trusted(path: PathLike) -> nn.Module:
    """A TorchScript file, a ``.pt2`` exported program or a torch.save'd module. This RUNS CODE
    from the file: only for files you trust (your own model, or ``trust_code=True``)."""
    from fastfp.io import read_bytes

    data = read_bytes(path, name="path")
    kind = sniff(path, data)
    model: Any
    try:
        if kind == "torchscript":
            model = torch.jit.load(io.BytesIO(data), map_location="cpu")
        elif kind == "pt2":
            model = torch.export.load(io.BytesIO(data)).module()
        else:
            try:
                model = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
            except Exception:
                if kind != "pickle":
                    raise
                import pickle

                model = pickle.loads(data)  # a bare pickle (pickle.dump of a module)
    except Exception as exc:
        raise ValueError(f"path: cannot read {str(path)!r} as a {kind} model "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"path: {str(path)!r} holds a {type(model).__name__}, not a "
                         "torch.nn.Module (a state dict needs its architecture: arch=... / "
                         "--arch NAME)")
    return model


def load_suspect(path: PathLike | None, *, arch: str | None = None,
                 num_classes: int | None = None, seed: int = 0, trust_code: bool = False,
                 device: str | torch.device | None = None,
                 timeout: float | None = SUSPECT_TIMEOUT_S) -> nn.Module:
    """A suspect model from a file, in eval mode on ``device`` (default: CPU), without running
    code from the file.

    ``arch``: a torchvision / timm architecture; ``path`` is then its state dict (``.safetensors``,
    or a ``.pt`` of tensors read with ``weights_only=True``), or None / ``"random"`` for the random
    init seeded by ``seed``; ``num_classes`` sizes its head. Without ``arch``: an ONNX file
    (:class:`OnnxClassifier`, each inference stopped after ``timeout`` seconds; None: no limit).
    Pickles, TorchScript and ``.pt2`` raise :class:`UnsafeFormatError` unless ``trust_code=True``
    (then they load, with a :class:`TrustCodeWarning`).
    """
    if not isinstance(trust_code, bool):
        raise TypeError(f"trust_code: expected a bool, got {type(trust_code).__name__}")
    timeout = check_timeout(timeout)
    dev = _validate.device("device", device if device is not None else "cpu")
    if path is not None and not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    if arch is not None:
        if not isinstance(arch, str) or not arch:
            raise TypeError(f"arch: expected an architecture name such as 'resnet18', got "
                            f"{arch!r}")
        weights = None if path is None or str(path) == "random" else path
        if weights is not None:
            kind = sniff(weights)
            if kind not in ("safetensors", "torch.save"):
                raise UnsafeFormatError(f"path: {str(weights)!r} is a {kind} file, not a state "
                                        f"dict for arch={arch!r}; {SAFE_FORMATS}")
        model = load_arch(arch, weights, num_classes=num_classes, seed=seed)
        return model.to(dev).eval()
    if path is None:
        raise ValueError("path: a model file is needed (or arch=... for a random init)")
    if num_classes is not None:
        raise ValueError("num_classes: only with arch (a model file has its own head)")
    kind = sniff(path)
    if kind == "onnx":
        # on a cuda device: onnxruntime's CUDA provider when it has one (else its CPU provider;
        # the logits still come back on the device)
        providers = None if dev.type == "cuda" else ["CPUExecutionProvider"]
        return OnnxClassifier(path, providers=providers, timeout=timeout).to(dev).eval()
    if kind == "safetensors":
        raise ValueError(f"path: {str(path)!r} is a safetensors state dict: give its "
                         "architecture (arch=... / --arch NAME, with --num-classes N for a "
                         "fine-tuned head)")
    if kind not in CODE_FORMATS:
        raise ValueError(f"path: cannot tell the format of {str(path)!r}; {SAFE_FORMATS}")
    if not trust_code:
        raise UnsafeFormatError(f"path: {str(path)!r} is a {kind} file, whose loading runs code "
                                f"from it: refused for a suspect model; {SAFE_FORMATS}; or pass "
                                "--trust-code (Python: trust_code=True) for a file you trust")
    warnings.warn(f"trust_code: loading {str(path)!r} ({kind}) runs code from the file",
                  TrustCodeWarning, stacklevel=2)
    return load_trusted(path).to(dev).eval()


# --- models by name, by spec, by model-list entry --------------------------------------------

@dataclass(frozen=True)
class NamedModels:
    """Models known by name, which a higher layer supplies (the command line passes the embedded
    zoo's loader): ``load(name)`` raises ValueError for a name it does not know."""

    load: Callable[[str], nn.Module]
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) of all of them, when known
    kind: str = "model name"  # what a name is, for errors ("zoo model")


def as_named(named: NamedModels | Callable[[str], nn.Module] | None) -> NamedModels | None:
    """``named`` as :class:`NamedModels` (a bare loader has no known input shape)."""
    if named is None or isinstance(named, NamedModels):
        return named
    if not callable(named):
        raise TypeError(f"named: expected a loader of models by name, got "
                        f"{type(named).__name__}")
    return NamedModels(named)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model and what is known about it."""

    model: nn.Module  # on its device, in eval mode
    name: str
    input_shape: tuple[int, int, int] | None  # (C, H, W) from the names / arch config / ONNX
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None  # the arch's own (mean, std)


def load_model(spec: str, *, arch: str | None = None, num_classes: int | None = None,
               seed: int = 0, trust_code: bool = False, own: bool = False,
               device: str | torch.device | None = None,
               named: NamedModels | Callable[[str], nn.Module] | None = None,
               what: str = "model", timeout: float | None = SUSPECT_TIMEOUT_S) -> LoadedModel:
    """The model ``spec`` names, in eval mode on ``device``: with ``arch``, its state dict file or
    ``"random"``; else a model file (:func:`load_suspect`, ``timeout`` per ONNX inference) or a
    name that ``named`` knows.

    ``own``: the caller's own model, whose code formats (TorchScript, torch.save'd modules) load
    without ``trust_code`` and without a warning. Errors start with ``what``."""
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"{what}: expected a file, a name or 'random', got {spec!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(
            num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes: expected a positive number, got {num_classes}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a number >= 0, got {seed}")
    names = as_named(named)
    try:
        if arch:
            if spec != "random" and not Path(spec).is_file():
                raise ValueError(f"with --arch, expected a .safetensors state dict or 'random', "
                                 f"got {spec!r} (no such file)")
            model = load_suspect(None if spec == "random" else spec, arch=arch,
                                 num_classes=num_classes, seed=seed, device=device)
            cfg = arch_config(arch, model)
            return LoadedModel(model, arch if spec == "random" else Path(spec).stem,
                               cfg.input_shape, cfg.normalize)
        if Path(spec).exists():
            with warnings.catch_warnings():
                if own:  # the owner's model: its code is theirs to run
                    warnings.simplefilter("ignore", TrustCodeWarning)
                model = load_suspect(spec, trust_code=trust_code or own, device=device,
                                     timeout=timeout)
            shape = getattr(model, "input_shape", None)  # an ONNX model's declared input
            return LoadedModel(model, Path(spec).stem, shape, None)
    except (ValueError, TypeError, ImportError, OSError) as exc:  # refused, unreadable, no ort
        raise _prefixed(exc, what) from None
    if names is None:
        raise FileNotFoundError(f"{what}: no such file: {spec!r}")
    try:
        model = names.load(spec)
    except ValueError as exc:
        raise ValueError(f"{what}: {spec!r} is neither an existing file nor a {names.kind} "
                         f"({exc})") from None
    dev = _validate.device("device", device if device is not None else "cpu")
    return LoadedModel(model.to(dev).eval(), spec, names.input_shape, None)


def _prefixed(exc: Exception, what: str) -> Exception:
    """``exc`` again, its message starting with ``what`` instead of ``path:``."""
    msg = f"{what}: {str(exc).removeprefix('path: ')}"
    try:
        return type(exc)(msg)
    except Exception:  # an exception type that takes other arguments
        return ValueError(msg)


def read_model_list(path: PathLike) -> dict[str, Any]:
    """An FBI model list (JSON, or TOML for ``.toml``): ``{"models": [{"name", "family", one
    source}, ...], "inputs": ..., "labels": ...}``, its names unique; ValueError naming the file
    otherwise. Its model files are checked by :func:`check_entry`."""
    from fastfp.io import MAX_FILE_BYTES, check_depth, read_bytes

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such spec file: {str(path)!r}")
    try:  # a regular file of bounded size (a FIFO would hang), nested boundedly (parsers recurse)
        text = read_bytes(p, name="spec", max_bytes=MAX_FILE_BYTES).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text file ({exc.reason})") from None
    check_depth(text, name="spec", source=path)
    if p.suffix == ".toml":
        import tomllib

        try:
            spec = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc})") from None
    else:
        import json

        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected an object {{\"models\": [...]}}, got a JSON "
                         f"{type(spec).__name__} (see fastfp fbi build --help)")
    models = spec.get("models")
    if not isinstance(models, list) or not models:
        raise ValueError(f"{path}: expected a non-empty 'models' list")
    seen: set[str] = set()
    for i, e in enumerate(models):
        if not isinstance(e, dict) or "name" not in e or "family" not in e:
            raise ValueError(f"{path}: model {i + 1}: every model needs a 'name' and a "
                             f"'family', got {e!r}")
        if str(e["name"]) in seen:
            raise ValueError(f"{path}: model {i + 1}: duplicate name {e['name']!r}")
        seen.add(str(e["name"]))
    return spec


def confined_path(value: Any, base: Path, *, allow_absolute: bool, what: str) -> Path:
    """A file named in a model list: relative to the list's folder ``base`` and inside it (no
    ``..`` or symlink out of it), unless ``allow_absolute``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what}: expected a file name, got {value!r}")
    p = Path(value)
    if allow_absolute:
        return p if p.is_absolute() else base / p
    root = base.resolve()
    full = (root / p).resolve()
    if p.is_absolute() or not full.is_relative_to(root):
        raise ValueError(f"{what}: {value!r} lies outside the model list's folder {str(root)!r} "
                         "(pass --allow-absolute-paths to allow it)")
    return full


def check_entry(entry: dict[str, Any], base: Path, *, trust_code: bool = False,
                allow_absolute: bool = False) -> None:
    """Check a model-list entry before any work: its files stay in ``base`` (see
    :func:`confined_path`) and a ``path`` is in a safe format (or ``trust_code``). Reads no
    model (only the bytes :func:`sniff` needs)."""
    what = f"model {entry.get('name')!r}"
    for key in ("path", "weights"):
        if key in entry:
            path = confined_path(entry[key], base, allow_absolute=allow_absolute,
                                 what=f"{what}: {key}")
            if key == "path" and not trust_code and path.is_file():
                kind = sniff(path)
                if kind in CODE_FORMATS:
                    raise UnsafeFormatError(f"{what}: {str(path)!r} is a {kind} file, whose "
                                            f"loading runs code from it: refused; {SAFE_FORMATS}"
                                            "; or pass --trust-code for files you trust")


def load_entry(entry: dict[str, Any], base: Path, what: str | None = None, *,
               trust_code: bool = False, allow_absolute: bool = False,
               num_classes: int | None = None,
               named: NamedModels | Callable[[str], nn.Module] | None = None,
               timeout: float | None = SUSPECT_TIMEOUT_S) -> nn.Module:
    """The model of a model-list entry (``zoo``: a name ``named`` knows; ``arch`` [+ ``weights``,
    ``num_classes``, ``seed``]; or ``path``), loaded as a suspect; files lie in ``base`` (see
    :func:`confined_path`); ``num_classes``: the head of an ``arch`` entry that gives none;
    ``what`` names it in errors (default: by its name); ``timeout``: per ONNX inference."""
    what = what or f"model {entry.get('name')!r}"
    if "zoo" in entry:
        names = as_named(named)
        if names is None:
            raise ValueError(f"{what}: 'zoo' entries need a loader of named models (named=...)")
        try:
            return names.load(entry["zoo"])
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
    try:
        if "arch" in entry:
            weights = entry.get("weights")
            path = None if weights is None else confined_path(
                weights, base, allow_absolute=allow_absolute, what="weights")
            return load_suspect(path, arch=entry["arch"],
                                num_classes=entry.get("num_classes", num_classes),
                                seed=entry.get("seed", 0))
        if "path" in entry:
            path = confined_path(entry["path"], base, allow_absolute=allow_absolute, what="path")
            return load_suspect(path, trust_code=trust_code, timeout=timeout)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        raise _prefixed(exc, what) from None
    raise ValueError(f"{what}: give one of 'zoo', 'arch' or 'path'")


class DeferredModel:
    """A model-list entry's model, loaded when first used (a resumed database build skips the
    models it already has) and released when the caller is done with it."""

    def __init__(self, entry: dict[str, Any], base: Path, **load: Any) -> None:
        self.entry, self.base, self.load = entry, base, load
        self.model: nn.Module | None = None

    def _get(self) -> nn.Module:
        if self.model is None:
            with torch.enable_grad():  # a zoo model may be trained now, even if asked under no_grad
                self.model = load_entry(self.entry, self.base, **self.load).eval()
        return self.model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._get()(x)

    def to(self, device: str | torch.device) -> DeferredModel:
        self._get().to(device)
        return self

    def eval(self) -> DeferredModel:
        self._get()  # load (or train) before the no_grad queries start
        return self

    def release(self) -> None:
        self.model = None  # the database has this model's outputs; a rerun loads it again


def deferred_models(entries: list[dict[str, Any]], base: Path,
                    **load: Any) -> Iterator[tuple[str, DeferredModel]]:
    """``(name, model)`` for each model-list entry, each loaded only when first used; ``load``:
    the keywords of :func:`load_entry`."""
    for e in entries:
        yield str(e["name"]), DeferredModel(e, base, **load)


# ----------------------------------------------------------------- timm / torchvision by name
def load_arch(name: str, weights: str | os.PathLike[str] | None = None, *,
              num_classes: int | None = None, seed: int = 0, source: str = "auto") -> nn.Module:
    """A torchvision or timm architecture by name (``"resnet18"``, ``"vgg16"``, ...), in eval mode.

    ``num_classes``: the classes of the head it builds (default: the architecture's own).
    ``weights``: path of a state dict (``.safetensors``, or a torch ``.pt``/``.pth`` file of
    tensors, sniffed by :func:`tensors_only` and read with ``weights_only=True``); random init
    when None, seeded by ``seed`` so that the same call builds the same network (the global RNG is
    left as it was). A file that does not match the architecture (strict) raises ValueError naming
    the file and the mismatching keys. ``source``: ``"auto"`` (torchvision first, then timm),
    ``"torchvision"`` or ``"timm"``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected an architecture name such as 'resnet18', got {name!r}")
    _validate.choice("source", source, ("auto", "torchvision", "timm"))
    seed = _validate.integer("seed", seed, lo=0)
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = _validate.integer("num_classes", num_classes, lo=1)
    path = None if weights is None else Path(weights)
    state = None if path is None else _read_state(path)  # a bad file fails before the build
    with torch.random.fork_rng(devices=[]):  # seeded init on CPU, the caller's RNG untouched
        torch.manual_seed(seed)
        model = _build_arch(name, source, kwargs)
    if path is not None and state is not None:
        _check_state(model, state, path)
        model.load_state_dict(state, strict=True)
    return model.eval()


def _build_arch(name: str, source: str, kwargs: dict[str, Any]) -> nn.Module:
    model = None
    errors = []
    if source in ("auto", "torchvision"):
        try:
            import torchvision
        except ImportError:
            errors.append("torchvision is not installed (pip install torchvision)")
        else:
            if name in torchvision.models.list_models():
                model = torchvision.models.get_model(name, weights=None, **kwargs)
            else:
                errors.append(f"torchvision has no model {name!r}")
    if model is None and source in ("auto", "timm"):
        try:
            import timm
        except ImportError:
            errors.append("timm is not installed (pip install timm, or pip install "
                          "'fastfp[vision]')")
        else:
            if name in timm.list_models():
                model = timm.create_model(name, pretrained=False, **kwargs)
            else:
                errors.append(f"timm has no model {name!r}")
    if model is None:
        raise ValueError(f"name: unknown architecture {name!r}: " + "; ".join(errors))
    return model


def _read_state(weights: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch.save file that only rebuilds tensors
    (sniffed from its bytes first: TorchScript, .pt2 and pickles naming other code are refused
    before torch reads them)."""
    from fastfp.io import read_bytes, read_safetensors

    path = Path(weights)
    data = read_bytes(path, name="weights")  # a regular file only (a FIFO would hang)
    kind = sniff(path, data)
    state: Any
    try:
        if kind == "safetensors":
            state, _ = read_safetensors(data, name="weights")
        elif kind == "torch.save":
            state = read_tensors(path, data, name="weights")
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]
        else:
            raise ValueError(f"a {kind} file, not a state dict (.safetensors, or a .pt of "
                             "tensors)")
    except Exception as exc:
        msg = str(exc).removeprefix("weights: ")
        raise ValueError(f"weights: cannot read {str(path)!r} as a state dict: {msg}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights: {str(path)!r} does not hold a state dict of tensors")
    return state


def _check_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        raise ValueError(f"weights: {str(path)!r} does not match the architecture: "
                         + ", ".join(parts))
