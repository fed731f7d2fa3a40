"""Weight noise for RC / RC+GM / LTRC: the reproducible stream ``theta + U(-delta, delta)``.

The noise is a pure function of (seed, offset, global element index): Philox4x32-10, counter =
index of the element in the whole parameter list laid end to end, ``offset`` selects the stream
(e.g. ``step * q + copy``), ``seed`` the key. The exact bit-level definition is in
:mod:`fastfp.reference.noise`; every implementation here produces the same bits (tested), so
CPU-only users lose speed, not results.

One generator per device (``fastfp.backend.last_used("noise.perturb")``): ``"ext"`` (the OpenMP
extension, CPU tensors), ``"cuda"`` (the extension's CUDA kernel, CUDA tensors), and ``"torch"``
when the extension is missing or ``FASTFP_BACKEND=torch`` (or ``reference``): the twin's int64
Philox, in chunks. ``FASTFP_BACKEND=cuda`` forces the CUDA kernel.

The offset of a draw may be a one-element int64 tensor on the parameters' device instead of an
int: on CUDA it is read on the device (by the kernel, or by the fallback's tensor ops), never by
the host, so a captured CUDA graph draws the stream its replay finds in that tensor.

This module is the stream only. The mean gradient over noisy copies is method code and lives in
:mod:`fastfp.cexamples.gradmean` (``fastfp.noise.grad_mean`` is a deprecated alias of its
:func:`~fastfp.cexamples.gradmean.grad_mean`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

from . import _validate, backend
from .reference import noise as _ref

NOISE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
Offset: TypeAlias = int | torch.Tensor  # or a one-element int64 tensor, read on the device
_MAX_U64 = 2 ** 64 - 1
TORCH_CHUNK = 1 << 22  # elements per fallback chunk: bounds its int64 temporaries (~32 MiB each)
_MAX_DELTA = float(torch.finfo(torch.float32).max)  # delta is used in float32


# ----------------------------------------------------------------------------- validation

def check_params(name: str, params: Any) -> list[torch.Tensor]:
    if isinstance(params, torch.Tensor) or not isinstance(params, Sequence):
        raise TypeError(f"{name}: expected a list of tensors, got {type(params).__name__}")
    params = list(params)
    if not params:
        raise ValueError(f"{name}: expected at least one tensor, got an empty list")
    device = None
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{name}[{i}]: expected a torch.Tensor, got {type(p).__name__}")
        if p.dtype not in NOISE_DTYPES:
            raise TypeError(f"{name}[{i}]: expected float32, bfloat16 or float16, got {p.dtype}")
        if device is None:
            device = p.device
        elif p.device != device:
            raise ValueError(f"{name}[{i}]: on {p.device}, but {name}[0] is on {device} "
                             "(all tensors must share one device)")
        _check_storage(f"{name}[{i}]", p)
    return params


def _check_storage(name: str, t: torch.Tensor) -> None:
    """The tensor's storage holds every element its shape and strides reach.

    A storage can shrink under a tensor after the fact (FSDP frees parameters with
    ``untyped_storage().resize_(0)``); the extension writes through raw pointers, so that must be
    an error here, not a read or write out of bounds.
    """
    if t.numel() == 0:
        return
    reach = t.storage_offset() + 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride(),
                                                                          strict=True))
    have = t.untyped_storage().nbytes()
    if have < reach * t.element_size():
        raise ValueError(f"{name}: its storage holds {have} bytes, but its shape "
                         f"{tuple(t.shape)} needs {reach * t.element_size()} (was the storage "
                         "resized or freed, e.g. by FSDP, after the tensor was made?)")


def check_stream(delta: object, seed: object) -> tuple[float, int]:
    delta = _validate.real("delta", delta, lo=0.0, hi=_MAX_DELTA)
    seed = _validate.integer("seed", seed, lo=0, hi=_MAX_U64)
    return delta, seed


def check_offset(offset: object, device: torch.device | None = None, copies: int = 1) -> Offset:
    """An int with ``offset + copies - 1 < 2^64``, or a one-element int64 tensor (on ``device``
    when given), returned with shape (1,). A CUDA tensor's value is not read (no host sync)."""
    if not isinstance(offset, torch.Tensor):
        offset = _validate.integer("offset", offset, lo=0, hi=_MAX_U64)
        if offset + copies - 1 > _MAX_U64:
            raise ValueError(f"offset: offset + q - 1 must fit in 64 bits, got {offset} + "
                             f"{copies} - 1")
        return offset
    if offset.dtype != torch.int64:
        raise TypeError(f"offset: expected an int or an int64 tensor, got a {offset.dtype} tensor")
    if offset.numel() != 1:
        raise ValueError(f"offset: expected a one-element tensor, got shape {tuple(offset.shape)}")
    if device is not None and offset.device != device:
        raise ValueError(f"offset: on {offset.device}, but the params are on {device}")
    if offset.device.type == "cpu" and int(offset) < 0:  # read as unsigned on the device
        raise ValueError(f"offset: expected an int64 >= 0, got {int(offset)}")
    return offset.reshape(1)


def _check_out(out: Any, params: list[torch.Tensor]) -> list[torch.Tensor]:
    out = check_params("out", out)
    if len(out) != len(params):
        raise ValueError(f"out: expected {len(params)} tensors (one per param), got {len(out)}")
    for i, (o, p) in enumerate(zip(out, params, strict=True)):
        if o.shape != p.shape or o.dtype != p.dtype or o.device != p.device:
            raise ValueError(f"out[{i}]: expected shape {tuple(p.shape)}, {p.dtype} on {p.device}, "
                             f"got {tuple(o.shape)}, {o.dtype} on {o.device}")
        if not o.is_contiguous():
            raise ValueError(f"out[{i}]: must be contiguous")
    return out


# ----------------------------------------------------------------------------- dispatch

def _has_ext_kernel() -> bool:
    ext = backend.extension()
    return ext is not None and hasattr(ext, "noise_perturb")


def implementation(device: torch.device, op: str = "noise.perturb") -> str:
    """Which implementation serves tensors on ``device`` now (raises if a forced one is missing)."""
    forced = backend.forced()
    if forced in ("torch", "reference"):
        return "torch"
    if device.type == "cuda":
        if _has_ext_kernel() and backend.extension_cuda_usable():
            return "cuda"
        if forced == "cuda":
            raise backend.missing("cuda", op)
        return "torch"
    if forced == "cuda":
        raise backend.missing("cuda", op)
    return "ext" if device.type == "cpu" and _has_ext_kernel() else "torch"


def _stream_handle(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


def _torch_noise(start: int, count: int, delta: float, seed: int, offset: Offset,
                 device: torch.device) -> torch.Tensor:
    """float32 noise of global indices ``start .. start + count - 1``, any device.

    The Philox rounds are the twin's (:func:`fastfp.reference.noise.philox4x32_10`): one torch
    coding of the stream rather than a second one to keep bit-identical; what is the fallback's
    own (chunks, the device offset, rounding to the dtype) is still checked against the twin's
    ``perturb``. Tensor ops only, so a tensor ``offset`` is never read on the host.
    """
    first, last = start // 4, (start + count - 1) // 4
    b = torch.arange(first, last + 1, dtype=torch.int64, device=device)
    if isinstance(offset, torch.Tensor):  # int64 holding the uint64 bits: >> then mask is exact
        o0, o1 = (offset & _ref.MASK32).expand_as(b), ((offset >> 32) & _ref.MASK32).expand_as(b)
    else:
        lo, hi = _ref.split64(offset)
        o0, o1 = torch.full_like(b, lo), torch.full_like(b, hi)
    words = _ref.philox4x32_10(b & _ref.MASK32, b >> 32, o0, o1, _ref.split64(seed))
    skip = start - 4 * first
    u = torch.stack(words, dim=1).reshape(-1)[skip:skip + count]
    v = (u >> 8).to(torch.float32) * (2.0 ** -24)  # exact
    # (2 v - 1) is exact; the product with float32(delta) is the one rounding
    return (v * 2.0 - 1.0).mul_(float(np.float32(delta)))


def _fill_torch(masters: list[torch.Tensor], outs: list[torch.Tensor], delta: float, seed: int,
                offset: Offset) -> None:
    """outs[i] = masters[i] + noise, chunk by chunk (the fallback)."""
    base = 0
    for p, o in zip(masters, outs, strict=True):
        flat_p, flat_o, n = p.detach().reshape(-1), o.view(-1), p.numel()
        for s in range(0, n, TORCH_CHUNK):
            e = min(n, s + TORCH_CHUNK)
            z = _torch_noise(base + s, e - s, delta, seed, offset, p.device)
            torch.add(flat_p[s:e].to(torch.float32), z, out=z)  # one float32 add, no FMA
            flat_o[s:e].copy_(z)  # round-to-nearest-even into the parameter's dtype
        base += n


def _layout(tensors: list[torch.Tensor]) -> list[tuple]:
    """What a plan depends on: storage address, shape, strides, dtype of each tensor. A storage
    freed or resized under a tensor moves its data pointer (to 0 when freed), so the next draw
    re-binds, and binding checks that each tensor fits its storage."""
    return [(t.data_ptr(), t.shape, t.stride(), t.dtype) for t in tensors]


class Perturber:
    """``out[i] = params[i] + U(-delta, delta)``, validated once and drawn many times.

    Building it checks the tensors and, on the extension paths, hands them to the extension once
    (through DLPack); each :meth:`draw` is then one OpenMP region or one kernel launch (per 40
    tensors) with no per-tensor Python work beyond a layout check. Not for concurrent draws from
    several threads (one ``out``). ``params`` are read at every draw, so in-place updates are
    seen (non-contiguous ones are copied into a contiguous scratch at each draw on the extension
    paths). ``out`` defaults to fresh buffers.

    A draw after a parameter or an ``out`` tensor was resized, or had its ``.data`` replaced,
    re-binds to the current tensors (validated again): the same result as a new Perturber. Buffers
    the Perturber allocated follow the parameters' new shapes; a given ``out`` that no longer
    matches raises ``ValueError``.
    """

    def __init__(self, params: Sequence[torch.Tensor], out: Sequence[torch.Tensor] | None = None,
                 *, op: str = "noise.perturb") -> None:
        self.params = check_params("params", params)
        self.op = op
        self._own_out = out is None
        self.out = self._new_out() if out is None else _check_out(out, self.params)
        self._bind()

    def _new_out(self) -> list[torch.Tensor]:
        return [torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in self.params]

    def _bind(self) -> None:
        """Validate the current tensors and build the extension plan over them."""
        self.params = check_params("params", self.params)
        if self._own_out and any(o.shape != p.shape or o.dtype != p.dtype or o.device != p.device
                                 for o, p in zip(self.out, self.params, strict=True)):
            self.out = self._new_out()
        self.out = _check_out(self.out, self.params)
        self.device = self.params[0].device
        self.impl = implementation(self.device, self.op)
        self._plan = None
        self._strided: list[tuple[torch.Tensor, torch.Tensor]] = []  # refreshed at every draw
        if self.impl != "torch":
            masters = [p.detach() if p.is_contiguous() else p.detach().contiguous()
                       for p in self.params]
            self._strided = [(p, m) for p, m in zip(self.params, masters, strict=True)
                             if not p.is_contiguous()]
            self._plan = backend.extension().NoisePlan(masters, self.out)
        self._layout = _layout(self.params + self.out)

    def draw(self, delta: float, seed: int, offset: Offset = 0) -> list[torch.Tensor]:
        """Fill and return ``out`` with the noise stream ``(seed, offset)``.

        ``offset``: an int, or a one-element int64 tensor on the params' device (on CUDA read
        by the device only: the draw may run inside ``torch.cuda.graph`` capture).
        """
        delta, seed = check_stream(delta, seed)
        if _layout(self.params + self.out) != self._layout:
            self._bind()
        offset = check_offset(offset, self.device)
        with torch.no_grad():
            if self._plan is None:
                _fill_torch(self.params, self.out, delta, seed, offset)
            else:
                for p, scratch in self._strided:  # a copy taken once would miss in-place updates
                    scratch.copy_(p)
                stream = _stream_handle(self.device)
                if isinstance(offset, torch.Tensor):
                    self._plan.run_at(offset, delta, seed, 0, stream)
                else:
                    self._plan.run(delta, seed, offset, stream)
        backend.record(self.op, self.impl)
        return self.out


# ----------------------------------------------------------------------------- public API

def perturb(params: Sequence[torch.Tensor], delta: float, seed: int, offset: Offset = 0,
            out: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``[p + U(-delta, delta) for p in params]``, reproducible from ``(seed, offset)``.

    ``params``: non-empty list of float32 / bfloat16 / float16 tensors on one device (any shape,
    contiguous or not; never modified unless passed again as ``out``). ``out``: optional list of
    contiguous tensors matching ``params`` to write into (``out=params`` perturbs in place; keep a
    copy of the master weights to restore them exactly). ``offset``: an int or a one-element
    int64 tensor on the params' device. Returns the perturbed tensors (detached).
    """
    check_stream(delta, seed)  # fail on bad numbers before converting any tensor
    check_offset(offset)
    return Perturber(params, out).draw(delta, seed, offset)


@contextlib.contextmanager
def perturbed(params: torch.nn.Module | Sequence[torch.Tensor], delta: float, seed: int,
              offset: Offset = 0) -> Iterator[list[torch.Tensor]]:
    """Perturb ``params`` in place for the duration of a ``with`` block, then restore them exactly.

    ``params``: a module (its parameters) or a list of tensors. The masters are kept in one
    copy and copied back on exit (even on error): re-deriving them as ``(p + z) - z`` would not
    be exact in floating point. For models ``functional_call`` cannot take (TorchScript), or
    code that must see the noisy weights in the module itself. Yields the parameter list.
    """
    if isinstance(params, torch.nn.Module):
        params = list(params.parameters())
    params = check_params("params", params)
    delta, seed = check_stream(delta, seed)
    offset = check_offset(offset, params[0].device)
    for i, p in enumerate(params):
        if not p.is_contiguous():
            raise ValueError(f"params[{i}]: must be contiguous to be perturbed in place")
    with torch.no_grad():
        masters = [p.detach().clone() for p in params]
        Perturber(masters, [p.detach() for p in params]).draw(delta, seed, offset)
    try:
        yield params
    finally:
        with torch.no_grad():
            for p, m in zip(params, masters, strict=True):
                p.copy_(m)


def noise(numel: int, delta: float, seed: int, offset: int = 0, *, start: int = 0,
          device: str | torch.device = "cpu") -> torch.Tensor:
    """The raw float32 noise of global indices ``start .. start + numel - 1`` (a flat tensor).

    ``perturb(params, ...)[i]`` equals ``params[i] + noise(...)`` at that tensor's global indices
    (after rounding to the parameter's dtype).
    """
    numel = _validate.integer("numel", numel, lo=0)
    start = _validate.integer("start", start, lo=0)
    delta, seed = check_stream(delta, seed)
    offset = _validate.integer("offset", offset, lo=0, hi=_MAX_U64)
    device = torch.device(device)
    impl = implementation(device, "noise.noise")
    out = torch.empty(numel, dtype=torch.float32, device=device)
    if numel == 0:
        return out
    if impl == "torch":
        out.copy_(_torch_noise(start, numel, delta, seed, offset, device))
    else:
        backend.extension().noise_fill(out, start, delta, seed, offset, _stream_handle(device))
    backend.record("noise.noise", impl)
    return out


# ----------------------------------------------------------------------------- torch.library op

@torch.library.custom_op("fastfp::noise_perturb", mutates_args=())
def _perturb_op(params: list[torch.Tensor], delta: float, seed: int,
                offset: int) -> list[torch.Tensor]:
    """``torch.ops.fastfp.noise_perturb``: :func:`perturb` as a custom op (``torch.compile`` traces
    it through its fake kernel; seed and offset limited to int64 by the op schema)."""
    return perturb(params, delta, seed, offset)


@_perturb_op.register_fake
def _perturb_fake(params, delta, seed, offset):
    return [p.new_empty(p.shape) for p in params]


def _perturb_backward(ctx, grads):
    # out = p + noise(seed, offset): the noise is a constant, so d out / d p is the identity.
    return list(grads), None, None, None


_perturb_op.register_autograd(_perturb_backward)


def __getattr__(name: str) -> Any:
    # ``fastfp.noise.grad_mean`` (0.1.0) moved to :func:`fastfp.cexamples.gradmean.grad_mean`: the
    # gradient mean is method code and this module is the stream only. A deprecated alias, looked
    # up by name on first use so that this lower layer imports nothing from the method layer.
    if name == "grad_mean":
        import importlib
        import warnings

        warnings.warn("fastfp.noise.grad_mean moved to fastfp.cexamples.gradmean.grad_mean",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module("fastfp.cexamples.gradmean").grad_mean
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
