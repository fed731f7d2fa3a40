"""Models from files the checked party supplies, loaded in formats that cannot run code.

A suspect model comes from the party being checked: unpickling it (``torch.load`` with
``weights_only=False``), ``torch.jit.load`` (a scripted ``__setstate__`` runs at load) or
``torch.export.load`` (a ``.pt2`` holds pickles) would let the file run any code in the checker,
e.g. patch the verification to report any score. So :func:`load_suspect` reads only:

- ONNX (``.onnx``), run by onnxruntime (:class:`OnnxClassifier`; CPU and CUDA execution providers;
  forward only, no gradients);
- a safetensors state dict (or a ``.pt`` state dict read with ``weights_only=True``) together with
  its architecture ``arch`` (torchvision / timm, see :func:`fastfp.zoo.load_arch`).

Pickles, TorchScript and ``.pt2`` files are refused with :class:`UnsafeFormatError` unless
``trust_code=True`` (like ``trust_remote_code`` in the Hugging Face ecosystem), which warns with
:class:`TrustCodeWarning`. The format is told by the file's content, not only its name, so a pickle
renamed ``.onnx`` or ``.safetensors`` is still refused.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

SAFE_FORMATS = ("safe formats: ONNX (.onnx), a safetensors state dict with its architecture "
                "(--arch NAME [--num-classes N]; Python: arch=...), or precomputed top-k labels "
                "(.npy) for FBI")
CODE_FORMATS = ("torchscript", "pt2", "torch.save", "pickle")  # what sniff() calls them
ONNX_EXTRA = "pip install 'fastfp[onnx]'"

PathLike = str | os.PathLike[str]


class UnsafeFormatError(ValueError):
    """A suspect file in a format whose loading runs code (pickle, TorchScript, .pt2)."""


class TrustCodeWarning(UserWarning):
    """A file was loaded with ``trust_code=True``: its code ran in this process."""


def sniff(path: PathLike, data: bytes | None = None) -> str:
    """The format of a model file from its content (nothing is unpickled or run):
    ``"onnx"``, ``"safetensors"``, ``"torchscript"``, ``"pt2"``, ``"torch.save"`` (a zip of
    pickles), ``"pickle"`` (a bare or legacy pickle) or ``"unknown"``."""
    if data is None:
        from fastfp.store import read_bytes

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
        return "torch.save"
    if len(data) >= 10:  # safetensors: an 8-byte header length, then the JSON header
        n = int.from_bytes(data[:8], "little")
        if 0 < n <= len(data) - 8 and data[8:9] == b"{":
            return "safetensors"
    if data[:1] == b"\x80":  # pickle protocol 2+ (torch.save's legacy format, pickle.dump)
        return "pickle"
    if Path(path).suffix == ".onnx" or data[:1] == b"\x08":  # ModelProto opens with ir_version
        return "onnx"
    return "unknown"


class OnnxClassifier(nn.Module):
    """An ONNX classifier run by onnxruntime, as an ``nn.Module`` (batch -> logits).

    Forward only: the session computes no gradients, which is enough for verification and FBI
    queries; generating characteristic examples needs a PyTorch model. ``providers``: onnxruntime
    execution providers (default: CUDA when both onnxruntime and torch see a GPU, then CPU).
    Inputs are moved to the CPU for the session and the logits come back on the input's device.
    """

    def __init__(self, path: PathLike, providers: list[str] | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(f"path: ONNX models need onnxruntime ({ONNX_EXTRA})") from None
        from fastfp.store import read_bytes

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
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(data, opts, providers=list(providers))
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
        return out.to(x.device)

    def _run(self, arr: Any) -> torch.Tensor:
        (out, *_) = self.session.run(None, {self._input: arr})
        return torch.from_numpy(out).float()

    def _run_fixed(self, arr: Any, batch: int) -> torch.Tensor:
        import numpy as np

        n = len(arr)
        if n < batch:  # pad the last chunk to the model's batch, keep only the real rows
            arr = np.concatenate([arr, np.zeros((batch - n, *arr.shape[1:]), arr.dtype)])
        return self._run(arr)[:n]

    def extra_repr(self) -> str:
        return f"{self.path!r}, providers={self.session.get_providers()}"


@dataclass(frozen=True)
class ArchConfig:
    """What an architecture's own pretrained config says about its inputs."""

    input_shape: tuple[int, int, int]
    normalize: tuple[tuple[float, ...], tuple[float, ...]]


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def arch_config(name: str, model: nn.Module) -> ArchConfig:
    """The input shape and normalisation of ``model`` built by :func:`fastfp.zoo.load_arch`
    as ``name``: timm's ``pretrained_cfg`` (``input_size``, ``mean``, ``std``); for torchvision the
    default weights' transforms (crop size, mean, std), else 3x224x224 and ImageNet's mean/std."""
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


def load_trusted(path: PathLike) -> nn.Module:
    """A TorchScript file, a ``.pt2`` exported program or a torch.save'd module. This RUNS CODE
    from the file: only for files you trust (your own model, or ``trust_code=True``)."""
    from fastfp.store import read_bytes

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
                 device: str | torch.device | None = None) -> nn.Module:
    """A suspect model from a file, in eval mode on ``device`` (default: CPU), without running
    code from the file.

    ``arch``: a torchvision / timm architecture; ``path`` is then its state dict (``.safetensors``,
    or ``.pt`` read with ``weights_only=True``), or None / ``"random"`` for the random init seeded
    by ``seed``; ``num_classes`` sizes its head. Without ``arch``: an ONNX file
    (:class:`OnnxClassifier`). Pickles, TorchScript and ``.pt2`` raise :class:`UnsafeFormatError`
    unless ``trust_code=True`` (then they load, with a :class:`TrustCodeWarning`).
    """
    from fastfp import _validate, zoo

    if not isinstance(trust_code, bool):
        raise TypeError(f"trust_code: expected a bool, got {type(trust_code).__name__}")
    dev = _validate.device("device", device if device is not None else "cpu")
    if path is not None and not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    if arch is not None:
        if not isinstance(arch, str) or not arch:
            raise TypeError(f"arch: expected an architecture name such as 'resnet18', got "
                            f"{arch!r}")
        weights = None if path is None or str(path) == "random" else path
        if weights is not None and sniff(weights) in ("torchscript", "pt2"):
            raise UnsafeFormatError(f"path: {str(weights)!r} is a {sniff(weights)} file, not a "
                                    f"state dict for arch={arch!r}; {SAFE_FORMATS}")
        model = zoo.load_arch(arch, weights, num_classes=num_classes, seed=seed)
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
        return OnnxClassifier(path, providers=providers).to(dev).eval()
    if kind == "safetensors":
        raise ValueError(f"path: {str(path)!r} is a safetensors state dict: give its "
                         "architecture (arch=... / --arch NAME, with --num-classes N for a "
                         "fine-tuned head)")
    if kind == "unknown":
        raise ValueError(f"path: cannot tell the format of {str(path)!r}; {SAFE_FORMATS}")
    if not trust_code:
        raise UnsafeFormatError(f"path: {str(path)!r} is a {kind} file, whose loading runs code "
                                f"from it: refused for a suspect model; {SAFE_FORMATS}; or pass "
                                "--trust-code (Python: trust_code=True) for a file you trust")
    warnings.warn(f"trust_code: loading {str(path)!r} ({kind}) runs code from the file",
                  TrustCodeWarning, stacklevel=2)
    return load_trusted(path).to(dev).eval()
