"""A worker for tests/test_distributed.py, launched under torchrun (or alone)."""

import argparse
import os
import sys

import torch

from fastfp import distributed as dd


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--items", type=int, default=7)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--crash-item", type=int, default=-1)
    p.add_argument("--rank-dependent-settings", action="store_true")
    args = p.parse_args()

    ctx = dd.init("gloo")
    settings = {"seed": args.seed, "items": args.items}
    if args.rank_dependent_settings:
        settings["oops"] = ctx.rank
    shards = dd.ShardStore(args.folder, settings, args.items, ctx).open()

    def work(item):
        if item == args.crash_item:
            os._exit(17)  # a killed worker: no clean-up, no shard
        g = torch.Generator().manual_seed(args.seed * 1000 + item)
        x = torch.randn(3, 4, generator=g)
        return {"y": x @ x.T, "item": torch.tensor([item])}, {"rank": ctx.rank}

    computed = dd.run_sharded(shards, work, progress=False)
    print(f"rank {ctx.rank} computed {computed}", flush=True)
    if ctx.is_main:
        tensors, _ = dd.merge(shards)
        torch.save(torch.stack([t["y"] for t in tensors]), os.path.join(args.folder, "result.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
