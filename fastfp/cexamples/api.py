"""``generate`` fingerprints: validation, batching, then the engine.

``verify`` lives in :mod:`.verdict` with the null rate and the verdict; ``generate`` calls it (to
record a null rate), never the reverse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from .. import _validate, backend
from .._models import eval_mode

# The start of the paper's setting (uniform pixels and labels from the seed) is a definition, so
# it is written once, in the literal twin.
from ..reference.cexamples import start
from . import batching, checks, engine
from .settings import Settings, check_normalize, describe, settings_for
from .verdict import null_rate_of, verify  # noqa: F401  (verify: re-exported, its old home)


class StepBar:
    """A progress bar over example-steps with the finished examples beside it.

    An example that stops early counts all its steps, so the bar ends at num x steps, and it moves
    (its rate and ETA mean something) from the first step of the first batch. Called as
    ``bar(steps, finished)`` with the increments :func:`engine.run_batch` reports.
    """

    def __init__(self, num: int, steps: int, desc: str, *, enabled: bool = True,
                 done: int = 0):
        from tqdm.auto import tqdm

        self.num, self.finished = num, done
        self.bar = tqdm(total=num * steps, initial=done * steps, unit="step", desc=desc,
                        disable=not enabled, dynamic_ncols=True)

    def __call__(self, steps: int, finished: int) -> None:
        self.finished += finished
        self.bar.set_postfix_str(f"{self.finished}/{self.num} examples", refresh=False)
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()


def generate(model: torch.nn.Module, num: int, input_shape: Sequence[int], num_classes: int,
             method: str = "ltrc", k: int | None = None, delta: float | None = None, q: int = 10,
             alpha: float | None = None, steps: int = 500, eta: float = 1e-6, seed: int = 0,
             batch_size: int | None = None,
             progress: bool | Callable[[int, int], None] = True, device: object = None,
             precision: str = "fp32", labels: torch.Tensor | None = None,
             graphs: bool | None = None, model_name: str | None = None,
             x0: torch.Tensor | None = None, normalize: object = None,
             quantize: int | None = None,
             negatives: Sequence[torch.nn.Module] | None = None):
    """Generate ``num`` characteristic examples of ``model``; returns a :class:`fastfp.Fingerprint`.

    ``model``: any classifier ``nn.Module`` returning (batch, num_classes) logits for inputs of
    shape (batch, *input_shape) with values in [0, 1]; it is run in eval mode, its parameters are
    never modified and no ``.grad`` accumulates. ``input_shape``: (C, H, W), any H and W.
    ``method``: ``vanilla`` | ``rc`` | ``rcgm`` | ``ltrc``. ``None`` settings take the paper's
    defaults (:mod:`fastfp.cexamples.defaults`): ``k`` 2 at 32x32 / 20 at 224x224, ``delta`` 0.03
    / 0.001, ``alpha = 2.5 / steps`` (larger for bands wider than the paper's: see
    :func:`.defaults.alpha_for`). ``q``: noisy copies per step (rcgm, ltrc). ``eta``:
    per-example early stop once the clean-model loss is below it. ``x0``: start images
    (num, C, H, W) in [0, 1] (default: uniform noise from ``seed``); ``labels``: target labels
    (default: uniform from ``seed``). ``precision``: ``fp32`` or ``bf16`` (autocast).
    ``graphs=True``: capture the step in a CUDA graph and replay it (CUDA only, opt-in;
    ``None``/``False``: eager). ``device``: the model's device (checked, never changed).
    ``progress``: a bar over example-steps, or a callable ``(steps, finished)`` receiving the
    increments (:class:`StepBar` is the bar). ``normalize``: ``None``, ``"imagenet"`` or
    ``(mean, std)`` per channel: the model sees ``(x - mean) / std`` while the fingerprint stays
    in pixel space (``meta["normalize"]``, applied again by :func:`verify`). ``quantize``: ``8``
    or ``16`` stores (and tests against ``eta``) each example rounded to that many bits per
    pixel, so it is exactly a PNG-able image. ``negatives``: unrelated reference models; their
    match rate on the result is recorded as ``meta["null_rate"]`` (the null of
    :func:`fastfp.cexamples.verdict` when it is given no negatives).
    """
    from ..fingerprint import Fingerprint

    checks.check_model_name(model_name)
    run = prepare(
        model, num, input_shape, num_classes, method=method, k=k, delta=delta, q=q, alpha=alpha,
        steps=steps, eta=eta, seed=seed, batch_size=batch_size, progress=progress, device=device,
        precision=precision, labels=labels, graphs=graphs, x0=x0, normalize=normalize,
        quantize=quantize)
    net = checks.normalized(model, run.normalize)
    x, steps_used, final_loss, impl = optimize(net, run.x0, run.targets, run.settings, run.device,
                                               batch_size=batch_size, progress=progress,
                                               graphs=bool(graphs),
                                               per_example=run.activation_bytes)
    meta = finish_meta(run.settings, model, run.x0.shape[1:], num_classes, model_name,
                       steps_used, final_loss, impl, normalize=run.normalize,
                       given_start=x0 is not None)
    fp = Fingerprint(x, run.targets, meta)
    if negatives:
        fp.meta.update(null_rate=null_rate_of(fp, negatives), null_models=len(negatives))
    return fp


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` checked and drew, before any work."""

    settings: Settings
    x0: torch.Tensor             # [num, C, H, W] float32 start images in [lo, hi]
    targets: torch.Tensor        # [num] int64 target labels
    device: torch.device         # the model's device
    activation_bytes: int        # bytes of activations per example (sizes the batches)
    normalize: tuple | None      # (mean, std) per channel, or None


def prepare(model: torch.nn.Module, num: int, input_shape: Sequence[int], num_classes: int, *,
            method: str = "ltrc", k: int | None = None, delta: float | None = None, q: int = 10,
            alpha: float | None = None, steps: int = 500, eta: float = 1e-6, seed: int = 0,
            batch_size: int | None = None, progress: object = True, device: object = None,
            precision: str = "fp32", labels: torch.Tensor | None = None,
            graphs: bool | None = None, x0: torch.Tensor | None = None, normalize: object = None,
            quantize: int | None = None) -> Prepared:
    """Validate everything (before any work) and draw the start."""
    model = checks.check_model(model)
    num = _validate.integer("num", num, lo=1)
    shape = checks.check_input_shape(input_shape)
    num_classes = _validate.integer("num_classes", num_classes, lo=2)
    s = settings_for(method, shape, k=k, delta=delta, q=q, alpha=alpha, steps=steps, eta=eta,
                     seed=seed, precision=precision, quantize=quantize)
    norm = check_normalize(normalize, shape[0])
    if batch_size is not None:
        _validate.integer("batch_size", batch_size, lo=1)
    if not callable(progress):
        checks.check_flag("progress", progress)
    checks.check_flag("graphs", graphs, optional=True)
    dev = checks.check_device(device, model)
    if graphs and dev.type != "cuda":
        raise ValueError(f"graphs: CUDA graphs need a model on a CUDA device, got {dev}")
    checks.check_noisy_model(model, s)
    drawn_x, drawn_labels = start(num, shape, num_classes, s.seed)
    start_x = drawn_x if x0 is None else checks.check_images("x0", x0, num, shape, s.lo, s.hi)
    targets = drawn_labels if labels is None else checks.check_labels(labels, num, num_classes)
    per_example, _ = checks.probe(checks.normalized(model, norm), start_x[:1], num_classes, dev)
    return Prepared(s, start_x, targets, dev, per_example, norm)


def finish_meta(s: Settings, model: torch.nn.Module, input_shape: Sequence[int], num_classes: int,
                model_name: str | None, steps_used: torch.Tensor, final_loss: torch.Tensor,
                impl: str, *, normalize: tuple | None, given_start: bool) -> dict:
    """The metadata a fingerprint records: settings, model, shape and how each example ended."""
    import fastfp

    meta = describe(s)
    meta.update(normalize=None if normalize is None else [list(v) for v in normalize],
                start="given" if given_start else "uniform",
                model=model_name or type(model).__name__, input_shape=list(input_shape),
                num_classes=num_classes, fastfp_version=fastfp.__version__,
                steps_used=steps_used.tolist(), final_loss=[float(v) for v in final_loss],
                converged=int((final_loss < s.eta).sum()) if s.eta > 0 else 0, engine=impl)
    return meta


# Input gradients need autograd even when the caller runs under torch.no_grad() or
# torch.inference_mode() (evaluation and serving code often does).
@torch.inference_mode(False)
@torch.enable_grad()
def optimize(model: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor, s: Settings,
             device: torch.device, *, batch_size: int | None = None,
             progress: bool | Callable[[int, int], None] = False,
             graphs: bool = False, per_example: int | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Run the engine over all examples; returns (x CPU float32, steps_used, final_loss, impl).

    ``x0`` (num, C, H, W) and ``labels`` (num,) on CPU; ``FASTFP_BACKEND=reference`` runs the
    literal twin instead (one example at a time).
    """
    import dataclasses

    # Tensors made under inference mode can never enter autograd: work on ordinary copies.
    x0 = x0.clone() if x0.is_inference() else x0
    labels = labels.clone() if labels.is_inference() else labels
    num = x0.shape[0]
    if backend.forced() == "reference":
        from ..reference import cexamples as ref

        x, used, loss = ref.optimize(model, x0, labels, s)
        backend.record("cexamples.generate", "reference")
        return x, used, loss, "reference"
    if per_example is None:
        # No probe given (internal callers): assume activations ~16x the input, 4 bytes each.
        per_example = x0[0].numel() * 64
    bs = batch_size or batching.auto_batch_size(per_example, num, device)
    if s.noisy and s.copies == 1:
        s = dataclasses.replace(s, copies=batching.batched_copies(
            per_example, bs, s.q, device, x0.shape[-1] * x0.shape[-2]))
    wdtype = engine.work_dtype(model)
    out = torch.empty_like(x0)
    steps_used = torch.empty(num, dtype=torch.int64)
    final_loss = torch.empty(num, dtype=torch.float64)
    impl = "cuda-graph" if graphs else "torch"
    bar = progress if callable(progress) else StepBar(num, s.steps, f"{s.method} ({impl})",
                                                         enabled=bool(progress))
    try:
        with eval_mode(model):
            for b in range(0, num, bs):
                xb = x0[b:b + bs].to(device, wdtype)
                yb = labels[b:b + bs].to(device)
                xo, used, loss = engine.run_batch(model, xb, yb, s, on_progress=bar, graphs=graphs)
                out[b:b + bs] = xo.to("cpu", torch.float32)
                steps_used[b:b + bs] = used
                final_loss[b:b + bs] = loss
    finally:
        if isinstance(bar, StepBar):
            bar.close()
    if not bool(torch.isfinite(final_loss).all()):
        bad = torch.nonzero(~torch.isfinite(final_loss)).flatten()[:5].tolist()
        raise ValueError(f"model: its loss became NaN or inf during generation (examples {bad}); "
                         "check the model for overflow (e.g. half precision) or a smaller alpha")
    backend.record("cexamples.generate", impl)
    return out, steps_used, final_loss, impl
