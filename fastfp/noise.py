"""Weight noise for RC / RC+GM / LTRC: reproducible ``theta + U(-delta, delta)`` and gradient means.

The noise is a pure function of (seed, offset, global element index): Philox4x32-10, counter =
index of the element in the whole parameter list laid end to end, ``offset`` selects the stream
(e.g. ``step * q + copy``), ``seed`` the key. The exact bit-level definition is in
:mod:`fastfp.reference.noise`; the compiled extension (C++/OpenMP on CPU, CUDA on GPU) and the
torch fallback produce the same bits (tested), so CPU-only users lose speed, not results.

Implementations (``fastfp.backend.last_used("noise.perturb")``): ``"ext"`` (OpenMP extension,
CPU tensors), ``"cuda"`` (extension kernel, CUDA tensors), ``"torch"`` (fallback, any device).
``FASTFP_BACKEND=torch`` (or ``reference``) forces the fallback, ``FASTFP_BACKEND=cuda`` the CUDA
kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _validate, backend
from .reference import noise as _ref

NOISE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_U64 = 2 ** 64 - 1
_TORCH_CHUNK = 1 << 22  # elements per fallback chunk: bounds the int64 temporaries (~8 x 32 MiB)


# ----------------------------------------------------------------------------- validation

def _check_params(name: str, params) -> list[torch.Tensor]:
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
    return params


def _check_stream(delta, seed, offset) -> tuple[float, int, int]:
    delta = _validate.real("delta", delta, lo=0.0)
    seed = _validate.integer("seed", seed, lo=0, hi=_MAX_U64)
    offset = _validate.integer("offset", offset, lo=0, hi=_MAX_U64)
    return delta, seed, offset


def _check_out(out, params) -> list[torch.Tensor]:
    out = _check_params("out", out)
    if len(out) != len(params):
        raise ValueError(f"out: expected {len(params)} tensors (one per param), got {len(out)}")
    for i, (o, p) in enumerate(zip(out, params)):
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


def _fill_torch(masters, outs, delta, seed, offset) -> None:
    base = 0
    for p, o in zip(masters, outs):
        flat_p, flat_o, n = p.detach().reshape(-1), o.view(-1), p.numel()
        for s in range(0, n, _TORCH_CHUNK):
            e = min(n, s + _TORCH_CHUNK)
            noise_ = _ref.noise(base + s, e - s, delta, seed, offset, p.device)
            torch.add(flat_p[s:e].to(torch.float32), noise_, out=noise_)
            flat_o[s:e].copy_(noise_)  # round-to-nearest-even into the parameter's dtype
        base += n


def _fill(masters, outs, delta, seed, offset, impl) -> None:
    """outs[i] = masters[i] + noise, in one pass (extension) or chunk by chunk (torch)."""
    if impl == "torch":
        _fill_torch(masters, outs, delta, seed, offset)
        return
    ext = backend.extension()
    masters = [m.detach() if m.is_contiguous() else m.detach().contiguous() for m in masters]
    ext.noise_perturb(masters, outs, delta, seed, offset, _stream_handle(outs[0].device))


# ----------------------------------------------------------------------------- public API

def perturb(params, delta: float, seed: int, offset: int = 0, out=None) -> list[torch.Tensor]:
    """``[p + U(-delta, delta) for p in params]``, reproducible from ``(seed, offset)``.

    ``params``: non-empty list of float32 / bfloat16 / float16 tensors on one device (any shape,
    contiguous or not; never modified unless passed again as ``out``). ``out``: optional list of
    contiguous tensors matching ``params`` to write into (``out=params`` perturbs in place; keep a
    copy of the master weights to restore them exactly). Returns the perturbed tensors (detached).
    """
    params = _check_params("params", params)
    delta, seed, offset = _check_stream(delta, seed, offset)
    impl = implementation(params[0].device)
    if out is None:
        out = [torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in params]
    else:
        out = _check_out(out, params)
    with torch.no_grad():
        _fill(params, out, delta, seed, offset, impl)
    backend.record("noise.perturb", impl)
    return out


def noise(numel: int, delta: float, seed: int, offset: int = 0, *, start: int = 0,
          device="cpu") -> torch.Tensor:
    """The raw float32 noise of global indices ``start .. start + numel - 1`` (a flat tensor).

    ``perturb(params, ...)[i]`` equals ``params[i] + noise(...)`` at that tensor's global indices
    (after rounding to the parameter's dtype).
    """
    numel = _validate.integer("numel", numel, lo=0)
    start = _validate.integer("start", start, lo=0)
    delta, seed, offset = _check_stream(delta, seed, offset)
    device = torch.device(device)
    impl = implementation(device, "noise.noise")
    out = torch.empty(numel, dtype=torch.float32, device=device)
    if numel == 0:
        return out
    if impl == "torch":
        out.copy_(_ref.noise(start, numel, delta, seed, offset, device))
    else:
        backend.extension().noise_fill(out, start, delta, seed, offset, _stream_handle(device))
    backend.record("noise.noise", impl)
    return out


def grad_mean(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, delta: float, q: int,
              seed: int, offset: int = 0, loss: str = "ce") -> torch.Tensor:
    """Mean over copies ``c = 0 .. q-1`` of d CE(model_{theta + Delta(seed, offset + c)}(x), labels) / dx.

    The loss is summed over the batch, so each example's gradient is its own. The model runs in
    eval mode (its mode is restored afterwards) through ``torch.func.functional_call`` on one
    scratch copy of the weights that every copy reuses: the module and its parameters are never
    modified and no ``.grad`` is accumulated on them. Returns a tensor shaped like ``x``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    _validate.tensor("x", x, min_dim=1, floating=True)
    _validate.tensor("labels", labels, min_dim=1)
    if labels.dtype != torch.int64:
        raise TypeError(f"labels: expected int64 class indices, got {labels.dtype}")
    if labels.shape != x.shape[:1]:
        raise ValueError(f"labels: expected shape ({x.shape[0]},) (one per example of x), "
                         f"got {tuple(labels.shape)}")
    if labels.device != x.device:
        raise ValueError(f"labels: on {labels.device}, but x is on {x.device}")
    q = _validate.integer("q", q, lo=1)
    delta, seed, offset = _check_stream(delta, seed, offset)
    if offset + q - 1 > _MAX_U64:
        raise ValueError(f"offset: offset + q - 1 must fit in 64 bits, got {offset} + {q} - 1")
    _validate.choice("loss", loss, ("ce",))
    named = [(n, p) for n, p in model.named_parameters()]
    if not named:
        raise ValueError("model: has no parameters to perturb")
    names = [n for n, _ in named]
    masters = _check_params("model.parameters()", [p for _, p in named])
    if masters[0].device != x.device:
        raise ValueError(f"x: on {x.device}, but the model's parameters are on {masters[0].device}")
    dtypes = {p.dtype for p in masters}
    if len(dtypes) == 1 and x.dtype not in dtypes:
        raise TypeError(f"x: {x.dtype} does not match the model's parameters ({masters[0].dtype})")
    impl = implementation(x.device, "noise.grad_mean")

    from torch.func import functional_call
    import torch.nn.functional as F

    scratch = [torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in masters]
    weights = dict(zip(names, scratch))
    xg = x.detach().requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        total = None
        for c in range(q):
            with torch.no_grad():
                _fill(masters, scratch, delta, seed, offset + c, impl)
            out = functional_call(model, weights, (xg,))
            value = F.cross_entropy(out, labels, reduction="sum")
            (g,) = torch.autograd.grad(value, xg)
            total = g if total is None else total.add_(g)
    finally:
        model.train(was_training)
    backend.record("noise.perturb", impl)
    backend.record("noise.grad_mean", impl)
    return total / q
