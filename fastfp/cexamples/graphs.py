"""CUDA-graph path for small inputs: capture one whole step, replay it ``steps`` times.

On 32x32-class models a step is a few hundred tiny kernels, so launches, not arithmetic, set the
pace. Here one step (early-stop test, weight noise for the q copies, their forwards and input
gradients, the fused sign step) is captured once per batch size into a ``torch.cuda.CUDAGraph``
and replayed. Everything that changes from step to step lives on the device:

- the step counter ``t`` (a device int64): the weight noise of copy ``c`` is drawn from stream
  ``t * q + c`` *inside* the graph by :func:`fill_noise` (Philox4x32-10, bit-identical to
  :mod:`fastfp.noise`, reading ``t`` from device memory), so replays get fresh noise;
- ``active`` (bool per example): finished examples are frozen by a mask instead of leaving the
  batch; the host looks every ``CHECK_EVERY`` steps, stops when none is active, and compacts
  (re-captures at the smaller size) when at most half remain;
- ``steps_used`` / ``final_loss`` are written on the device when an example finishes.

The step inside the graph is ``fastfp.sign_step(..., k=0)`` followed by the band subtraction of
:func:`_subtract_band` with DCT rows made on the device before capture: ``fastfp.sign_step`` with
k > 0 copies its DCT rows from the host on every call, which a capture cannot contain.

The result equals the eager engine's (same noise, same per-example arithmetic). Capture can fail
(a model that syncs with the host, data-dependent shapes, mixed parameter dtypes ...): then
:func:`run_batch` returns ``None`` and the caller runs the eager engine; nothing is half-done.
On CPU this path is never taken.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import backend

CHECK_EVERY = 8          # replays between host checks of the active count
SMALL_INPUT = 64 * 64    # auto mode: graphs up to this many pixels per channel
MASK32 = 0xFFFFFFFF


def wanted(graphs, model, input_shape, device) -> bool:
    """Take the graph path? ``graphs``: None (auto: CUDA and small inputs), True, False."""
    if graphs is False:
        return False
    if device.type != "cuda":
        if graphs:
            raise ValueError(f"graphs: CUDA graphs need a model on a CUDA device, got {device}")
        return False
    if backend.forced() in ("reference", "torch") or isinstance(model, torch.jit.ScriptModule):
        return False
    if graphs:
        return True
    return int(input_shape[-1]) * int(input_shape[-2]) <= SMALL_INPUT


# ----------------------------------------------------------------------------- in-graph noise

def _torch_noise(n: int, step: torch.Tensor, q: int, copy: int, seed: int, delta: float,
                 blocks: torch.Tensor) -> torch.Tensor:
    """The same bits with torch integer ops (``fastfp.reference.noise``'s Philox), any device."""
    from ..reference import noise as ref

    offset = step * q + copy
    o0 = (offset & MASK32).expand_as(blocks)
    o1 = ((offset >> 32) & MASK32).expand_as(blocks)
    words = ref.philox4x32_10(blocks & MASK32, blocks >> 32, o0, o1, ref.split64(seed))
    u = torch.stack(words, dim=1).reshape(-1)[:n]
    v = (u >> 8).to(torch.float32) * (2.0 ** -24)
    return (v * 2.0 - 1.0) * torch.tensor(delta, dtype=torch.float32, device=u.device)


def fill_noise(master: torch.Tensor, out: torch.Tensor, step: torch.Tensor, q: int, copy: int,
               seed: int, delta: float, *, use_triton: bool | None = None,
               blocks: torch.Tensor | None = None) -> None:
    """``out = master + noise(seed, offset = step * q + copy)`` on flat float32 tensors.

    ``step`` is a one-element int64 tensor on the device (read inside the kernel, so a captured
    graph draws fresh noise on every replay). Bit-identical to ``fastfp.noise.perturb`` of the
    parameters laid end to end (``master`` is that concatenation).
    """
    n = master.numel()
    if use_triton is None:
        use_triton = backend.triton_usable(master.device)
    if use_triton:
        block = 256
        grid = (triton_cdiv(n, 4 * block),)
        from ._noise_kernel import noise_kernel as kernel

        if backend.triton_interpreted():
            kernel[grid](master, out, step, n, q, copy, seed, delta, BLOCK=block)
        else:
            kernel[grid](master, out, step, n, q, copy, seed, delta, BLOCK=block,
                         enable_fp_fusion=False)
        return
    if blocks is None:
        blocks = torch.arange((n + 3) // 4, dtype=torch.int64, device=master.device)
    # Two separate ops (no FMA): the contract's single float32 rounding of master + noise.
    torch.add(master, _torch_noise(n, step, q, copy, seed, delta, blocks), out=out)


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


# ----------------------------------------------------------------------------- one captured step

class _Step:
    """Static buffers and the captured graph of one step for a batch of ``B`` examples."""

    def __init__(self, model, x, y, s, names, master_flat, views_of):
        self.model, self.s = model, s
        dev = x.device
        self.x = x.clone()
        self.y = y.clone()
        self.active = torch.ones(x.shape[0], dtype=torch.bool, device=dev)
        self.step = torch.zeros(1, dtype=torch.int64, device=dev)
        self.steps_used = torch.full((x.shape[0],), s.steps, dtype=torch.int64, device=dev)
        self.final_loss = torch.zeros(x.shape[0], dtype=torch.float32, device=dev)
        self.names, self.master = names, master_flat
        self.scratch = torch.empty_like(master_flat) if s.noisy else None
        self.weights = dict(zip(names, views_of(self.scratch))) if s.noisy else None
        self.use_triton = backend.triton_usable(dev)
        self.blocks = torch.arange((master_flat.numel() + 3) // 4, dtype=torch.int64, device=dev)
        self.band = _band(x.shape[-2], x.shape[-1], s.k, dev) if s.k > 0 else None
        self.graph = None

    def run(self) -> None:
        """One step: replay the graph (or run the body eagerly when nothing was captured)."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self.body()

    def _autocast(self):
        kind = self.x.device.type
        if self.s.precision == "bf16":  # no weight-cast cache: it would outlive the capture
            return torch.autocast(kind, dtype=torch.bfloat16, cache_enabled=False)
        return torch.autocast(kind, enabled=False)  # fp32 even inside a caller's autocast

    def _logits(self, x, weights=None):
        from torch.func import functional_call

        out = self.model(x) if weights is None else functional_call(self.model, weights, (x,))
        return out.float()

    def body(self) -> None:
        from .. import ops

        s, x, y = self.s, self.x, self.y
        with self._autocast():
            if s.noisy:
                if s.eta > 0:
                    with torch.no_grad():
                        self._finish(F.cross_entropy(self._logits(x), y, reduction="none"))
                grad = None
                for c in range(s.q):
                    with torch.no_grad():
                        fill_noise(self.master, self.scratch, self.step, s.q, c, s.seed, s.delta,
                                   use_triton=self.use_triton, blocks=self.blocks)
                    xg = x.detach().requires_grad_(True)
                    loss = F.cross_entropy(self._logits(xg, self.weights), y, reduction="sum")
                    (g,) = torch.autograd.grad(loss, xg)
                    grad = g if grad is None else grad + g
                grad = grad / s.q
            else:
                xg = x.detach().requires_grad_(True)
                loss = F.cross_entropy(self._logits(xg), y, reduction="none")
                (grad,) = torch.autograd.grad(loss.sum(), xg)
                if s.eta > 0:
                    self._finish(loss.detach())
        with torch.no_grad():
            new = ops.sign_step(x, grad.to(x.dtype), s.alpha, 0, s.lo, s.hi)
            if self.band is not None:
                new = _subtract_band(new, *self.band)
            keep = self.active.view(-1, *([1] * (x.dim() - 1)))
            x.copy_(torch.where(keep, new, x))
            self.step.add_(1)

    def _finish(self, loss) -> None:
        newly = self.active & (loss < self.s.eta)
        self.final_loss.copy_(torch.where(newly, loss, self.final_loss))
        self.steps_used.copy_(torch.where(newly, self.step.expand_as(self.steps_used),
                                          self.steps_used))
        self.active.logical_and_(~newly)

    def capture(self, start_step: int) -> None:
        state = [t.clone() for t in (self.x, self.active, self.steps_used, self.final_loss)]
        side = torch.cuda.Stream(self.x.device)
        side.wait_stream(torch.cuda.current_stream(self.x.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: lazy inits, autotuning, allocator
                self.body()
        torch.cuda.current_stream(self.x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.body()
        for t, saved in zip((self.x, self.active, self.steps_used, self.final_loss), state):
            t.copy_(saved)
        self.step.fill_(start_step)
        self.graph = graph


def _band(h: int, w: int, k: int, device):
    """Device constants of the high-pass (built before capture: the graph may not copy from
    the host): DCT rows 0..min(k, H-1) / 0..min(k, W-1) and the mask of the removed band."""
    from ..reference import dct

    rh, rw = min(k + 1, h), min(k + 1, w)
    dh = dct.dct_matrix(h)[:rh].to(device=device, dtype=torch.float32).contiguous()
    dw = dct.dct_matrix(w)[:rw].to(device=device, dtype=torch.float32).contiguous()
    i = torch.arange(rh).unsqueeze(1)
    j = torch.arange(rw).unsqueeze(0)
    mask = ((i + j >= 1) & (i + j <= k)).to(device=device, dtype=torch.float32)
    return dh, dw, mask


def _subtract_band(x, dh, dw, mask):
    """HighPass(x) = x - IDCT(band part of DCT(x)): only the removed (low) band is transformed,
    rh x rw coefficients per channel, so this is exactly IDCT(mask * DCT(x)) (eq. 4)."""
    coeffs = dh @ x @ dw.T
    return x - dh.T @ (coeffs * mask) @ dw


def _flat_parameters(model):
    """(names, float32 flat master copy, views_of(flat) -> per-parameter views) or None."""
    named = list(model.named_parameters())
    if not named or any(p.dtype != torch.float32 for _, p in named):
        return None
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    master = torch.cat([p.detach().reshape(-1) for _, p in named])

    def views_of(flat):
        out, at = [], 0
        for shape in shapes:
            n = int(torch.Size(shape).numel())
            out.append(flat[at:at + n].view(shape))
            at += n
        return out

    return names, master, views_of


def run_batch(model, x, y, settings, on_finish=None, *, capture=True):
    """Graph-replayed version of :func:`fastfp.cexamples.engine.run_batch`; ``None`` if capture
    is impossible for this model (the caller then runs the eager engine).

    ``capture=False`` runs the very same step body without a graph (any device): the tests use
    it to check this path's bookkeeping against the eager engine on CPU.
    """
    s = settings
    flat = _flat_parameters(model)
    if flat is None:
        return None
    names, master, views_of = flat
    num = x.shape[0]
    out = x.detach().clone()
    steps_used = torch.full((num,), s.steps, dtype=torch.int64)
    final_loss = torch.zeros(num, dtype=torch.float64)
    idx = torch.arange(num, device=x.device)   # rows of ``out`` held by the current step

    def prepare(xs, ys, start):
        step = _Step(model, xs, ys, s, names, master, views_of)
        step.step.fill_(start)
        if capture:
            step.capture(start)
        return step

    try:
        cur = prepare(x, y, 0)
    except Exception:
        return None
    t, reported, compact = 0, 0, True
    while t < s.steps:
        n = min(CHECK_EVERY, s.steps - t)
        for _ in range(n):
            cur.run()
        t += n
        if s.eta <= 0:
            continue
        n_active = int(cur.active.sum())
        done = int(idx.numel()) - n_active
        if on_finish and done > reported:
            on_finish(done - reported)
            reported = done
        if n_active == 0:
            break
        if compact and n_active <= cur.x.shape[0] // 2 and t < s.steps:
            # Compact: hand every row back, continue with the survivors in a smaller graph.
            _collect(cur, idx, out, steps_used, final_loss)
            keep = cur.active
            try:
                smaller = prepare(cur.x[keep], cur.y[keep], t)
            except Exception:
                # Keep replaying the graph we have (finished rows stay frozen in it): starting
                # the batch over eagerly would redo the work and count finished examples twice.
                compact = False
                continue
            cur, idx, reported = smaller, idx[keep], 0
    # Out of steps (or all done): the survivors' clean loss, as the eager engine reports it.
    survivors = cur.active.clone()
    if bool(survivors.any()):
        from .engine import clean_loss, model_dtype

        loss = clean_loss(model, cur.x[survivors], cur.y[survivors], s, model_dtype(model))
        cur.final_loss[survivors] = loss.float()
    _collect(cur, idx, out, steps_used, final_loss)
    if on_finish:
        on_finish(int(idx.numel()) - reported)
    return out, steps_used, final_loss


def _collect(cur, idx, out, steps_used, final_loss) -> None:
    """Copy the current step's rows back (survivors' entries are overwritten later)."""
    rows = idx.cpu()
    out[idx] = cur.x
    finished = (~cur.active).cpu()
    steps_used[rows[finished]] = cur.steps_used.cpu()[finished]
    final_loss[rows] = cur.final_loss.double().cpu()
