"""The engine: the one step of sign-gradient descent toward target labels, and the loop around it.

Every example follows the paper's iteration independently of its batch mates:

    for t in 0 .. steps-1:
        if CE(F_theta(x_t), l) < eta: stop            (eq. 1, on the clean model)
        g = grad_x CE(F_{theta + Delta}(x_t), l)       (vanilla: Delta = 0; rc: one draw;
                                                        rcgm/ltrc: mean over q draws)
        x_{t+1} = HighPass_k(Clip_[lo,hi](x_t - alpha sign(g)))    (k = 0 except for ltrc)

What is stored (and tested against eta) is ``stored(x_t)``: the iterate projected into [lo, hi]
(the high-pass leaves the box) and, with ``quantize``, rounded to its levels, so a fingerprint is
a valid image and what is saved is exactly what fitted. Without high-pass or quantisation that
is x_t itself.

The weight noise of step t, copy c is the stream ``offset = t * q + c`` of :mod:`fastfp.noise`, the
same for every example, so results do not depend on the batch size and the literal one-example twin
(:mod:`fastfp.reference.cexamples`) reproduces them. The loss is summed over the batch, so each
example's gradient is its own.

:func:`step` is written once and is capture-safe: the step index lives on the device (it reaches
the noise as a device scalar), finished examples are frozen by a device mask, and nothing inside
reads a value back to the host. :func:`run_batch` calls it eagerly, or (``graphs=True``, CUDA)
captures it once into a ``torch.cuda.CUDAGraph`` and replays it: same arithmetic, same results.
Between steps the host looks at the active count; finished examples leave the batch (compaction),
after every step when eager, every ``CHECK_EVERY`` steps and at most half left when replaying.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import ops
from . import gradmean
from .checks import model_dtype
from .settings import Settings

CHECK_EVERY = 8  # graph replays between host checks of the active count
log = logging.getLogger("fastfp")


def work_dtype(model: torch.nn.Module) -> torch.dtype:
    """float64 for a float64 model (exact comparisons in tests), float32 otherwise."""
    return torch.float64 if model_dtype(model) == torch.float64 else torch.float32


def autocast(settings: Settings, device: torch.device) -> torch.autocast:
    if settings.precision == "bf16":
        # no weight-cast cache: under capture it would outlive the graph
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    # fp32 means fp32 even inside a caller's autocast region (which would otherwise leak in).
    return torch.autocast(device_type=device.type, enabled=False)


def logits_of(model: torch.nn.Module, x: torch.Tensor, mdtype: torch.dtype | None) -> torch.Tensor:
    out = model(x if mdtype is None or x.dtype == mdtype else x.to(mdtype))
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


def clean_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings,
               mdtype: torch.dtype | None) -> torch.Tensor:
    """Per-example CE on the unperturbed model (the early-stop test of eq. 1)."""
    with torch.no_grad(), autocast(settings, x.device):
        return F.cross_entropy(logits_of(model, x, mdtype), y, reduction="none")


def vanilla_grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Settings,
                 mdtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-example clean loss, input gradient) from one forward + backward."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad(), autocast(settings, x.device):
        loss = F.cross_entropy(logits_of(model, xg, mdtype), y, reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), xg)
    return loss.detach(), g


def noisy_grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, offset: torch.Tensor,
               settings: Settings, mdtype: torch.dtype | None) -> torch.Tensor:
    """Mean input gradient over the q noisy copies drawn from streams offset .. offset + q - 1."""
    if mdtype in (torch.float16, torch.bfloat16):
        # Half-precision weights take half-precision inputs (the work dtype stays float32, as
        # logits_of does for the clean model); the caller casts the gradient back.
        x = x.to(mdtype)
    with autocast(settings, x.device):
        return gradmean.mean_grad(model, x, y, settings.delta, settings.q, settings.seed, offset,
                                  copies=settings.copies)


@dataclasses.dataclass
class Batch:
    """The device state of one batch; :func:`step` updates it in place."""

    x: torch.Tensor           # (B, C, H, W) current iterate, work dtype
    y: torch.Tensor           # (B,) int64 targets
    t: torch.Tensor           # (1,) int64: the step index (noise streams t * q + c)
    active: torch.Tensor      # (B,) bool: not yet below eta
    steps_used: torch.Tensor  # (B,) int64: the step at which an example stopped (steps if never)
    final_loss: torch.Tensor  # (B,) float64: its clean loss then

    @classmethod
    def start(cls, x: torch.Tensor, y: torch.Tensor, s: Settings, t: int = 0) -> Batch:
        n, dev = x.shape[0], x.device
        return cls(x.detach().clone(), y.clone(),
                   torch.full((1,), t, dtype=torch.int64, device=dev),
                   torch.ones(n, dtype=torch.bool, device=dev),
                   torch.full((n,), s.steps, dtype=torch.int64, device=dev),
                   torch.zeros(n, dtype=torch.float64, device=dev))

    def rows(self, keep: torch.Tensor) -> Batch:
        """A new batch of the rows ``keep`` selects, at the same step."""
        return Batch(self.x[keep], self.y[keep], self.t.clone(), self.active[keep],
                     self.steps_used[keep], self.final_loss[keep])

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.x, self.t, self.active, self.steps_used, self.final_loss)


def stored(x: torch.Tensor, s: Settings) -> torch.Tensor:
    """The example an iterate stands for: projected into [lo, hi], rounded to 2^quantize - 1
    levels (``round((x - lo) / (hi - lo) * L) / L``, what an 8-bit PNG holds for L = 255)."""
    if not s.projects:
        return x
    out = x.clamp(s.lo, s.hi)
    if s.quantize is not None:
        levels = float(2 ** s.quantize - 1)
        out = torch.round((out - s.lo) / (s.hi - s.lo) * levels) / levels * (s.hi - s.lo) + s.lo
    return out


def step(model: torch.nn.Module, b: Batch, s: Settings) -> None:
    """One iteration for every example of ``b``, in place; finished examples stay frozen.

    Capture-safe: no host synchronisation and no host-side value inside, so a CUDA graph of one
    call replays the iteration exactly (the step index ``b.t`` is read on the device).
    """
    mdtype = model_dtype(model)
    loss = None
    if s.noisy or s.projects:
        if s.eta > 0:  # eta <= 0: no loss can go below it; skip the test and its forward
            loss = clean_loss(model, stored(b.x, s), b.y, s, mdtype)
        grad = (noisy_grad(model, b.x, b.y, b.t * s.q, s, mdtype) if s.noisy
                else vanilla_grad(model, b.x, b.y, s, mdtype)[1])
    else:  # the gradient's forward gives the clean loss of x_t = stored(x_t)
        loss, grad = vanilla_grad(model, b.x, b.y, s, mdtype)
    with torch.no_grad():
        if s.eta > 0 and loss is not None:
            newly = b.active & (loss < s.eta)
            b.steps_used.copy_(torch.where(newly, b.t, b.steps_used))
            b.final_loss.copy_(torch.where(newly, loss.to(b.final_loss.dtype), b.final_loss))
            b.active.logical_and_(~newly)
        new = ops.sign_step(b.x, grad.to(b.x.dtype), s.alpha, s.k, s.lo, s.hi)
        b.x.copy_(torch.where(b.active.view(-1, *([1] * (b.x.dim() - 1))), new, b.x))
        b.t.add_(1)


class Replay:
    """:func:`step` captured once into a CUDA graph over the static buffers of one batch."""

    def __init__(self, model: torch.nn.Module, b: Batch, s: Settings):
        self.batch = b
        saved = [t.clone() for t in b.tensors()]
        dev = b.x.device
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: lazy inits, autotuning, the allocator
                step(model, b, s)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            step(model, b, s)
        for t, value in zip(b.tensors(), saved, strict=True):  # the warm-up steps did not happen
            t.copy_(value)

    def __call__(self) -> None:
        self.graph.replay()


def capture(model: torch.nn.Module, b: Batch, s: Settings) -> Replay:
    """A :class:`Replay` of ``b``, or a RuntimeError that says why the model cannot be captured."""
    try:
        return Replay(model, b, s)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as exc:  # host syncs, data-dependent shapes, CPU tensors in the model...
        raise RuntimeError(f"graphs: this model's step cannot be captured in a CUDA graph "
                           f"({exc}); run with graphs=False") from exc


def run_batch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, s: Settings, *,
              on_progress: Callable[[int, int], None] | None = None, graphs: bool = False,
              capture_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimise one batch; returns (x_final, steps_used, final_loss) (the last two on CPU).

    ``x`` (B, C, H, W) in the work dtype on the model's device, ``y`` (B,) int64 on the same
    device, the model in eval mode. ``on_progress(steps, finished)`` is called after each host
    check with the example-steps done and the examples finished since the last call (a finished
    example counts all ``s.steps``), so a progress bar moves from the first step and ends at
    ``B * s.steps``. ``graphs``: replay a captured step (CUDA); ``capture_graph=False`` runs the
    replay schedule (checks every ``CHECK_EVERY`` steps, compaction at half) eagerly, for tests.
    """
    n = x.shape[0]
    out = x.detach().clone()
    steps_used = torch.full((n,), s.steps, dtype=torch.int64)
    final_loss = torch.zeros(n, dtype=torch.float64)
    idx = torch.arange(n, device=x.device)  # rows of ``out`` held by the current batch
    b = Batch.start(x, y, s)
    every = CHECK_EVERY if graphs else 1

    def runner(batch: Batch) -> Callable[[], None]:
        if graphs and capture_graph:
            return capture(model, batch, s)
        return lambda: step(model, batch, s)

    def collect(batch: Batch, rows: torch.Tensor) -> None:
        cpu_rows = rows.cpu()
        out[rows] = stored(batch.x, s)
        steps_used[cpu_rows] = batch.steps_used.cpu()
        final_loss[cpu_rows] = batch.final_loss.cpu()

    credited = [0, 0]  # example-steps and finished examples reported so far

    def report(steps_done: int, finished: int) -> None:
        if on_progress and (steps_done, finished) != tuple(credited):
            on_progress(steps_done - credited[0], finished - credited[1])
            credited[:] = [steps_done, finished]

    run, t, compact = runner(b), 0, True
    while t < s.steps:
        for _ in range(min(every, s.steps - t)):
            run()
            t += 1
        if s.eta <= 0:  # nobody stops early: no need to look (no sync)
            report(n * t, 0)
            continue
        n_active = int(b.active.sum())
        report((n - n_active) * s.steps + n_active * t, n - n_active)
        if n_active == 0:
            break
        rows = b.x.shape[0]
        if compact and n_active < rows and (not graphs or n_active <= rows // 2) and t < s.steps:
            # Compaction: hand the finished rows back, continue with the survivors.
            collect(b, idx)
            keep = b.active
            smaller = b.rows(keep)
            try:
                run = runner(smaller)
            except RuntimeError as exc:
                # Keep replaying the graph at hand (finished rows stay frozen in it): starting
                # over would redo the work and report finished examples twice.
                log.warning("fastfp: a smaller CUDA graph could not be captured (%s); the batch "
                            "continues at its current size", exc)
                compact = False
                continue
            b, idx = smaller, idx[keep]
    # Out of steps (or all done): the survivors' clean loss, as the paper's loop reports it.
    survivors = b.active
    if s.eta <= 0 or bool(survivors.any()):
        loss = clean_loss(model, stored(b.x, s), b.y, s, model_dtype(model)).to(torch.float64)
        b.final_loss.copy_(torch.where(survivors, loss, b.final_loss))
    collect(b, idx)
    report(n * s.steps, n)
    return out, steps_used, final_loss
