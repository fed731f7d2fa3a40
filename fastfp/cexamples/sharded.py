"""Fingerprint generation across torchrun processes: one shard per batch of examples.

Every example's trajectory depends only on its start, its target and the shared noise streams
(stream ``step * q + copy``), and batches are fixed slices of ``batch_size`` examples, so the
merged fingerprint equals a single-process :func:`generate` with the same ``batch_size``, bit for
bit. Rank 0 merges; a rerun skips finished batches.
"""

from __future__ import annotations

import torch

from .. import distributed as dd
from . import check_model_name, finish_meta, optimize, prepare

DEFAULT_BATCH = 64  # fixed, not memory-sized: the shard layout must not depend on the machine


def generate_sharded(model, num, input_shape, num_classes, *, shard_dir, ctx: dd.Context | None = None,
                     batch_size=None, progress=True, model_name=None, graphs=None, **settings):
    """:func:`fastfp.cexamples.generate` over the ranks of ``ctx``; the Fingerprint on rank 0,
    ``None`` elsewhere. ``settings``: method, k, delta, q, alpha, steps, eta, seed, precision,
    labels, device (as for ``generate``)."""
    from ..fingerprint import Fingerprint

    check_model_name(model_name)
    ctx = ctx or dd.Context()
    batch_size = DEFAULT_BATCH if batch_size is None else batch_size
    s, x0, targets, dev, per_example = prepare(model, num, input_shape, num_classes,
                                               batch_size=batch_size, progress=progress,
                                               graphs=graphs, **settings)
    n_items = (x0.shape[0] + batch_size - 1) // batch_size
    key = dict(vars(s), num=x0.shape[0], input_shape=list(x0.shape[1:]), num_classes=num_classes,
               batch_size=batch_size, model=model_name or type(model).__name__,
               targets=targets.tolist())
    shards = dd.ShardStore(shard_dir, {"job": "cexamples", **key}, n_items, ctx).open()

    def work(item: int):
        sl = slice(item * batch_size, (item + 1) * batch_size)
        x, used, loss, impl = optimize(model, x0[sl], targets[sl], s, dev, batch_size=batch_size,
                                       graphs=graphs, per_example=per_example)
        return {"x": x, "steps_used": used, "final_loss": loss}, {"engine": impl}

    dd.run_sharded(shards, work, progress=progress, desc=f"{s.method} batches")
    if not ctx.is_main:
        return None
    tensors, metas = dd.merge(shards)
    x = torch.cat([t["x"] for t in tensors])
    used = torch.cat([t["steps_used"] for t in tensors])
    loss = torch.cat([t["final_loss"] for t in tensors])
    engines = sorted({m["engine"] for m in metas})
    meta = finish_meta(s, model, input_shape, num_classes, model_name, used, loss, "+".join(engines))
    return Fingerprint(x, targets, meta)
