"""The batched eager engine: sign-gradient descent toward target labels, with per-example early stop.

Every example follows the paper's iteration independently of its batch mates:

    for t in 0 .. steps-1:
        if CE(F_theta(x_t), l) < eta: stop            (eq. 1, on the clean model)
        g = grad_x CE(F_{theta + Delta}(x_t), l)       (vanilla: Delta = 0; rc: one draw;
                                                        rcgm/ltrc: mean over q draws)
        x_{t+1} = HighPass_k(Clip_[0,1](x_t - alpha sign(g)))     (k = 0 except for ltrc)

The weight noise of step t, copy c is the stream ``offset = t * q + c`` of :mod:`fastfp.noise`, the
same for every example, so results do not depend on the batch size and the literal one-example twin
(:mod:`fastfp.reference.cexamples`) reproduces them. The loss is summed over the batch, so each
example's gradient is its own. Finished examples leave the batch (compaction), so the work shrinks.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

METHODS = ("vanilla", "rc", "rcgm", "ltrc")
PRECISIONS = ("fp32", "bf16")


@dataclasses.dataclass(frozen=True)
class Settings:
    method: str
    k: int          # high-pass band (0 unless ltrc)
    delta: float    # weight-noise bound (0 for vanilla)
    q: int          # noisy copies per step (1 for vanilla and rc)
    alpha: float
    steps: int
    eta: float
    seed: int
    precision: str = "fp32"
    copies: int = 1  # noisy copies evaluated per batched (vmap) call; 1: one after the other
    lo: float = 0.0
    hi: float = 1.0

    @property
    def noisy(self) -> bool:
        return self.method != "vanilla" and self.delta > 0


def start(num: int, input_shape, num_classes: int, seed: int):
    """Uniform [0, 1) starting points and uniform target labels, reproducible from ``seed`` (CPU)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((num, *input_shape), generator=g, dtype=torch.float32)
    labels = torch.randint(0, num_classes, (num,), generator=g, dtype=torch.int64)
    return x0, labels


def work_dtype(model: torch.nn.Module) -> torch.dtype:
    """float64 for a float64 model (exact comparisons in tests), float32 otherwise."""
    for p in model.parameters():
        if p.is_floating_point():
            return torch.float64 if p.dtype == torch.float64 else torch.float32
    return torch.float32


def model_dtype(model: torch.nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def autocast(settings: Settings, device: torch.device):
    if settings.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    # fp32 means fp32 even inside a caller's autocast region (which would otherwise leak in).
    return torch.autocast(device_type=device.type, enabled=False)


def logits_of(model, x, mdtype):
    out = model(x if mdtype is None or x.dtype == mdtype else x.to(mdtype))
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


def clean_loss(model, x, y, settings, mdtype) -> torch.Tensor:
    """Per-example CE on the unperturbed model (the early-stop test of eq. 1)."""
    with torch.no_grad(), autocast(settings, x.device):
        return F.cross_entropy(logits_of(model, x, mdtype), y, reduction="none")


def vanilla_grad(model, x, y, settings, mdtype):
    """(per-example clean loss, input gradient) from one forward + backward."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad(), autocast(settings, x.device):
        loss = F.cross_entropy(logits_of(model, xg, mdtype), y, reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), xg)
    return loss.detach(), g


def noisy_grad(model, x, y, t, settings):
    """Mean input gradient over the q noisy copies of step t (streams t*q .. t*q+q-1)."""
    from . import _noise

    mdtype = model_dtype(model)
    if mdtype in (torch.float16, torch.bfloat16):
        # Half-precision weights take half-precision inputs (the work dtype stays float32, as
        # logits_of does for the clean model); the caller casts the gradient back.
        x = x.to(mdtype)
    with autocast(settings, x.device):
        return _noise.grad_mean(model, x, y, settings.delta, settings.q, settings.seed,
                                offset=t * settings.q, copies=settings.copies)


def step(model, x, y, t, settings: Settings, grad=None) -> torch.Tensor:
    """x_{t+1} from x_t: the (noisy, averaged) input gradient, then the fused sign step."""
    from .. import ops

    if grad is None:
        if settings.noisy:
            grad = noisy_grad(model, x, y, t, settings)
        else:
            grad = vanilla_grad(model, x, y, settings, model_dtype(model))[1]
    return ops.sign_step(x, grad.to(x.dtype), settings.alpha, settings.k, settings.lo,
                         settings.hi)


def run_batch(model, x, y, settings: Settings, *, on_finish=None):
    """Optimise one batch in place of a copy; returns (x_final, steps_used, final_loss).

    ``x`` (B, C, H, W) in the work dtype on the model's device, ``y`` (B,) int64 on the same device.
    ``on_finish(n)`` is called as examples finish (progress bars).
    """
    mdtype = model_dtype(model)
    out = x.detach().clone()
    steps_used = torch.full((x.shape[0],), settings.steps, dtype=torch.int64)
    final_loss = torch.zeros(x.shape[0], dtype=torch.float64)
    idx = torch.arange(x.shape[0], device=x.device)   # rows of ``out`` still active
    cur, cur_y = out, y
    for t in range(settings.steps):
        grad = None
        if not settings.noisy:
            loss, grad = vanilla_grad(model, cur, cur_y, settings, mdtype)
        elif settings.eta > 0:
            loss = clean_loss(model, cur, cur_y, settings, mdtype)
        # eta <= 0: no loss can go below it, so skip the test (and its extra forward).
        n_done = 0
        if settings.eta > 0:
            done = loss < settings.eta
            n_done = int(done.sum())
        if n_done:
            rows = idx[done]
            out[rows] = cur[done]
            steps_used[rows.cpu()] = t
            final_loss[rows.cpu()] = loss[done].double().cpu()
            keep = ~done
            idx, cur, cur_y = idx[keep], cur[keep], cur_y[keep]
            grad = grad[keep] if grad is not None else None
            if on_finish:
                on_finish(n_done)
            if idx.numel() == 0:
                return out, steps_used, final_loss
        cur = step(model, cur, cur_y, t, settings, grad=grad)
    # Ran out of steps: the survivors' final loss on the clean model.
    out[idx] = cur
    loss = clean_loss(model, cur, cur_y, settings, mdtype)
    final_loss[idx.cpu()] = loss.double().cpu()
    if on_finish:
        on_finish(int(idx.numel()))
    return out, steps_used, final_loss
