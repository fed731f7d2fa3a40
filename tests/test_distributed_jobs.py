"""`fastfp fbi build` and `fastfp generate` under torchrun (2 Gloo processes) equal a single
process."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from fastfp import fbi
from fastfp.cli.main import main

pytestmark = pytest.mark.slow  # torchrun processes


def _torchrun(*args, nproc=2, timeout=180):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           str(nproc), "-m", "fastfp", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def fbi_spec(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fbi_dist")
    entries = []
    for s in range(3):
        torch.manual_seed(s)
        m = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10))
        torch.save(m, tmp / f"m{s}.pt")
        entries.append({"name": f"m{s}", "family": f"f{s % 2}", "path": f"m{s}.pt"})
    (tmp / "models.json").write_text(json.dumps({"models": entries}))
    torch.save(torch.randn(150, 3, 2, 2, generator=torch.Generator().manual_seed(0)), tmp / "x.pt")
    return tmp


def _build_args(tmp, out, *extra):
    return ["fbi", "build", "--spec", str(tmp / "models.json"), "--inputs", str(tmp / "x.pt"),
            "--k", "3", "--batch-size", "8", "--trust-code", "--out", str(out), *extra]


def test_fbi_build_two_processes_equal_one(fbi_spec):
    tmp = fbi_spec
    assert main(_build_args(tmp, tmp / "single.safetensors")) == 0
    r = _torchrun(*_build_args(tmp, tmp / "dist.safetensors"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp / "dist.safetensors.shards" / "manifest.json").exists()
    a = fbi.Database.load(tmp / "single.safetensors")
    b = fbi.Database.load(tmp / "dist.safetensors")
    assert a.names == b.names and a.families == b.families
    assert (a.topk == b.topk).all() and a.num_classes == b.num_classes and a.digest == b.digest
    assert (tmp / "single.safetensors").read_bytes() == (tmp / "dist.safetensors").read_bytes()


def test_fbi_build_resume_checks_world_size(fbi_spec):
    tmp = fbi_spec
    out = tmp / "resume.safetensors"
    r = _torchrun(*_build_args(tmp, out))
    assert r.returncode == 0, r.stderr[-3000:]
    # a single-process resume of a 2-process run is refused, naming the world sizes
    assert main(_build_args(tmp, out, "--shard-dir", f"{out}.shards")) == 2
    # same world size: every shard is done, the merge alone runs and gives the same database
    before = out.read_bytes()
    out.unlink()
    r = _torchrun(*_build_args(tmp, out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.read_bytes() == before


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen_dist")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * 8 * 8, 10))
    torch.save(m, tmp / "model.pt")
    return tmp


def _gen_args(tmp, out, *extra):
    return ["generate", str(tmp / "model.pt"), "--input-shape", "1,8,8", "--method", "ltrc",
            "--num-examples", "10", "--steps", "15", "--q", "2", "--batch-size", "3",
            "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def test_generate_two_processes_equal_one(tiny_model_file):
    from fastfp import Fingerprint

    tmp = tiny_model_file
    assert main(_gen_args(tmp, tmp / "one.safetensors")) == 0
    r = _torchrun(*_gen_args(tmp, tmp / "two.safetensors", "--shard-dir", str(tmp / "two")))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = Fingerprint.load(tmp / "one.safetensors"), Fingerprint.load(tmp / "two.safetensors")
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert a.meta["steps_used"] == b.meta["steps_used"]
    assert a.meta["final_loss"] == b.meta["final_loss"]
    # 10 examples in batches of 3: 4 shards, split between the two ranks
    assert len(list((tmp / "two").glob("shard-*.safetensors"))) == 4  # kept: given by the user


def test_generate_resume_rejects_other_settings(tiny_model_file):
    tmp = tiny_model_file
    out = tmp / "three.safetensors"
    assert main(_gen_args(tmp, out, "--shard-dir", str(tmp / "sh"))) == 0
    assert main(_gen_args(tmp, out, "--shard-dir", str(tmp / "sh"), "--seed", "5")) == 2


def test_fbi_distances_tiled_across_processes(fbi_spec):
    tmp = fbi_spec
    db = tmp / "single.safetensors"
    if not db.exists():
        assert main(_build_args(tmp, db)) == 0
    one, two = tmp / "d1.json", tmp / "d2.json"
    assert main(["fbi", "distances", "--db", str(db), "--json", str(one)]) == 0
    r = _torchrun("fbi", "distances", "--db", str(db), "--tile-rows", "1", "--json", str(two))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert len(b["distances"]) == 3
    assert torch.allclose(torch.tensor(a["distances"]), torch.tensor(b["distances"]), atol=1e-6)
