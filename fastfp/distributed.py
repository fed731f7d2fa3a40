"""Sharded work across processes, GPUs and machines with ``torch.distributed`` (torchrun).

The unit of work is an *item* (a fingerprint batch, a model of the output database, a tile of
rows of a distance matrix). Items are assigned round-robin to ranks; each finished item is written
atomically as its own shard file, so a killed rank loses only the item it was working on and a
restart skips what is done. Rank 0 merges the shards in item order, so the result does not depend
on the number of processes: a single-process run and an N-process run give the same bytes.

A run folder holds ``manifest.json`` (a hash of the settings, the world size, the item count) and
``shard-NNNNNN.safetensors`` files. Resuming with other settings or another world size, a shard
written under other settings, or a missing shard at merge time are errors that name the culprit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import io

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(backend: str | None = None) -> Context:
    """Join the process group that torchrun describes in the environment (no-op when alone).

    NCCL when the process has a CUDA device, Gloo otherwise. Each rank uses cuda:LOCAL_RANK.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return Context(dist.get_rank(), dist.get_world_size())


def device_for(ctx: Context) -> torch.device:
    """The device this rank should compute on."""
    if torch.cuda.is_available():
        return torch.device("cuda",
                            int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def settings_hash(settings: dict) -> str:
    """A stable hash of JSON-able settings: two runs may share shards only if they agree on it."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_same_settings(ctx: Context, digest: str) -> None:
    """Every rank must be running the same configuration; say which ranks disagree."""
    if not ctx.distributed:
        return
    import torch.distributed as dist

    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, digest)
    odd = [r for r, d in enumerate(gathered) if d != gathered[0]]
    if odd:
        raise ValueError(
            f"settings: ranks disagree on the configuration (rank 0 has {gathered[0]}, ranks {odd} "
            f"have {[gathered[r] for r in odd]}); launch every rank with the same arguments")


def my_items(n_items: int, ctx: Context, blocked: bool = False) -> list[int]:
    """This rank's items: round-robin (item i -> rank i % world_size), or ``blocked`` contiguous
    runs (so that consecutive items, e.g. chunks of one model, stay on one rank, loaded once)."""
    if not blocked:
        return list(range(ctx.rank, n_items, ctx.world_size))
    lo = n_items * ctx.rank // ctx.world_size
    hi = n_items * (ctx.rank + 1) // ctx.world_size
    return list(range(lo, hi))


class ShardStore:
    """A run folder of per-item shards with a manifest guarding against mixing runs."""

    def __init__(self, folder: str | os.PathLike[str], settings: dict[str, Any], n_items: int,
                 ctx: Context) -> None:
        if n_items < 1:
            raise ValueError(f"n_items: expected at least 1 item, got {n_items}")
        self.folder = Path(folder)
        self.settings = settings
        self.digest = settings_hash(settings)
        self.n_items = n_items
        self.ctx = ctx

    # -- layout -------------------------------------------------------------------------------
    def shard_path(self, item: int) -> Path:
        """Where item ``item``'s shard lives."""
        return self.folder / f"shard-{item:06d}.safetensors"

    def open(self) -> ShardStore:
        """Create or validate the manifest (rank 0), then let every rank proceed."""
        check_same_settings(self.ctx, self.digest)
        if self.ctx.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            manifest = self.folder / MANIFEST
            wanted = {"settings_hash": self.digest, "world_size": self.ctx.world_size,
                      "n_items": self.n_items, "settings": self.settings}
            if manifest.exists():
                have = io.read_json(manifest, name=str(manifest), sealed=True)
                self._check_manifest(have, wanted)
            else:
                io.write_json(manifest, wanted, sealed=True)
        barrier(self.ctx)
        return self

    def _check_manifest(self, have: dict, wanted: dict) -> None:
        where = self.folder / MANIFEST
        if have.get("settings_hash") != wanted["settings_hash"]:
            raise ValueError(
                f"{where}: the shards in this folder come from a different configuration "
                f"(settings hash {have.get('settings_hash')}, this run {wanted['settings_hash']}); "
                "use a new folder or the original settings")
        if have.get("world_size") != wanted["world_size"]:
            raise ValueError(
                f"{where}: this run was started with world size {have.get('world_size')}, the "
                f"resume has {wanted['world_size']}; resume with the same number of processes")
        if have.get("n_items") != wanted["n_items"]:
            raise ValueError(f"{where}: {have.get('n_items')} items recorded, this run has "
                             f"{wanted['n_items']}")

    # -- shards -------------------------------------------------------------------------------
    def done(self, item: int) -> bool:
        return self.shard_path(item).exists()

    def save(self, item: int, tensors: dict[str, torch.Tensor],
             meta: dict[str, Any] | None = None) -> None:
        """Write item ``item``'s shard atomically: the sealed container of :mod:`fastfp.io`
        (one checksum over its tensors and meta)."""
        header = {"settings_hash": self.digest, "item": int(item),
                  "meta": json.loads(json.dumps(meta or {}, default=str))}  # as JSON reads it back
        io.write_bytes(self.shard_path(item), io.pack(tensors, header, format=io.SHARD))

    def load(self, item: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Item ``item``'s tensors and meta; a missing, foreign or corrupt shard is an error."""
        path = self.shard_path(item)
        if not path.exists():
            raise FileNotFoundError(f"shard {path.name}: missing in {self.folder} (item {item} of "
                                    f"{self.n_items}; was the rank computing it killed? "
                                    "run again to finish it)")
        data = io.read_bytes(path, name=f"shard {path.name}")
        try:
            tensors, header = io.unpack(data, format=io.SHARD, source=str(path))
        except io.LegacyFileError:
            raise
        except ValueError as exc:
            raise ValueError(f"{exc}; delete it and run again") from None
        if header.get("settings_hash") != self.digest or header.get("item") != item:
            raise ValueError(f"shard {path}: written by a different configuration or item "
                             f"(hash {header.get('settings_hash')}, item {header.get('item')}); "
                             "delete it and run again")
        meta = header.get("meta")
        return tensors, meta if isinstance(meta, dict) else {}

    def missing(self) -> list[int]:
        return [i for i in range(self.n_items) if not self.done(i)]


def run_sharded(shards: ShardStore, work: Callable[[int], tuple[dict, dict]],
                progress: bool = True, desc: str = "shards", blocked: bool = False) -> list[int]:
    """Compute this rank's unfinished items with ``work(item) -> (tensors, meta)``, each saved at
    once.

    Returns the items computed by this call (finished ones are skipped). Ends with a barrier so that
    rank 0 can merge afterwards.
    """
    todo = [i for i in my_items(shards.n_items, shards.ctx, blocked) if not shards.done(i)]
    bar = _progress(todo, progress and shards.ctx.is_main, desc)
    for item in bar:
        tensors, meta = work(item)
        shards.save(item, tensors, meta)
    barrier(shards.ctx)
    return todo


def merge(shards: ShardStore) -> tuple[list[dict[str, torch.Tensor]], list[dict]]:
    """All shards in item order (rank 0 calls this); any missing shard is an error naming it."""
    absent = shards.missing()
    if absent:
        names = ", ".join(shards.shard_path(i).name for i in absent[:5])
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise FileNotFoundError(f"shards missing in {shards.folder}: {names}{more}; the database/"
                                "fingerprint would be partial, so nothing was merged. Run again to "
                                "finish them")
    loaded = [shards.load(i) for i in range(shards.n_items)]
    return [t for t, _ in loaded], [m for _, m in loaded]


def _progress(items: Iterable[int], enabled: bool, desc: str) -> Iterable[int]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="shard")


def shutdown() -> None:
    """Leave the process group cleanly: wait for every rank (rank 0 may still be merging), then
    destroy it, so no rank exits while a collective is still in flight."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def __getattr__(name: str) -> Any:
    # ``pairwise_rajski_tiled`` (0.1.0) is FBI code and moved to :mod:`fastfp.fbi.sharded`; a
    # deprecated alias, looked up by name so that this layer imports nothing from the methods.
    if name == "pairwise_rajski_tiled":
        import importlib
        import warnings

        warnings.warn("fastfp.distributed.pairwise_rajski_tiled moved to "
                      "fastfp.fbi.pairwise_rajski_tiled", DeprecationWarning, stacklevel=2)
        return importlib.import_module("fastfp.fbi.sharded").pairwise_rajski_tiled
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
