"""Fingerprint generation across torchrun processes: one shard per batch of examples.

Every example's trajectory depends only on its start, its target and the shared noise streams
(stream ``step * q + copy``), and batches are fixed slices of ``batch_size`` examples, so the
merged fingerprint equals a single-process :func:`generate` with the same ``batch_size``, bit for
bit. Each batch is one :func:`fastfp.cexamples.generate` call on its slice of the start images and
targets. Rank 0 merges; a rerun skips finished batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import distributed as dd
from ..fingerprint import Fingerprint
from .api import StepBar, finish_meta, generate, prepare
from .checks import check_model_name

DEFAULT_BATCH = 64  # fixed, not memory-sized: the shard layout must not depend on the machine


def generate_sharded(model: torch.nn.Module, num: int, input_shape: Sequence[int],
                     num_classes: int, *, shard_dir: str | Path, ctx: dd.Context | None = None,
                     method: str = "ltrc", k: int | None = None, delta: float | None = None,
                     q: int = 10, alpha: float | None = None, steps: int = 500,
                     eta: float = 1e-6, seed: int = 0, batch_size: int | None = None,
                     progress: bool = True, device: object = None, precision: str = "fp32",
                     labels: torch.Tensor | None = None,  # [num] int64 target labels
                     graphs: bool | None = None,
                     x0: torch.Tensor | None = None,  # [num, C, H, W] start images
                     normalize: object = None, quantize: int | None = None,
                     model_name: str | None = None) -> Fingerprint | None:
    """:func:`fastfp.cexamples.generate` over the ranks of ``ctx`` (the same arguments); the
    Fingerprint on rank 0, ``None`` elsewhere."""
    check_model_name(model_name)
    ctx = ctx or dd.Context()
    batch_size = DEFAULT_BATCH if batch_size is None else batch_size
    per_batch: dict[str, Any] = dict(
        method=method, k=k, delta=delta, q=q, alpha=alpha, steps=steps, eta=eta, seed=seed,
        device=device, precision=precision, normalize=normalize, quantize=quantize)
    run = prepare(model, num, input_shape, num_classes, batch_size=batch_size,
                  progress=progress, graphs=graphs, labels=labels, x0=x0, **per_batch)
    s, start, targets, norm = run.settings, run.x0, run.targets, run.normalize
    n_items = (start.shape[0] + batch_size - 1) // batch_size
    key = dict(vars(s), normalize=norm, num=start.shape[0], input_shape=list(start.shape[1:]),
               num_classes=num_classes,
               batch_size=batch_size, model=model_name or type(model).__name__,
               targets=targets.tolist())
    shards = dd.ShardStore(shard_dir, {"job": "cexamples", **key}, n_items, ctx).open()
    # One bar over this rank's example-steps (finished shards count as done), as generate's.
    mine = dd.my_items(n_items, ctx)
    size = [min(batch_size, start.shape[0] - i * batch_size) for i in range(n_items)]
    bar = StepBar(sum(size[i] for i in mine), s.steps, f"{s.method} (checkpointed)",
                  enabled=progress and ctx.is_main,
                  done=sum(size[i] for i in mine if shards.done(i)))

    def work(item: int):
        sl = slice(item * batch_size, (item + 1) * batch_size)
        fp = generate(model, int(targets[sl].shape[0]), tuple(start.shape[1:]), num_classes,
                      **per_batch, x0=start[sl], labels=targets[sl], batch_size=batch_size,
                      progress=bar, graphs=graphs)
        used = torch.tensor(fp.meta["steps_used"], dtype=torch.int64)
        loss = torch.tensor(fp.meta["final_loss"], dtype=torch.float64)
        return ({"x": fp.inputs, "steps_used": used, "final_loss": loss},
                {"engine": fp.meta["engine"]})

    try:
        dd.run_sharded(shards, work, progress=False)
    finally:
        bar.close()
    if not ctx.is_main:
        return None
    tensors, metas = dd.merge(shards)
    x = torch.cat([t["x"] for t in tensors])
    used = torch.cat([t["steps_used"] for t in tensors])
    loss = torch.cat([t["final_loss"] for t in tensors])
    engines = sorted({m["engine"] for m in metas})
    meta = finish_meta(s, model, start.shape[1:], num_classes, model_name, used, loss,
                       "+".join(engines), normalize=norm,
                       given_start=x0 is not None)
    return Fingerprint(x, targets, meta)
