"""Strong scaling of the torchrun-sharded jobs: wall time for 1, 2, ... processes, one PNG.

    python bench/scaling_distributed.py --procs 1 2 --out bench-results/distributed

Runs ``fastfp fbi build`` (a database of random-init CNNs on random 1x32x32 inputs) and
``fastfp generate`` (ltrc fingerprints of one CNN) under ``torchrun --standalone`` with each
process count, checks that every run gives the same bytes as the 1-process run, and writes
``scaling.json`` and ``scaling.png`` (speed-up against the number of processes, ideal line).
On CPU each process gets ``cores / procs`` threads, so the curve shows what sharding buys on
the same cores; on a GPU machine each process takes one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _models(folder: Path, n: int) -> Path:
    import torch
    from torch import nn

    entries = []
    for i in range(n):
        torch.manual_seed(i)
        m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(32 * 8 * 8, 10))
        torch.save(m, folder / f"m{i}.pt")
        entries.append({"name": f"m{i}", "family": f"f{i % 4}", "path": f"m{i}.pt"})
    (folder / "models.json").write_text(json.dumps({"models": entries}))
    x = torch.rand(2048, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, folder / "x.pt")
    return folder / "models.json"


def _run(procs: int, args: list[str]) -> float:
    threads = max(1, (os.cpu_count() or 1) // procs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           str(procs), "-m", "fastfp", *args]
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} with {procs} processes failed:\n"
                           f"{r.stderr[-2000:]}")
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--models", type=int, default=16, help="models in the database (default 16)")
    p.add_argument("--examples", type=int, default=32, help="fingerprint examples (default 32)")
    p.add_argument("--steps", type=int, default=40, help="ltrc steps (default 40)")
    p.add_argument("--out", default="bench-results/distributed")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fastfp-scaling-"))
    try:
        spec = _models(work, a.models)
        rows = []
        for procs in a.procs:
            db = work / f"db{procs}.safetensors"
            fp = work / f"fp{procs}.safetensors"
            t_db = _run(procs, ["fbi", "build", "--spec", str(spec), "--inputs", str(work / "x.pt"),
                                "--k", "3", "--batch-size", "128", "--out", str(db)])
            t_fp = _run(procs, ["generate", str(work / "m0.pt"), "--input-shape", "1,32,32",
                                "--method", "ltrc", "--num-examples", str(a.examples), "--steps",
                                str(a.steps), "--eta", "0", "--q", "4", "--batch-size", "4",
                                "--no-progress", "--out", str(fp)])
            same = (db.read_bytes() == (work / "db1.safetensors").read_bytes()
                    and _fp_equal(fp, work / "fp1.safetensors")) if procs != a.procs[0] else True
            rows.append({"procs": procs, "fbi_build_s": t_db, "generate_s": t_fp,
                         "identical": same})
            print(f"{procs} process(es): fbi build {t_db:.1f} s, generate {t_fp:.1f} s, "
                  f"identical to the first run: {same}")
        report = {"cpu_count": os.cpu_count(), "models": a.models, "inputs": 2048,
                  "examples": a.examples, "steps": a.steps, "rows": rows,
                  "note": "wall time including process start-up and the rank-0 merge"}
        from fastfp.io import write_json

        write_json(out / "scaling.json", report)
        _plot(rows, out / "scaling.png")
        print(f"-> {out / 'scaling.json'}, {out / 'scaling.png'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _fp_equal(a: Path, b: Path) -> bool:
    import torch

    from fastfp import Fingerprint

    fa, fb = Fingerprint.load(a), Fingerprint.load(b)
    return torch.equal(fa.inputs, fb.inputs) and fa.meta["steps_used"] == fb.meta["steps_used"]


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastfp.io import atomic_path

    procs = [r["procs"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("fbi_build_s", "fastfp fbi build"),
                       ("generate_s", "fastfp generate (ltrc)")):
        ax.plot(procs, [rows[0][key] / r[key] for r in rows], "o-", label=label)
    ax.plot(procs, [p / procs[0] for p in procs], "k--", lw=0.8, label="ideal")
    ax.set_xlabel("processes (torchrun)")
    ax.set_ylabel(f"speed-up over {procs[0]} process(es)")
    ax.set_xticks(procs)
    ax.set_title(f"sharded jobs, {os.cpu_count()} CPU cores")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
