"""The mean over q noisy weight copies of d CE / dx (rc, rcgm, ltrc): the one implementation.

Copy ``c`` of a call draws the weight-noise stream ``offset + c`` of :mod:`fastfp.noise`, whatever
the strategy, so every strategy gives the same mean (up to summation order):

- ``loop``: one scratch copy of the weights (a :class:`fastfp.noise.Perturber`), the copies one
  after the other through ``torch.func.functional_call``: the least memory, and the fastest on CPU;
- ``vmap``: ``copies`` noisy copies stacked and run in one ``torch.func.vmap`` forward and one
  backward: one grouped kernel per layer instead of ``copies``, which pays where per-call
  overhead dominates (small inputs);
- ``in_place``: for TorchScript modules (``functional_call`` refuses them): each copy through
  :func:`fastfp.noise.perturbed`, which writes the noise into the parameters and restores them
  bit for bit.

The arguments of :func:`mean_grad` are the caller's to validate (:func:`grad_mean` is the
checked public entry; the cexamples engine checks once per run), and so is the model's eval mode.
Nothing here reads a device value on the host: ``offset`` may be a one-element int64 tensor on
x's device, which is what a captured CUDA graph needs (each replay draws the streams that tensor
then holds).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import _validate, backend, noise
from .._models import check_model, eval_mode

STRATEGIES = ("auto", "loop", "vmap", "in_place")
_NO_VMAP: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()  # models vmap could not trace


def mean_grad(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, delta: float, q: int,
              seed: int, offset: noise.Offset, *, strategy: str = "auto", copies: int = 1,
              max_label: int | None = None) -> torch.Tensor:
    """Mean over ``c < q`` of d CE(model_{theta + Delta(seed, offset + c)}(x), labels).sum() / dx.

    ``strategy``: ``"auto"`` = ``in_place`` for TorchScript, ``vmap`` when ``copies > 1`` (the
    loop from then on for a model vmap cannot trace), else ``loop``. ``copies``: noisy copies per
    vmap call. ``max_label``: the largest label, checked against the model's outputs (None: the
    caller did). Works under ``torch.no_grad()`` / ``torch.inference_mode()``. Shaped like ``x``.
    """
    with torch.inference_mode(False), torch.enable_grad():
        # input gradients need autograd; inference tensors cannot join a graph: copy them
        if x.is_inference():
            x = x.clone()
        if labels.is_inference():
            labels = labels.clone()
        xg = x.detach().requires_grad_(True)
        offsets = _offsets(offset, q)
        if strategy == "auto":
            # functional_call refuses TorchScript anywhere in the module tree (a normalising
            # wrapper around a scripted model included)
            if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
                strategy = "in_place"
            elif copies > 1 and q > 1 and model not in _NO_VMAP:
                try:
                    return _vmap(model, xg, labels, delta, q, seed, offsets, copies, max_label) / q
                except (RuntimeError, TypeError):  # data-dependent control flow, .item(), ...
                    _NO_VMAP.add(model)
                strategy = "loop"
            else:
                strategy = "loop"
        run: Callable[..., torch.Tensor] | None = _RUN.get(strategy)
        if run is None:
            raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
        return run(model, xg, labels, delta, q, seed, offsets, copies, max_label) / q


def _offsets(offset: noise.Offset, q: int) -> noise.Offset:
    """The offsets of the q copies: ``offset + c`` (a (q,) device tensor for a tensor offset)."""
    if isinstance(offset, torch.Tensor):
        return offset.reshape(1) + torch.arange(q, dtype=torch.int64, device=offset.device)
    return offset


def _copy(offsets: noise.Offset, c: int) -> noise.Offset:
    """The stream of copy ``c``: an int, or a one-element view (no kernel, no sync)."""
    return offsets[c:c + 1] if isinstance(offsets, torch.Tensor) else offsets + c


def _ce_sum(logits: torch.Tensor, labels: torch.Tensor, max_label: int | None) -> torch.Tensor:
    if max_label is not None and max_label >= logits.shape[-1]:
        raise ValueError(f"labels: expected class indices < {logits.shape[-1]} (the model's "
                         f"outputs), got {max_label}")
    return F.cross_entropy(logits.float(), labels, reduction="sum")  # fp32 loss for half models


def _loop(model, xg, labels, delta, q, seed, offsets, copies, max_label):
    from torch.func import functional_call

    named = list(model.named_parameters())
    noisy = noise.Perturber([p.detach() for _, p in named])  # one scratch copy, every copy
    weights = dict(zip((n for n, _ in named), noisy.out, strict=True))
    total = None
    for c in range(q):
        noisy.draw(delta, seed, _copy(offsets, c))
        (g,) = torch.autograd.grad(_ce_sum(functional_call(model, weights, (xg,)), labels,
                                           max_label), xg)
        total = g if total is None else total.add_(g)
    return total


def _vmap(model, xg, labels, delta, q, seed, offsets, copies, max_label):
    from torch.func import functional_call, vmap

    named = list(model.named_parameters())
    names, masters = [n for n, _ in named], [p.detach() for _, p in named]
    n = max(1, min(copies, q))
    stacked = [torch.empty((n, *p.shape), dtype=p.dtype, device=p.device) for p in masters]
    # slot c of every parameter is a contiguous slice of its stack: one Perturber per slot
    slots = [noise.Perturber(masters, [s[c] for s in stacked]) for c in range(n)]

    def forward(weights):
        return functional_call(model, dict(zip(names, weights, strict=True)), (xg,))

    total = None
    for first in range(0, q, n):
        m = min(n, q - first)
        for c in range(m):
            slots[c].draw(delta, seed, _copy(offsets, first + c))
        logits = vmap(forward)(stacked if m == n else [s[:m] for s in stacked])  # (m, B, classes)
        # the sum over copies comes with the chain rule
        (g,) = torch.autograd.grad(_ce_sum(logits.flatten(0, 1), labels.repeat(m), max_label), xg)
        total = g if total is None else total.add_(g)
    return total


def _in_place(model, xg, labels, delta, q, seed, offsets, copies, max_label):
    total = None
    for c in range(q):
        with noise.perturbed(model, delta, seed, _copy(offsets, c)):
            (g,) = torch.autograd.grad(_ce_sum(model(xg), labels, max_label), xg)
        total = g if total is None else total.add_(g)
    return total


_RUN = {"loop": _loop, "vmap": _vmap, "in_place": _in_place}


def grad_mean(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, delta: float, q: int,
              seed: int, offset: noise.Offset = 0, loss: str = "ce",
              batch: str = "loop") -> torch.Tensor:
    """Mean over copies ``c < q`` of d CE(model_{theta + Delta(seed, offset + c)}(x), labels) / dx.

    The loss is summed over the batch, so each example's gradient is its own. The model runs in
    eval mode (its mode is restored afterwards) and is never modified: no ``.grad`` is
    accumulated on its parameters (TorchScript modules get the noise in place and their weights
    back bit for bit).

    ``batch="loop"`` (default, measured faster on CPU) draws the copies one after the other
    into one scratch copy of the weights; ``batch="vmap"`` stacks the q noisy copies
    (q x the weights in memory) and runs them in one ``torch.func.vmap`` forward and one
    backward (same values up to summation order). ``offset``: an int or a one-element int64
    tensor on x's device. Returns a tensor shaped like ``x``. Works under ``torch.no_grad()`` and
    ``torch.inference_mode()`` too. The work is :func:`mean_grad`'s.
    """
    check_model(model)
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
    delta, seed = noise.check_stream(delta, seed)
    offset = noise.check_offset(offset, x.device, copies=q)
    _validate.choice("loss", loss, ("ce",))
    _validate.choice("batch", batch, ("loop", "vmap"))
    if not list(model.parameters()):
        raise ValueError("model: has no parameters to perturb")
    masters = noise.check_params("model.parameters()", list(model.parameters()))
    if masters[0].device != x.device:
        raise ValueError(f"x: on {x.device}, but the model's parameters are on {masters[0].device}")
    dtypes = {p.dtype for p in masters}
    if len(dtypes) == 1 and x.dtype not in dtypes:
        raise TypeError(f"x: {x.dtype} does not match the model's parameters ({masters[0].dtype})")
    # one sync: cross_entropy would silently skip a label of -100 (its ignore_index) and name
    # no argument for the others; the upper bound is checked against the first logits
    top = None
    if labels.numel():
        low, top = (int(v) for v in labels.aminmax())
        if low < 0:
            raise ValueError(f"labels: expected class indices >= 0, got {low}")
    with eval_mode(model):
        g = mean_grad(model, x, labels, delta, q, seed, offset,
                               strategy="vmap" if batch == "vmap" else "auto",
                               copies=q if batch == "vmap" else 1, max_label=top)
    backend.record("noise.grad_mean", noise.implementation(x.device))
    return g
