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

import contextlib
from collections.abc import Sequence

import torch

from . import _validate, backend
from .reference import noise as _ref

NOISE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_U64 = 2 ** 64 - 1
_TORCH_CHUNK = 1 << 22  # elements per fallback chunk: bounds the 64-bit temporaries (~32 MiB each)
_MAX_DELTA = float(torch.finfo(torch.float32).max)  # delta is used in float32


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
    delta = _validate.real("delta", delta, lo=0.0, hi=_MAX_DELTA)
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


def _numpy_noise(start: int, count: int, delta: float, seed: int, offset: int) -> torch.Tensor:
    """The same stream as :func:`fastfp.reference.noise.noise`, from numpy ``uint64`` Philox.

    A 32 x 32-bit product fits in ``uint64``, so each round is 2 multiplies, shifts, masks and
    xors (the int64 twin needs 16-bit halves): about 10x faster on CPU.
    """
    import numpy as np

    u64 = np.uint64
    first, last = start // 4, (start + count - 1) // 4
    b = np.arange(first, last + 1, dtype=u64)
    mask, shift = u64(_ref.MASK32), u64(32)
    o0, o1 = _ref.split64(offset)
    k0, k1 = _ref.split64(seed)
    c0, c1 = b & mask, b >> shift
    c2, c3 = np.full_like(b, o0), np.full_like(b, o1)
    for r in range(_ref.ROUNDS):
        if r:
            k0, k1 = (k0 + _ref.PHILOX_W0) & _ref.MASK32, (k1 + _ref.PHILOX_W1) & _ref.MASK32
        p0, p1 = c0 * u64(_ref.PHILOX_M0), c2 * u64(_ref.PHILOX_M1)
        c0, c1, c2, c3 = (p1 >> shift) ^ c1 ^ u64(k0), p1 & mask, (p0 >> shift) ^ c3 ^ u64(k1), p0 & mask
    skip = start - 4 * first
    u = np.stack([c0, c1, c2, c3], axis=1).reshape(-1)[skip:skip + count]
    sym = ((u >> u64(8)).astype(np.int64) * 2 - (1 << 24)).astype(np.float32)  # exact
    sym *= np.float32(2.0 ** -24)  # (2 v - 1), exact
    sym *= np.float32(delta)  # the one rounding
    return torch.from_numpy(sym)


def _fill_torch(masters, outs, delta, seed, offset) -> None:
    """outs[i] = masters[i] + noise, chunk by chunk (numpy Philox on CPU, the int64 twin elsewhere)."""
    base = 0
    for p, o in zip(masters, outs):
        flat_p, flat_o, n = p.detach().reshape(-1), o.view(-1), p.numel()
        for s in range(0, n, _TORCH_CHUNK):
            e = min(n, s + _TORCH_CHUNK)
            if p.device.type == "cpu":
                noise_ = _numpy_noise(base + s, e - s, delta, seed, offset)
            else:
                noise_ = _ref.noise(base + s, e - s, delta, seed, offset, p.device)
            torch.add(flat_p[s:e].to(torch.float32), noise_, out=noise_)
            flat_o[s:e].copy_(noise_)  # round-to-nearest-even into the parameter's dtype
        base += n


_DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # noise::Dtype in csrc/noise.h
_DLPACK_DEVICE = {"cpu": 1, "cuda": 2}


def _plan(masters: list[torch.Tensor], outs: list[torch.Tensor]):
    """An extension NoisePlan over validated contiguous tensors of one device.

    Built from raw data pointers (a few microseconds for a whole model) rather than one DLPack
    conversion per tensor (a few microseconds each); the caller keeps the tensors alive.
    """
    ext = backend.extension()
    device = masters[0].device
    if not hasattr(ext.NoisePlan, "_from_pointers"):  # an older build: the DLPack constructor
        return ext.NoisePlan(masters, outs)
    index = device.index if device.index is not None else (
        torch.cuda.current_device() if device.type == "cuda" else 0)
    return ext.NoisePlan._from_pointers(
        [m.data_ptr() for m in masters], [o.data_ptr() for o in outs], [m.numel() for m in masters],
        [_DTYPE_CODES[m.dtype] for m in masters], _DLPACK_DEVICE[device.type], index)


class Perturber:
    """``out[i] = params[i] + U(-delta, delta)``, validated once and drawn many times.

    Building it checks the tensors and, on the extension paths, builds the pointer table once;
    each :meth:`draw` is then one OpenMP region or one kernel launch (per 40 tensors) with no
    per-tensor Python work. Not for concurrent draws from several threads (one ``out``).
    ``params`` are read at every draw, so in-place updates are seen (on the extension paths,
    non-contiguous ones are copied into a contiguous scratch at each draw). ``out`` defaults
    to fresh buffers.
    """

    def __init__(self, params, out=None, *, op: str = "noise.perturb"):
        self.params = _check_params("params", params)
        self.device = self.params[0].device
        self.impl = implementation(self.device, op)
        self.op = op
        if out is None:
            out = [torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in self.params]
        self.out = _check_out(out, self.params)
        self._plan = None
        self._strided = []  # (param, its contiguous scratch): refreshed at every draw
        if self.impl != "torch":
            masters = [p.detach() if p.is_contiguous() else p.detach().contiguous()
                       for p in self.params]
            self._strided = [(p, m) for p, m in zip(self.params, masters)
                             if not p.is_contiguous()]
            self._plan = _plan(masters, self.out)
            self._keep = masters  # the plan holds raw pointers into these

    def draw(self, delta: float, seed: int, offset: int = 0) -> list[torch.Tensor]:
        """Fill and return ``out`` with the noise stream ``(seed, offset)``."""
        delta, seed, offset = _check_stream(delta, seed, offset)
        if self._plan is None:
            with torch.no_grad():
                _fill_torch(self.params, self.out, delta, seed, offset)
        else:
            # a copy taken once would miss in-place updates the torch path sees
            with torch.no_grad():
                for p, scratch in self._strided:
                    scratch.copy_(p)
            self._plan.run(delta, seed, offset, _stream_handle(self.device))
        backend.record(self.op, self.impl)
        return self.out


# ----------------------------------------------------------------------------- public API

def perturb(params, delta: float, seed: int, offset: int = 0, out=None) -> list[torch.Tensor]:
    """``[p + U(-delta, delta) for p in params]``, reproducible from ``(seed, offset)``.

    ``params``: non-empty list of float32 / bfloat16 / float16 tensors on one device (any shape,
    contiguous or not; never modified unless passed again as ``out``). ``out``: optional list of
    contiguous tensors matching ``params`` to write into (``out=params`` perturbs in place; keep a
    copy of the master weights to restore them exactly). Returns the perturbed tensors (detached).
    """
    _check_stream(delta, seed, offset)  # fail on bad numbers before converting any tensor
    return Perturber(params, out).draw(delta, seed, offset)


@contextlib.contextmanager
def perturbed(params, delta: float, seed: int, offset: int = 0):
    """Perturb ``params`` in place for the duration of a ``with`` block, then restore them exactly.

    ``params``: a module (its parameters) or a list of tensors. The masters are kept in one
    copy and copied back on exit (even on error): re-deriving them as ``(p + z) - z`` would not
    be exact in floating point. For models ``functional_call`` cannot take (TorchScript), or
    code that must see the noisy weights in the module itself. Yields the parameter list.
    """
    if isinstance(params, torch.nn.Module):
        params = list(params.parameters())
    params = _check_params("params", params)
    delta, seed, offset = _check_stream(delta, seed, offset)
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
            for p, m in zip(params, masters):
                p.copy_(m)


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
    if impl == "torch" and device.type == "cpu":
        out.copy_(_numpy_noise(start, numel, delta, seed, offset))
    elif impl == "torch":
        out.copy_(_ref.noise(start, numel, delta, seed, offset, device))
    else:
        backend.extension().noise_fill(out, start, delta, seed, offset, _stream_handle(device))
    backend.record("noise.noise", impl)
    return out


def grad_mean(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, delta: float, q: int,
              seed: int, offset: int = 0, loss: str = "ce", batch: str = "loop") -> torch.Tensor:
    """Mean over copies ``c = 0 .. q-1`` of d CE(model_{theta + Delta(seed, offset + c)}(x), labels) / dx.

    The loss is summed over the batch, so each example's gradient is its own. The model runs in
    eval mode (its mode is restored afterwards) through ``torch.func.functional_call``: the module
    and its parameters are never modified and no ``.grad`` is accumulated on them.

    ``batch="loop"`` (default, measured faster on CPU) draws the copies one after the other
    into one scratch copy of the weights; ``batch="vmap"`` stacks the q noisy copies
    (q x the weights in memory) and runs them in one ``torch.func.vmap`` forward and one
    backward (same values up to summation order). Returns a tensor shaped like ``x``.
    Works under ``torch.no_grad()`` and ``torch.inference_mode()`` too.
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
    _validate.choice("batch", batch, ("loop", "vmap"))
    named = list(model.named_parameters())
    if not named:
        raise ValueError("model: has no parameters to perturb")
    names = [n for n, _ in named]
    masters = _check_params("model.parameters()", [p for _, p in named])
    if masters[0].device != x.device:
        raise ValueError(f"x: on {x.device}, but the model's parameters are on {masters[0].device}")
    dtypes = {p.dtype for p in masters}
    if len(dtypes) == 1 and x.dtype not in dtypes:
        raise TypeError(f"x: {x.dtype} does not match the model's parameters ({masters[0].dtype})")
    # one sync: cross_entropy would silently skip a label of -100 (its ignore_index) and name
    # no argument for the others; the upper bound is checked against the first logits
    top = -1
    if labels.numel():
        low, top = (int(v) for v in labels.aminmax())
        if low < 0:
            raise ValueError(f"labels: expected class indices >= 0, got {low}")
    return _grad_mean(model, names, masters, x, labels, delta, q, seed, offset, batch, top)


def _grad_mean(model, names, masters, x, labels, delta, q, seed, offset, batch="loop", top=-1):
    """:func:`grad_mean` on validated arguments (the cexamples engine's per-step call: its labels
    were checked once, so no per-step sync). ``top``: the largest label, checked against the
    logits (-1: not checked)."""
    was_training = model.training
    model.eval()
    try:
        # Input gradients need autograd even under torch.no_grad() / torch.inference_mode()
        # (evaluation code often runs so); inference tensors cannot join a graph: copy them.
        with torch.inference_mode(False), torch.enable_grad():
            if x.is_inference():
                x = x.clone()
            if labels.is_inference():
                labels = labels.clone()
            xg = x.detach().requires_grad_(True)
            fn = _grad_sum_loop if batch == "loop" else _grad_sum_vmap
            total, impl = fn(model, names, masters, xg, labels, delta, q, seed, offset, top)
    finally:
        model.train(was_training)
    backend.record("noise.grad_mean", impl)
    return total / q


def _ce_sum(logits: torch.Tensor, labels: torch.Tensor, top: int = -1) -> torch.Tensor:
    import torch.nn.functional as F

    if top >= logits.shape[-1]:
        raise ValueError(f"labels: expected class indices < {logits.shape[-1]} (the model's "
                         f"outputs), got {top}")
    return F.cross_entropy(logits.float(), labels, reduction="sum")  # fp32 loss for half models


def _grad_sum_loop(model, names, masters, xg, labels, delta, q, seed, offset, top=-1):
    from torch.func import functional_call

    noisy = Perturber(masters, op="noise.perturb")  # one scratch copy, reused by every copy
    weights = dict(zip(names, noisy.out))
    total = None
    for c in range(q):
        noisy.draw(delta, seed, offset + c)
        value = _ce_sum(functional_call(model, weights, (xg,)), labels, top)
        (g,) = torch.autograd.grad(value, xg)
        total = g if total is None else total.add_(g)
    return total, noisy.impl


def _grad_sum_vmap(model, names, masters, xg, labels, delta, q, seed, offset, top=-1):
    from torch.func import functional_call, vmap

    stacked = [torch.empty((q, *p.shape), dtype=p.dtype, device=p.device) for p in masters]
    impl = None
    for c in range(q):  # copy c of every parameter is a contiguous slice: fill it in place
        noisy = Perturber(masters, [s[c] for s in stacked], op="noise.perturb")
        noisy.draw(delta, seed, offset + c)
        impl = noisy.impl

    def forward(weights):
        return functional_call(model, dict(zip(names, weights)), (xg,))

    logits = vmap(forward)(stacked)  # (q, batch, classes)
    value = _ce_sum(logits.flatten(0, 1), labels.repeat(q), top)
    (total,) = torch.autograd.grad(value, xg)  # the sum over copies comes with the chain rule
    return total, impl


# ----------------------------------------------------------------------------- torch.library op

@torch.library.custom_op("fastfp::noise_perturb", mutates_args=())
def _perturb_op(params: list[torch.Tensor], delta: float, seed: int, offset: int) -> list[torch.Tensor]:
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
