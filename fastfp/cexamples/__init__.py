"""Characteristic examples (Wang et al., IJCAI'21): ``generate`` fingerprints and ``verify`` a model.

Four methods: ``vanilla`` (C-examples, eq. 2), ``rc`` (fresh weight noise U(-delta, delta) each
step), ``rcgm`` (mean input gradient over q noisy copies per step) and ``ltrc`` (rcgm followed by a
DCT high-pass of band k after every step, eq. 3-4). The math is in :mod:`.engine`, the paper
defaults in :mod:`.defaults`, the CUDA-graph path for small inputs in :mod:`.graphs`, and the
literal one-example twin in :mod:`fastfp.reference.cexamples`.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from .. import _cpu_layers, _validate, backend
from . import defaults
from .engine import METHODS, PRECISIONS, Settings, start

__all__ = ["generate", "verify", "settings_for", "METHODS", "PRECISIONS", "defaults"]


# ----------------------------------------------------------------------------- validation

def _check_model(model) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module classifier, got {type(model).__name__}")
    return model


def _check_input_shape(input_shape) -> tuple[int, int, int]:
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"input_shape: expected a (C, H, W) tuple, got {type(input_shape).__name__}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape: expected 3 dims (C, H, W), got {len(input_shape)}: "
                         f"{tuple(input_shape)}")
    return tuple(_validate.integer(f"input_shape[{i}]", v, lo=1) for i, v in enumerate(input_shape))


def check_model_name(model_name) -> None:
    if model_name is not None and not isinstance(model_name, str):  # it goes into meta["model"]
        raise TypeError(f"model_name: expected a str or None, got {type(model_name).__name__}")


def model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _check_device(device, model) -> torch.device:
    mdev = model_device(model)
    if device is None:
        return mdev
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: not a torch device: {device!r}") from None
    if device.type != mdev.type or (device.index is not None and mdev.index is not None
                                    and device.index != mdev.index):
        raise ValueError(f"device: {device} given, but the model's parameters are on {mdev}; "
                         "move the model (model.to(device)) first")
    return mdev


def _check_noisy_model(model, s: Settings) -> None:
    """Weight noise needs float32 / bfloat16 / float16 parameters to perturb."""
    if not s.noisy:
        return
    params = list(model.parameters())
    if not params:
        raise ValueError(f"model: method {s.method!r} perturbs the weights, but the model has no "
                         "parameters (use method='vanilla' or delta=0)")
    bad = {str(p.dtype) for p in params if p.dtype not in (torch.float32, torch.bfloat16,
                                                              torch.float16)}
    if bad:
        raise TypeError(f"model: method {s.method!r} draws weight noise for float32, bfloat16 "
                        f"or float16 parameters, found {', '.join(sorted(bad))} (use "
                        "model.float(), or method='vanilla')")


def _check_labels(labels, num: int, num_classes: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected an int64 tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected integer class indices, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != num:
        raise ValueError(f"labels: expected shape ({num},), got {tuple(labels.shape)}")
    if num and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels: expected class indices in [0, {num_classes - 1}], got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return labels.detach().to("cpu", torch.int64)


def probe(model, x1: torch.Tensor, num_classes, device: torch.device) -> tuple[int, int]:
    """One forward on one example: checks the model is a classifier with ``num_classes`` logits.

    Returns (bytes of all leaf-module outputs for that example: the activation estimate that
    sizes batches, number of logits). ``num_classes=None`` skips the class-count check.
    """
    from .engine import model_dtype

    sizes = []

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    # TorchScript modules take no hooks: their activations are then guessed from the input.
    leaves = ([] if isinstance(model, torch.jit.ScriptModule)
              else [m for m in model.modules() if not list(m.children())])
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        mdtype = model_dtype(model)
        with torch.no_grad():
            out = model(x1.to(device, mdtype or torch.float32))
    except Exception as exc:
        raise ValueError(f"model: a forward pass on one input of shape {tuple(x1.shape)} failed "
                         f"({type(exc).__name__}: {exc}); check input_shape") from exc
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model: expected a classifier returning a logits tensor, got "
                        f"{type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != 1 or not out.is_floating_point():
        raise ValueError(f"model: expected 2-D float logits (batch, num_classes), got "
                         f"{out.dtype} of shape {tuple(out.shape)} for a batch of 1")
    if num_classes is not None and out.shape[1] != num_classes:
        raise ValueError(f"num_classes: {num_classes} given, but the model outputs "
                         f"{out.shape[1]} logits")
    guess = sum(sizes) if sizes else 16 * x1.numel() * x1.element_size()
    return int(guess) + x1.numel() * x1.element_size(), int(out.shape[1])


def settings_for(method, input_shape, *, k=None, delta=None, q=10, alpha=None, steps=500,
                 eta=1e-6, seed=0, precision="fp32") -> Settings:
    """Validate the generation settings and fill the paper defaults for ``None`` ones."""
    method = _validate.choice("method", method, METHODS)
    h, w = input_shape[-2:]
    steps = _validate.integer("steps", steps, lo=1)
    q = _validate.integer("q", q, lo=1)
    eta = _validate.real("eta", eta)
    seed = _validate.integer("seed", seed, lo=0, hi=2 ** 63 - 1)
    precision = _validate.choice("precision", precision, PRECISIONS)
    if k is not None:
        k = _validate.integer("k", k, lo=0, hi=max(h + w - 2, 0))
        if k > 0 and method != "ltrc":
            raise ValueError(f"k: only method 'ltrc' applies the high-pass, got k={k} with "
                             f"method {method!r}")
    if delta is not None:
        # The noise draws delta in float32 (fastfp.noise rejects more, but only once running).
        delta = _validate.real("delta", delta, lo=0.0, hi=float(torch.finfo(torch.float32).max))
        if delta > 0 and method == "vanilla":
            raise ValueError(f"delta: method 'vanilla' uses no weight noise, got delta={delta}")
    if alpha is not None:
        alpha = _validate.real("alpha", alpha, lo=0.0)
        if alpha == 0:
            raise ValueError("alpha: expected a positive step size, got 0")
    k = (defaults.k_for(input_shape) if k is None else k) if method == "ltrc" else 0
    delta = 0.0 if method == "vanilla" else (defaults.delta_for(input_shape) if delta is None
                                             else delta)
    q = q if method in ("rcgm", "ltrc") else 1
    alpha = defaults.alpha_for(steps) if alpha is None else alpha
    return Settings(method=method, k=k, delta=delta, q=q, alpha=alpha, steps=steps, eta=eta,
                    seed=seed, precision=precision)


# ----------------------------------------------------------------------------- batching

def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def auto_batch_size(per_example: int, num: int, device: torch.device) -> int:
    """Examples per batch: a quarter of free memory over ~4x the forward activations per example
    (forward + saved tensors + backward), capped (CPU gains nothing from huge batches)."""
    cap = 1024 if device.type == "cuda" else 256
    fit = (_free_bytes(device) // 4) // max(4 * per_example, 1)
    return int(max(1, min(num, cap, fit)))


SMALL_INPUT = 64 * 64  # pixels: up to here a GPU step is dominated by kernel launches


def batched_copies(per_example: int, batch: int, q: int, device: torch.device) -> int:
    """Noisy copies per vmap call: all q when their activations fit in an eighth of free memory."""
    fit = (_free_bytes(device) // 8) // max(4 * per_example * batch, 1)
    return int(max(1, min(q, fit)))


# ----------------------------------------------------------------------------- public API

def generate(model, num, input_shape, num_classes, method="ltrc", k=None, delta=None, q=10,
             alpha=None, steps=500, eta=1e-6, seed=0, batch_size=None, progress=True,
             device=None, precision="fp32", labels=None, graphs=None, model_name=None):
    """Generate ``num`` characteristic examples of ``model``; returns a :class:`fastfp.Fingerprint`.

    ``model``: any classifier ``nn.Module`` returning (batch, num_classes) logits for inputs of
    shape (batch, *input_shape) with values in [0, 1]; it is run in eval mode, its parameters are
    never modified and no ``.grad`` accumulates. ``input_shape``: (C, H, W), any H and W.
    ``method``: ``vanilla`` | ``rc`` | ``rcgm`` | ``ltrc``. ``None`` settings take the paper's
    defaults (:mod:`fastfp.cexamples.defaults`): ``k`` 2 at 32x32 / 20 at 224x224, ``delta`` 0.03
    / 0.001, ``alpha = 2.5 / steps``. ``q``: noisy copies per step (rcgm, ltrc). ``eta``: per-example
    early stop once the clean-model loss is below it. ``labels``: target labels (default: uniform
    from ``seed``). ``precision``: ``fp32`` or ``bf16`` (autocast). ``graphs``: CUDA-graph path for
    small inputs (``None``: automatic on CUDA, ``False``: never). ``device``: the model's device
    (checked, never changed).
    """
    from ..fingerprint import Fingerprint

    check_model_name(model_name)
    s, x0, targets, dev, per_example = prepare(
        model, num, input_shape, num_classes, method=method, k=k, delta=delta, q=q, alpha=alpha,
        steps=steps, eta=eta, seed=seed, batch_size=batch_size, progress=progress, device=device,
        precision=precision, labels=labels, graphs=graphs)
    x, steps_used, final_loss, impl = optimize(model, x0, targets, s, dev, batch_size=batch_size,
                                               progress=progress, graphs=graphs,
                                               per_example=per_example)
    return Fingerprint(x, targets, finish_meta(s, model, input_shape, num_classes, model_name,
                                               steps_used, final_loss, impl))


def prepare(model, num, input_shape, num_classes, *, method="ltrc", k=None, delta=None, q=10,
            alpha=None, steps=500, eta=1e-6, seed=0, batch_size=None, progress=True, device=None,
            precision="fp32", labels=None, graphs=None):
    """Validate everything (before any work) and draw the start: (settings, x0, targets, device,
    bytes of activations per example)."""
    model = _check_model(model)
    num = _validate.integer("num", num, lo=1)
    input_shape = _check_input_shape(input_shape)
    num_classes = _validate.integer("num_classes", num_classes, lo=2)
    s = settings_for(method, input_shape, k=k, delta=delta, q=q, alpha=alpha, steps=steps,
                     eta=eta, seed=seed, precision=precision)
    if batch_size is not None:
        batch_size = _validate.integer("batch_size", batch_size, lo=1)
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected a bool, got {type(progress).__name__}")
    if graphs is not None and not isinstance(graphs, bool):
        raise TypeError(f"graphs: expected None, True or False, got {type(graphs).__name__}")
    dev = _check_device(device, model)
    _check_noisy_model(model, s)
    x0, drawn = start(num, input_shape, num_classes, s.seed)
    targets = drawn if labels is None else _check_labels(labels, num, num_classes)
    per_example, _ = probe(model, x0[:1], num_classes, dev)
    return s, x0, targets, dev, per_example


def finish_meta(s: Settings, model, input_shape, num_classes, model_name, steps_used, final_loss,
                impl) -> dict:
    meta = describe(s, model, input_shape, num_classes, model_name=model_name)
    meta.update(steps_used=steps_used.tolist(), final_loss=[float(v) for v in final_loss],
                converged=int((final_loss < s.eta).sum()) if s.eta > 0 else 0, engine=impl)
    return meta


def describe(s: Settings, model, input_shape, num_classes, model_name=None) -> dict:
    import fastfp

    return {"method": s.method, "k": s.k, "delta": s.delta, "q": s.q, "alpha": s.alpha,
            "steps": s.steps, "eta": s.eta, "seed": s.seed, "precision": s.precision,
            "model": model_name or type(model).__name__, "input_shape": list(input_shape),
            "num_classes": num_classes, "fastfp_version": fastfp.__version__}


# Input gradients need autograd even when the caller runs under torch.no_grad() or
# torch.inference_mode() (evaluation and serving code often does).
@torch.inference_mode(False)
@torch.enable_grad()
def optimize(model, x0, labels, s: Settings, device, *, batch_size=None, progress=False,
             graphs=None, per_example=None):
    """Run the engine over all examples; returns (x CPU float32, steps_used, final_loss, impl).

    ``x0`` (num, C, H, W) and ``labels`` (num,) on CPU; ``FASTFP_BACKEND=reference`` runs the
    literal twin instead (one example at a time).
    """
    from tqdm.auto import tqdm

    from . import engine, graphs as graphs_mod

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
    bs = batch_size or auto_batch_size(per_example, num, device)
    if s.q > 1 and s.noisy and s.copies == 1 and device.type == "cuda" and \
            x0.shape[-1] * x0.shape[-2] <= SMALL_INPUT:
        # Small inputs on a GPU are launch-bound: evaluate the copies together. On CPU the
        # grouped kernels vmap produces are slower than one copy after the other (measured).
        s = dataclasses.replace(s, copies=batched_copies(per_example, bs, s.q, device))
    use_graphs = graphs_mod.wanted(graphs, model, x0.shape[1:], device)
    wdtype = engine.work_dtype(model)
    out = torch.empty_like(x0)
    steps_used = torch.empty(num, dtype=torch.int64)
    final_loss = torch.empty(num, dtype=torch.float64)
    impl = "cuda" if use_graphs else "torch"
    was_training = model.training
    model.eval()
    bar = tqdm(total=num, unit="ex", desc=f"{s.method} ({impl})", disable=not progress,
               dynamic_ncols=True)
    try:
        for b in range(0, num, bs):
            xb = x0[b:b + bs].to(device, wdtype)
            yb = labels[b:b + bs].to(device)
            result = None
            if use_graphs:
                result = graphs_mod.run_batch(model, xb, yb, s, on_finish=bar.update)
                if result is None:  # capture impossible for this model: eager from now on
                    use_graphs, impl = False, "torch"
            if result is None:
                with _cpu_layers.enabled(device, model):
                    result = engine.run_batch(model, xb, yb, s, on_finish=bar.update)
            xo, used, loss = result
            out[b:b + bs] = xo.to("cpu", torch.float32)
            steps_used[b:b + bs] = used
            final_loss[b:b + bs] = loss
    finally:
        bar.close()
        model.train(was_training)
    backend.record("cexamples.generate", impl)
    return out, steps_used, final_loss, impl


def verify(model, fp, batch_size: int = 256, device=None, precision: str = "fp32") -> float:
    """Fraction of ``fp.inputs`` that ``model`` classifies as ``fp.labels`` (0..1)."""
    from ..fingerprint import Fingerprint
    from .engine import model_dtype

    model = _check_model(model)
    if not isinstance(fp, Fingerprint):
        raise TypeError(f"fp: expected a fastfp.Fingerprint, got {type(fp).__name__}")
    batch_size = _validate.integer("batch_size", batch_size, lo=1)
    precision = _validate.choice("precision", precision, PRECISIONS)
    dev = _check_device(device, model)
    if len(fp) == 0:
        raise ValueError("fp: the fingerprint is empty")
    mdtype = model_dtype(model) or torch.float32
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for b in range(0, len(fp), batch_size):
                x = fp.inputs[b:b + batch_size].to(dev, mdtype)
                ctx = (torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
                       if precision == "bf16" else torch.autocast(dev.type, enabled=False))
                with ctx:
                    try:
                        out = model(x)
                    except torch.OutOfMemoryError:
                        raise
                    except Exception as exc:
                        # Typically a fingerprint made for another input shape: say which.
                        raise ValueError(f"fp: the model's forward pass failed on fingerprint "
                                         f"inputs of shape {tuple(x.shape[1:])} "
                                         f"({type(exc).__name__}: {exc})") from exc
                if not isinstance(out, torch.Tensor) or out.dim() != 2:
                    raise ValueError("model: expected 2-D logits (batch, num_classes), got "
                                     f"{getattr(out, 'shape', type(out).__name__)}")
                if int(fp.labels.max()) >= out.shape[1]:
                    raise ValueError(f"fp: labels go up to {int(fp.labels.max())}, but the model "
                                     f"outputs {out.shape[1]} classes")
                pred = out.argmax(dim=1).cpu()
                correct += int((pred == fp.labels[b:b + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(fp)
