"""Sharded runs with 2 Gloo processes equal single-process runs, resume, and refuse mixed runs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastfp import distributed as dd

WORKER = str(Path(__file__).with_name("_dist_worker.py"))


def _run(folder, *extra, nproc=1, timeout=120):
    if nproc == 1:
        cmd = [sys.executable, WORKER, str(folder), *extra]
        env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--standalone", WORKER, str(folder), *extra]
        env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow  # torchrun processes
def test_two_processes_equal_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _run(one)
    assert r1.returncode == 0, r1.stderr
    r2 = _run(two, nproc=2)
    assert r2.returncode == 0, r2.stderr
    assert "rank 1 computed [1, 3, 5]" in r2.stdout and "rank 0 computed [0, 2, 4, 6]" in r2.stdout
    a, b = torch.load(one / "result.pt"), torch.load(two / "result.pt")
    assert a.shape == (7, 3, 3) and torch.equal(a, b)


@pytest.mark.slow  # torchrun processes
def test_resume_after_killed_worker(tmp_path):
    r = _run(tmp_path, "--crash-item", "3", nproc=2)
    assert r.returncode != 0
    assert not (tmp_path / "result.pt").exists()
    assert not (tmp_path / "shard-000003.safetensors").exists()
    assert (tmp_path / "shard-000000.safetensors").exists()  # finished work survived
    r = _run(tmp_path, nproc=2)
    assert r.returncode == 0, r.stderr
    # only the unfinished shards were recomputed
    # the ranks share stdout, so their lines may interleave: find the lists anywhere
    recomputed = sum(len(json.loads(m)) for m in re.findall(r"computed (\[[^\]]*\])", r.stdout))
    assert 1 <= recomputed < 7
    fresh = tmp_path.parent / "fresh"
    assert _run(fresh).returncode == 0
    assert torch.equal(torch.load(tmp_path / "result.pt"), torch.load(fresh / "result.pt"))


@pytest.mark.slow  # torchrun processes
def test_ranks_disagreeing_on_settings(tmp_path):
    r = _run(tmp_path, "--rank-dependent-settings", nproc=2)
    assert r.returncode != 0
    assert "ranks disagree on the configuration" in r.stderr


@pytest.mark.slow  # torchrun processes
def test_resume_with_other_settings_or_world_size(tmp_path):
    assert _run(tmp_path, "--items", "4").returncode == 0
    r = _run(tmp_path, "--items", "4", "--seed", "9")
    assert r.returncode != 0 and "different configuration" in r.stderr
    r = _run(tmp_path, "--items", "4", nproc=2)
    assert r.returncode != 0 and "world size" in r.stderr


def test_merge_names_missing_and_foreign_shards(tmp_path):
    ctx = dd.Context()
    shards = dd.ShardStore(tmp_path, {"a": 1}, 3, ctx).open()
    shards.save(0, {"y": torch.ones(2)})
    shards.save(2, {"y": torch.ones(2)})
    with pytest.raises(FileNotFoundError, match="shard-000001"):
        dd.merge(shards)
    other = dd.ShardStore(tmp_path / "other", {"a": 2}, 3, ctx).open()
    other.save(1, {"y": torch.zeros(2)})
    os.replace(other.shard_path(1), shards.shard_path(1))
    with pytest.raises(ValueError, match="different configuration"):
        dd.merge(shards)


def test_truncated_shard_is_reported(tmp_path):
    shards = dd.ShardStore(tmp_path, {"a": 1}, 1, dd.Context()).open()
    shards.save(0, {"y": torch.arange(100.0)})
    data = shards.shard_path(0).read_bytes()
    shards.shard_path(0).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="unreadable"):
        dd.merge(shards)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_items: "):
        dd.ShardStore("x", {}, 0, dd.Context())
    assert dd.my_items(7, dd.Context(1, 3)) == [1, 4]


def test_shards_are_checksummed_and_reproducible(tmp_path):
    shards = dd.ShardStore(tmp_path, {"a": 1}, 2, dd.Context()).open()
    shards.save(0, {"y": torch.arange(6.0), "i": torch.arange(3)}, {"steps": [1, 2]})
    shards.save(1, {"y": torch.arange(6.0), "i": torch.arange(3)}, {"steps": [1, 2]})
    again = dd.ShardStore(tmp_path / "again", {"a": 1}, 2, dd.Context()).open()
    again.save(0, {"i": torch.arange(3), "y": torch.arange(6.0)}, {"steps": [1, 2]})
    assert again.shard_path(0).read_bytes() == shards.shard_path(0).read_bytes()
    tensors, meta = shards.load(0)
    assert torch.equal(tensors["y"], torch.arange(6.0)) and meta == {"steps": [1, 2]}
    # a flipped byte in the data, and a changed digit in the meta: the layout stays valid
    data = shards.shard_path(1).read_bytes()
    shards.shard_path(1).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ValueError, match="checksum mismatch"):
        shards.load(1)
    at = data.index(b"[1, 2]") + 1
    shards.shard_path(1).write_bytes(data[:at] + b"7" + data[at + 1:])
    with pytest.raises(ValueError, match="checksum mismatch"):
        dd.merge(shards)


def test_tiled_rajski_lives_in_fbi_and_equals_the_untiled_one():
    from fastfp import fbi

    sym = torch.randint(0, 3, (7, 40), generator=torch.Generator().manual_seed(0))
    tiled = fbi.pairwise_rajski_tiled(sym, tile_rows=3)  # one process: every tile here
    torch.testing.assert_close(tiled, torch.as_tensor(fbi.pairwise_rajski(sym)))
    with pytest.warns(DeprecationWarning, match="fastfp.fbi.pairwise_rajski_tiled"):
        alias = dd.pairwise_rajski_tiled
    assert alias is fbi.pairwise_rajski_tiled
