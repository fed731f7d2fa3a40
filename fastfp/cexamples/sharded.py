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

import torch

from .. import distributed as dd
from .api import StepBar, finish_meta, generate, prepare
from .checks import check_model_name

DEFAULT_BATCH = 64  # fixed, not memory-sized: the shard layout must not depend on the machine


def generate_sharded(model: torch.nn.Module, num: int, input_shape: Sequence[int],
                     num_classes: int, *, shard_dir: str | Path, ctx: dd.Context | None = None,
                     batch_size: int | None = None, progress: bool = True,
                     model_name: str | None = None, graphs: bool | None = None, **settings):
    """:func:`fastfp.cexamples.generate` over the ranks of ``ctx``; the Fingerprint on rank 0,
    ``None`` elsewhere. ``settings``: method, k, delta, q, alpha, steps, eta, seed, precision,
    labels, x0, device (as for ``generate``)."""
    from ..fingerprint import Fingerprint

    check_model_name(model_name)
    ctx = ctx or dd.Context()
    batch_size = DEFAULT_BATCH if batch_size is None else batch_size
    s, x0, targets, _dev, _per_example, norm = prepare(model, num, input_shape, num_classes,
                                                       batch_size=batch_size, progress=progress,
                                                       graphs=graphs, **settings)
    per_batch = {k: v for k, v in settings.items() if k not in ("labels", "x0")}
    n_items = (x0.shape[0] + batch_size - 1) // batch_size
    key = dict(vars(s), normalize=norm, num=x0.shape[0], input_shape=list(x0.shape[1:]),
               num_classes=num_classes,
               batch_size=batch_size, model=model_name or type(model).__name__,
               targets=targets.tolist())
    shards = dd.ShardStore(shard_dir, {"job": "cexamples", **key}, n_items, ctx).open()
    # One bar over this rank's example-steps (finished shards count as done), as generate's.
    mine = dd.my_items(n_items, ctx)
    size = [min(batch_size, x0.shape[0] - i * batch_size) for i in range(n_items)]
    bar = StepBar(sum(size[i] for i in mine), s.steps, f"{s.method} (checkpointed)",
                  enabled=progress and ctx.is_main,
                  done=sum(size[i] for i in mine if shards.done(i)))

    def work(item: int):
        sl = slice(item * batch_size, (item + 1) * batch_size)
        fp = generate(model, int(targets[sl].shape[0]), tuple(x0.shape[1:]), num_classes,
                      **per_batch, x0=x0[sl], labels=targets[sl], batch_size=batch_size,
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
    meta = finish_meta(s, model, x0.shape[1:], num_classes, model_name, used, loss,
                       "+".join(engines), normalize=norm,
                       given_start=settings.get("x0") is not None)
    return Fingerprint(x, targets, meta)
