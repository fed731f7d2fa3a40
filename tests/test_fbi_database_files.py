"""Database files without silent loss: locked builds, sharded extend/refuse, checked shards,
stored inputs, and the databases of fastfp 0.1.0 (refused, then converted)."""

import multiprocessing as mp

import numpy as np
import pytest
import torch
from helpers import rewrite_safetensors_metadata
from torch import nn

from fastfp import fbi, io


def _model(seed, classes=10):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, classes)).eval()


def _inputs():
    return torch.randn(37, 3, 2, 2, generator=torch.Generator().manual_seed(0))


def _zoo(lo, hi, classes=10):
    return {f"m{i}": _model(i, classes) for i in range(lo, hi)}, {f"m{i}": "F" for i in range(hi)}


def _build_in_child(path, lo, hi):
    models, families = _zoo(lo, hi)
    fbi.Database.build(models, _inputs(), k=2, families=families, path=path, progress=False,
                       checkpoint_s=0)


@pytest.mark.slow
def test_two_concurrent_builds_of_one_file_keep_all_models(tmp_path):
    path = tmp_path / "db.safetensors"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_build_in_child, args=(path, lo, lo + 6)) for lo in (0, 6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    db = fbi.Database.load(path)
    assert sorted(db.names) == sorted(f"m{i}" for i in range(12))


@pytest.mark.slow
def test_a_held_lock_fails_the_build_naming_the_holder_before_any_query(tmp_path):
    path = tmp_path / "db.safetensors"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(path, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        models, families = _zoo(0, 2)
        with pytest.raises(io.LockTimeout, match=f"pid {holder.pid}"):
            fbi.Database.build(models, _inputs(), k=2, families=families, path=path,
                               progress=False, lock_wait=0.1)
    finally:
        release.set()
        holder.join(30)
    assert not path.exists()


def _hold(path, ready, release):
    with io.lock(path):
        ready.set()
        release.wait(30)


def _sharded(models, families, shard_dir, path, **kw):
    return fbi.build_sharded(models, _inputs(), k=2, families=families, shard_dir=shard_dir,
                             path=path, batch_size=8, chunk_batches=1, progress=False, **kw)


def test_sharded_build_extends_an_existing_database_like_build(tmp_path):
    models, families = _zoo(0, 4)
    whole = fbi.Database.build(models, _inputs(), k=2, families=families, progress=False)
    path = tmp_path / "db.safetensors"
    first = dict(list(models.items())[:2])
    fbi.Database.build(first, _inputs(), k=2, families=families, path=path, progress=False)
    db = _sharded(models, families, tmp_path / "sh", path)
    assert db.names == whole.names
    np.testing.assert_array_equal(db.topk, whole.topk)
    np.testing.assert_array_equal(fbi.Database.load(path).topk, whole.topk)


@pytest.mark.parametrize("change", ["k", "inputs", "classes"])
def test_sharded_build_refuses_a_database_of_other_settings(tmp_path, change):
    models, families = _zoo(0, 2)
    path = tmp_path / "db.safetensors"
    fbi.Database.build(models, _inputs(), k=2, families=families, path=path, progress=False)
    before = path.read_bytes()
    new, fam = _zoo(2, 3, classes=7 if change == "classes" else 10)
    kw = {"k": 3} if change == "k" else {}
    x = _inputs() + 1 if change == "inputs" else _inputs()
    with pytest.raises(ValueError, match={"k": "built with k", "inputs": "differ from the inputs",
                                          "classes": "holds 10"}[change]):
        fbi.build_sharded(new, x, families={**families, **fam}, shard_dir=tmp_path / "sh",
                          path=path, progress=False, **{"k": 2, **kw})
    assert path.read_bytes() == before


def test_corrupted_shard_is_refused_naming_it_and_a_rerun_after_a_lost_shard_merges(tmp_path):
    models, families = _zoo(0, 3)
    whole = fbi.Database.build(models, _inputs(), k=2, families=families, progress=False)
    shard_dir, path = tmp_path / "sh", tmp_path / "db.safetensors"
    _sharded(models, families, shard_dir, None)
    shards = sorted(shard_dir.glob("shard-*.safetensors"))
    assert len(shards) == 3 * 5
    data = bytearray(shards[4].read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in the last output label
    shards[4].write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{shards[4].name}.*checksum"):
        _sharded(models, families, shard_dir, path)
    assert not path.exists()  # never merged
    shards[4].unlink()  # as a killed rank leaves it: the rerun computes the shard again
    shards[7].unlink()
    db = _sharded(models, families, shard_dir, path)
    np.testing.assert_array_equal(db.topk, whole.topk)


def test_inputs_round_trip_and_corruption_is_detected(tmp_path):
    models, families = _zoo(0, 2)
    x = _inputs()
    path = tmp_path / "db.safetensors"
    db = fbi.Database.build(models, x, k=2, families=families, path=path, progress=False)
    loaded = fbi.Database.load(path)
    assert loaded.inputs is not None and loaded.inputs.dtype == torch.float32
    assert torch.equal(loaded.inputs, x) and loaded.digest == db.digest
    extended = loaded.extend(_zoo(2, 3)[0], families=_zoo(0, 3)[1], progress=False)  # own inputs
    assert extended.inputs is not None and extended.names == ["m0", "m1", "m2"]
    data = bytearray(path.read_bytes())
    data[-200] ^= 0x01  # inside the float inputs (the largest elements are laid out first)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt FBI database"):
        fbi.Database.load(path)


def test_inputs_are_optional_and_attached_only_when_they_match(tmp_path):
    models, families = _zoo(0, 2)
    x = _inputs()
    path = tmp_path / "db.safetensors"
    db = fbi.Database.build(models, x, k=2, families=families, path=path, progress=False,
                            store_inputs=False)
    assert db.inputs is None and fbi.Database.load(path).inputs is None
    with pytest.raises(ValueError, match="differ from the inputs"):
        db.with_inputs(x + 1)
    with pytest.raises(ValueError, match="does not keep its inputs"):
        db.extend(_zoo(2, 3)[0], families=_zoo(0, 3)[1], progress=False)
    db.with_inputs(x).save(path)
    assert torch.equal(fbi.Database.load(path).inputs, x)
    with pytest.raises(TypeError, match="store_inputs"):
        fbi.Database.build(models, x, k=2, families=families, store_inputs="yes")
    big = torch.zeros(1, fbi.database.STORE_INPUTS_MAX_BYTES // 4 + 1)
    assert not fbi.database.wants_inputs(None, big)
    assert fbi.database.wants_inputs(None, x)


def test_a_finished_sharded_build_still_refuses_a_resume_under_other_settings(tmp_path):
    models, families = _zoo(0, 2)
    shard_dir, path = tmp_path / "sh", tmp_path / "db.safetensors"
    _sharded(models, families, shard_dir, path)
    before = path.read_bytes()
    assert _sharded(models, families, shard_dir, path).names == ["m0", "m1"]  # nothing to do
    with pytest.raises(ValueError, match="come from a different configuration"):
        fbi.build_sharded(models, _inputs(), k=2, families=families, shard_dir=shard_dir,
                          path=path, batch_size=4, chunk_batches=1, progress=False)
    assert path.read_bytes() == before


def _legacy_database(path, db, *, checksum=True):
    """``db`` as fastfp 0.1.0 wrote it: one ``fastfp`` JSON entry of format
    fastfp.fbi.database/1, and its own SHA-256 of the metadata and arrays."""
    import hashlib
    import json

    from safetensors.numpy import save

    tensors = {"topk": np.ascontiguousarray(db.topk)}
    if db.ground_truth is not None:
        tensors["ground_truth"] = np.ascontiguousarray(db.ground_truth)
    meta = {"format": "fastfp.fbi.database/1", "names": db.names, "families": db.families,
            "k": db.k, "num_classes": db.num_classes, "num_inputs": db.num_inputs,
            "digest": db.digest}
    if checksum:
        h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
        for key in sorted(tensors):
            h.update(f"{key}:{tensors[key].dtype.str}:{tensors[key].shape}".encode())
            h.update(tensors[key].tobytes())
        meta["sha256"] = h.hexdigest()
    path.write_bytes(save(tensors, metadata={"fastfp": json.dumps(meta)}))
    return path


def test_a_0_1_0_database_is_refused_then_converts_and_loads_the_same(tmp_path):
    models, families = _zoo(0, 3)
    db = fbi.Database.build(models, _inputs(), k=2, families=families, progress=False,
                            labels=np.arange(37) % 10, store_inputs=False)
    old = _legacy_database(tmp_path / "old.safetensors", db)
    with pytest.raises(io.LegacyFileError) as info:
        fbi.Database.load(old)
    assert str(info.value) == (f"{old}: written by fastfp 0.1.0 (format version 1); convert it "
                               f"with `fastfp convert {old}`")
    done = io.convert_legacy(old, tmp_path / "new.safetensors")
    assert done.checked and done.format == "fastfp.fbi.database"
    back = fbi.Database.load(done.out)
    assert back.names == db.names and back.families == db.families and back.k == db.k
    np.testing.assert_array_equal(back.topk, db.topk)
    np.testing.assert_array_equal(back.ground_truth, db.ground_truth)
    # a wrong old checksum (a label changed after it was written) is refused, nothing written
    data = bytearray(old.read_bytes())
    data[-1] = (data[-1] + 1) % 10
    old.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        io.convert_legacy(old, tmp_path / "other.safetensors")
    assert not (tmp_path / "other.safetensors").exists()


def test_a_database_whose_seal_is_removed_or_downgraded_is_refused(tmp_path):
    import json

    models, families = _zoo(0, 2)
    path = tmp_path / "db.safetensors"
    db = fbi.Database.build(models, _inputs(), k=2, families=families, path=path, progress=False)

    def rewrite(change):
        rewrite_safetensors_metadata(path, change)

    rewrite(lambda m: {k: v for k, v in m.items() if k != "sha256"})
    with pytest.raises(ValueError, match=f"{path}: FBI database without its checksum"):
        fbi.Database.load(path)
    db.save(path)
    # rewritten in the 0.1.0 layout without a valid old checksum: refused, and not converted
    rewrite(lambda m: {"fastfp": json.dumps({**json.loads(m["meta"]),
                                             "format": "fastfp.fbi.database/1",
                                             "sha256": m["sha256"]})})
    with pytest.raises(io.LegacyFileError):
        fbi.Database.load(path)
    with pytest.raises(ValueError, match="checksum mismatch"):
        io.convert_legacy(path, tmp_path / "out.safetensors")
