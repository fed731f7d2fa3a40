"""The output database built across processes (torchrun): one shard per (model, input chunk).

Items are model-major (item = model * n_chunks + chunk) and handed out in contiguous blocks, so a
rank loads each of its models once. Chunks are whole multiples of ``batch_size`` and start where a
single-process build's batches start, so every model sees exactly the same batches and the merged
database equals :meth:`Database.build` bit for bit. Rank 0 merges and writes the database file;
a rerun skips finished shards.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastfp import _validate, io
from fastfp import distributed as dd

from .database import (
    Database,
    Device,
    Models,
    PathLike,
    check_new_models,
    inputs_digest,
    load_resumable,
    probe_classes,
    query_one,
    release,
    wants_inputs,
)
from .information import pairwise_rajski


def build_sharded(
    models: Models,
    inputs: torch.Tensor,
    *,
    k: int,
    families: Mapping[Any, Any],
    shard_dir: PathLike,
    labels: Any = None,
    batch_size: int = 256,
    chunk_batches: int = 8,
    device: Device = None,
    path: PathLike | None = None,
    ctx: dd.Context | None = None,
    progress: bool = True,
    store_inputs: bool | None = None,
) -> Database | None:
    """Like :meth:`Database.build`, sharded over the ranks of ``ctx``; returns the database on
    rank 0 (also saved to ``path`` when given) and ``None`` on the other ranks.

    An existing database at ``path`` is extended with the models it lacks, as
    :meth:`Database.build` does, or refused when its k, inputs, labels or classes differ (every
    rank checks the file before any query). Rank 0 holds :func:`fastfp.io.lock` on ``path``
    from its check to the save."""
    ctx = ctx or dd.Context()
    _validate.tensor("inputs", inputs, min_dim=1)
    k = _validate.integer("k", k, lo=1, hi=254)
    batch_size = _validate.integer("batch_size", batch_size, lo=1)
    chunk_batches = _validate.integer("chunk_batches", chunk_batches, lo=1)
    keep = wants_inputs(store_inputs, inputs)
    pairs = [(str(n), m) for n, m in (models.items() if hasattr(models, "items") else models)]
    if not pairs:
        raise ValueError("models: no model given")
    check_new_models(pairs, families, [])  # duplicate names would fail only at the merge
    gt = None if labels is None else np.asarray(labels).astype(np.int64).reshape(-1)
    if gt is not None and gt.shape[0] != inputs.shape[0]:
        raise ValueError(f"labels: has {gt.shape[0]} entries, expected N = {inputs.shape[0]}")
    if path is None:
        return _build(pairs, inputs, k, families, shard_dir, gt, batch_size, chunk_batches,
                      device, None, ctx, progress, keep)
    path = io.check_target(path)  # before any model is queried
    if not ctx.is_main:
        return _build(pairs, inputs, k, families, shard_dir, gt, batch_size, chunk_batches,
                      device, path, ctx, progress, keep)
    with io.lock(path, wait=None):
        return _build(pairs, inputs, k, families, shard_dir, gt, batch_size, chunk_batches,
                      device, path, ctx, progress, keep)


def _build(pairs, inputs, k, families, shard_dir, gt, batch_size, chunk_batches, device, path,
           ctx, progress, keep) -> Database | None:
    digest = inputs_digest(inputs)
    chunk = batch_size * chunk_batches
    n_chunks = (inputs.shape[0] + chunk - 1) // chunk
    old = None
    if path is not None and path.exists():
        old = load_resumable(path, pairs, families, k=k, digest=digest, labels=gt)
        new = [(n, m) for n, m in pairs if n not in old.names]
        if not new:  # nothing to query: every model is stored already
            if (Path(shard_dir) / dd.MANIFEST).exists():  # still refuse a mismatched resume
                dd.ShardStore(shard_dir, _settings(pairs, families, k, digest, chunk, gt,
                                                   batch_size), len(pairs) * n_chunks, ctx).open()
            if ctx.is_main and keep and old.inputs is None:
                old.with_inputs(inputs)
                old.save(path)
            return old if ctx.is_main else None
        pairs, gt = new, old.ground_truth  # the reference classes stay those of the stored file

    settings = _settings(pairs, families, k, digest, chunk, gt, batch_size)
    shards = dd.ShardStore(shard_dir, settings, len(pairs) * n_chunks, ctx).open()

    # rank 0 reads the class count now, while model 0 (its first item) is loaded anyway
    num_classes = probe_classes(pairs[0][1], inputs, None) if ctx.is_main else None
    if old is not None and num_classes is not None and num_classes != old.num_classes:
        raise ValueError(f"models: output {num_classes} classes, the database at {path} "
                         f"holds {old.num_classes}")
    # index of the model this rank holds; blocked items keep it for its chunks
    current: list[int | None] = [None]

    def work(item: int):
        m, c = divmod(item, n_chunks)
        name, model = pairs[m]
        if current[0] not in (None, m):
            release(pairs[current[0]][1])  # done with the previous model: free it
        current[0] = m
        x = inputs[c * chunk : (c + 1) * chunk]
        out = query_one(model, x, k, batch_size, device, False, name)
        return {"topk": torch.from_numpy(np.ascontiguousarray(out))}, {"model": name, "chunk": c}

    dd.run_sharded(shards, work, progress=progress, desc="fbi database shards", blocked=True)
    if not ctx.is_main:
        return None
    tensors, _ = dd.merge(shards)
    assert num_classes is not None  # rank 0 read it from model 0
    topk = np.stack(
        [
            np.concatenate([tensors[m * n_chunks + c]["topk"].numpy() for c in range(n_chunks)])
            for m in range(len(pairs))
        ]
    )
    db = old or Database.empty(
        inputs.shape[0], k=k, num_classes=num_classes, ground_truth=gt, digest=digest
    )
    for name, family, rows in zip(settings["names"], settings["families"], topk, strict=True):
        db.add(name, family, rows)
    if keep and db.inputs is None:
        db.with_inputs(inputs)
    if path is not None:
        db.save(path)
    return db


def _settings(pairs, families, k, digest, chunk, gt, batch_size) -> dict[str, Any]:
    """What a shard folder is computed with: a resume under other settings is refused."""
    return {
        "job": "fbi.database",
        "names": [n for n, _ in pairs],
        "families": [str(families[n]) for n, _ in pairs],
        "k": k,
        "inputs": digest,
        "batch_size": batch_size,
        "chunk": chunk,
        "labels": None if gt is None else inputs_digest(torch.from_numpy(gt)),
    }


def pairwise_rajski_tiled(A: torch.Tensor | np.ndarray, B: torch.Tensor | np.ndarray | None = None,
                          ctx: dd.Context | None = None,
                          tile_rows: int = 256) -> torch.Tensor | None:
    """All-pairs Rajski distances, each rank computing tiles of rows; the matrix lands on rank 0.

    Memory per rank is bounded by one (tile_rows x n) block plus the rank's finished tiles; other
    ranks return ``None``.
    """
    _validate.integer("tile_rows", tile_rows, lo=1)
    ctx = ctx or dd.Context()
    A = torch.as_tensor(A)
    B = A if B is None else torch.as_tensor(B)
    n_tiles = (A.shape[0] + tile_rows - 1) // tile_rows
    mine = {t: pairwise_rajski(A[t * tile_rows:(t + 1) * tile_rows], B)
            for t in dd.my_items(n_tiles, ctx)}
    if not ctx.distributed:
        if not n_tiles:
            return A.new_zeros((0, B.shape[0]))
        return torch.cat([mine[t] for t in range(n_tiles)])
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(mine, gathered, dst=0)
    if gathered is None:  # not rank 0
        return None
    tiles = {t: block for part in gathered for t, block in part.items()}
    return torch.cat([tiles[t] for t in range(n_tiles)])
