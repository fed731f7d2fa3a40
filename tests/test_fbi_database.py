"""Output database: streaming build, compact storage, atomic save/load, resume, append."""

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from fastfp import fbi
from fastfp.reference import fbi as ref


def _model(seed, classes=10):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, classes)).eval()


class Counting(nn.Module):
    def __init__(self, inner, fail_after=None):
        super().__init__()
        self.inner, self.calls, self.fail_after = inner, 0, fail_after

    def forward(self, x):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        return self.inner(x)


@pytest.fixture
def inputs():
    return torch.randn(37, 3, 2, 2, generator=torch.Generator().manual_seed(0))


def test_build_stores_topk_and_majority_reference(inputs):
    models = {f"m{i}": _model(i) for i in range(5)}
    fams = {"m0": "A", "m1": "A", "m2": "B", "m3": "B", "m4": "C"}
    db = fbi.Database.build(models, inputs, k=3, families=fams, batch_size=8, progress=False)
    assert db.topk.dtype == np.uint8 and db.topk.shape == (5, 37, 3)
    for i, m in enumerate(models.values()):
        with torch.no_grad():
            assert np.array_equal(db.topk[i], m(inputs).topk(3, dim=1).indices.numpy())
    top1 = db.topk[:, :, 0].tolist()
    for x in range(37):
        votes = Counter(row[x] for row in top1)
        best = max(votes.values())
        assert db.reference[x] == min(c for c, v in votes.items() if v == best)
    assert db.family_names == ["A", "B", "C"] and db.members("B") == [2, 3]
    want = [ref.surjection(db.topk[m].tolist(), db.reference.tolist(), 2) for m in range(5)]
    assert db.symbols(2).tolist() == want


def test_save_load_roundtrip_and_ground_truth(tmp_path, inputs):
    labels = np.arange(37) % 10
    db = fbi.Database.build(
        {"a": _model(0), "b": _model(1)},
        inputs,
        k=2,
        families={"a": "F", "b": "G"},
        labels=labels,
        progress=False,
    )
    path = tmp_path / "db.safetensors"
    db.save(path)
    back = fbi.Database.load(path)
    assert (
        np.array_equal(back.topk, db.topk)
        and back.names == db.names
        and back.families == db.families
    )
    assert np.array_equal(back.reference, labels) and back.k == 2 and back.digest == db.digest
    assert not list(tmp_path.glob(".db.safetensors.*"))  # no temporary left behind


def test_resume_after_interruption_keeps_finished_models(tmp_path, inputs):
    path = tmp_path / "db.safetensors"
    fams = {f"m{i}": "F" if i < 2 else "G" for i in range(4)}
    flaky = Counting(_model(2), fail_after=1)
    models = {
        "m0": Counting(_model(0)),
        "m1": Counting(_model(1)),
        "m2": flaky,
        "m3": Counting(_model(3)),
    }
    with pytest.raises(KeyboardInterrupt):
        fbi.Database.build(
            models, inputs, k=2, families=fams, batch_size=16, path=path, progress=False
        )
    assert fbi.Database.load(path).names == ["m0", "m1"]  # finished models survived
    flaky.fail_after = None
    calls_before = models["m0"].calls
    db = fbi.Database.build(
        models, inputs, k=2, families=fams, batch_size=16, path=path, progress=False
    )
    assert (
        db.names == ["m0", "m1", "m2", "m3"] and models["m0"].calls == calls_before
    )  # not re-queried
    assert fbi.Database.load(path).names == db.names
    with pytest.raises(ValueError, match="built with k = 2"):
        fbi.Database.build(models, inputs, k=3, families=fams, path=path, progress=False)
    with pytest.raises(ValueError, match="inputs"):
        fbi.Database.build(models, inputs + 1, k=2, families=fams, path=path, progress=False)


def test_extend_and_lookup_errors(inputs):
    db = fbi.Database.build({"a": _model(0)}, inputs, k=2, families={"a": "F"}, progress=False)
    before = db.topk.copy()
    db.extend({"b": _model(1)}, inputs, families={"b": "G"}, progress=False)
    assert db.names == ["a", "b"] and np.array_equal(db.topk[0], before[0])
    with pytest.raises(ValueError, match="already"):
        db.extend({"b": _model(1)}, inputs, families={"b": "G"}, progress=False)
    with pytest.raises(ValueError, match="inputs"):
        db.extend({"c": _model(2)}, inputs * 2, families={"c": "G"}, progress=False)
    with pytest.raises(ValueError, match="not in the database"):
        db.outputs("zzz")  # never someone else's row
    with pytest.raises(ValueError, match="family"):
        db.members("nope")
    with pytest.raises(ValueError, match="k = 2"):
        db.add("c", "G", np.zeros((37, 1), int))
    with pytest.raises(ValueError, match="topk"):
        db.add("c", "G", np.zeros((36, 2), int))


def test_build_bad_input(tmp_path, inputs):
    with pytest.raises(ValueError, match="families"):
        fbi.Database.build({"a": _model(0)}, inputs, k=2, families={}, progress=False)
    with pytest.raises(TypeError, match="families"):
        fbi.Database.build({"a": _model(0)}, inputs, k=2, families=["F"], progress=False)
    with pytest.raises(ValueError, match="labels"):
        fbi.Database.build(
            {"a": _model(0)}, inputs, k=2, families={"a": "F"}, labels=np.zeros(3), progress=False
        )
    with pytest.raises(ValueError, match="exceeds the model's"):
        fbi.Database.build({"a": _model(0)}, inputs, k=11, families={"a": "F"}, progress=False)
    with pytest.raises(ValueError, match="models"):
        fbi.Database.build({}, inputs, k=2, families={}, progress=False)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a database")
    with pytest.raises(ValueError, match="database"):
        fbi.Database.load(bad)
    with pytest.raises(FileNotFoundError):
        fbi.Database.load(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="duplicate"):
        fbi.Database(np.zeros((2, 3, 1), int), ["a", "a"], ["F", "F"], k=1, num_classes=2)


def test_large_label_space_uses_int16():
    db = fbi.Database(np.full((1, 4, 2), 999), ["a"], ["F"], k=2, num_classes=1000)
    assert db.topk.dtype == np.int16


class Releasing(nn.Module):
    """A lazily loaded model: records when the builder is done with it."""

    def __init__(self, inner, log, name):
        super().__init__()
        self.inner, self.log, self.name = inner, log, name

    def forward(self, x):
        assert self.name not in self.log, "queried after it was released"
        return self.inner(x)

    def release(self):
        self.log.append(self.name)


@pytest.mark.parametrize("builder", ["build", "build_sharded"])
def test_builders_release_each_model_when_done(tmp_path, inputs, builder):
    log = []
    models = {f"m{i}": Releasing(_model(i), log, f"m{i}") for i in range(3)}
    families = {n: "f" for n in models}
    if builder == "build":
        db = fbi.Database.build(
            models, inputs, k=2, families=families, batch_size=8, progress=False
        )
        assert log == ["m0", "m1", "m2"]
    else:  # chunks of one model stay together; a model is freed when the next one starts
        db = fbi.build_sharded(
            models,
            inputs,
            k=2,
            families=families,
            batch_size=8,
            chunk_batches=2,
            shard_dir=tmp_path / "sh",
            progress=False,
        )
        assert log == ["m0", "m1"]
    assert db.names == ["m0", "m1", "m2"]


def test_checkpoint_interval_bounds_rewrites_and_the_end_is_always_saved(
    tmp_path, inputs, monkeypatch
):
    path = tmp_path / "db.safetensors"
    writes = []
    real_save = fbi.Database.save
    monkeypatch.setattr(
        fbi.Database, "save", lambda self, p: (writes.append(self.num_models), real_save(self, p))
    )
    models = {f"m{i}": _model(i) for i in range(6)}
    fams = {n: "F" for n in models}
    db = fbi.Database.build(
        models, inputs, k=2, families=fams, path=path, progress=False, checkpoint_s=1e9
    )
    assert writes == [6] and fbi.Database.load(path).names == db.names  # one write, at the end
    writes.clear()
    more = {f"n{i}": _model(10 + i) for i in range(3)}
    fbi.Database.build(
        {**models, **more},
        inputs,
        k=2,
        families={**fams, **{n: "G" for n in more}},
        path=path,
        progress=False,
        checkpoint_s=0,
    )
    assert writes == [7, 8, 9]  # resumed: only the new models, a write after each
    with pytest.raises(ValueError, match="checkpoint_s"):
        fbi.Database.build(models, inputs, k=2, families=fams, progress=False, checkpoint_s=-1)


def test_interruption_with_a_long_checkpoint_interval_still_saves_finished_models(tmp_path, inputs):
    path = tmp_path / "db.safetensors"
    models = {"m0": _model(0), "m1": _model(1), "m2": Counting(_model(2), fail_after=0)}
    with pytest.raises(KeyboardInterrupt):
        fbi.Database.build(
            models,
            inputs,
            k=2,
            families={n: "F" for n in models},
            path=path,
            progress=False,
            checkpoint_s=1e9,
        )
    assert fbi.Database.load(path).names == ["m0", "m1"]


def test_appending_many_models_keeps_rows_and_dtype(inputs):
    db = fbi.Database.empty(37, k=2, num_classes=10)
    rows = [np.random.default_rng(i).integers(0, 10, (37, 2)) for i in range(11)]
    for i, r in enumerate(rows):
        db.add(f"m{i}", "F", r)
    assert db.num_models == 11 and db.topk.shape == (11, 37, 2) and db.topk.dtype == np.uint8
    assert all(np.array_equal(db.outputs(f"m{i}"), r) for i, r in enumerate(rows))


def test_corrupt_file_is_rejected_not_loaded(tmp_path, inputs):
    db = fbi.Database.build(
        {"a": _model(0), "b": _model(1)},
        inputs,
        k=2,
        families={"a": "F", "b": "G"},
        labels=np.arange(37) % 10,
        progress=False,
    )
    path = tmp_path / "db.safetensors"
    db.save(path)
    raw = bytearray(path.read_bytes())
    stored = bytes(np.ascontiguousarray(db.topk).tobytes())
    at = raw.find(stored)
    assert at > 0
    flipped = bytearray(raw)
    flipped[at + 5] = (flipped[at + 5] + 1) % 10  # still a valid class: only a checksum can tell
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        fbi.Database.load(path)
    renamed = bytes(raw).replace(
        b'\\"a\\"', b'\\"z\\"', 1
    )  # a model renamed inside the JSON header
    assert renamed != bytes(raw)
    path.write_bytes(renamed)
    with pytest.raises(ValueError, match="checksum"):
        fbi.Database.load(path)
    fbi.Database.empty(37, k=2, num_classes=10).save(path)  # an empty database round-trips too
    assert fbi.Database.load(path).num_models == 0


def test_ground_truth_outside_the_classes_is_rejected(inputs):
    with pytest.raises(ValueError, match="ground_truth"):
        fbi.Database(
            np.zeros((1, 3, 1), int), ["a"], ["F"], k=1, num_classes=2, ground_truth=[0, 5, 1]
        )
    a = Counting(_model(0))
    with pytest.raises(ValueError, match="labels"):  # named as build's argument, before any query
        fbi.Database.build(
            {"a": a},
            inputs,
            k=2,
            families={"a": "F"},
            labels=np.arange(37),
            num_classes=10,
            progress=False,
        )
    assert a.calls == 0


def test_bad_model_lists_are_rejected_before_any_query(tmp_path, inputs):
    a, b = Counting(_model(0)), Counting(_model(1))
    with pytest.raises(ValueError, match="duplicate"):
        fbi.Database.build(
            [("a", a), ("b", b), ("a", a)],
            inputs,
            k=2,
            families={"a": "F", "b": "F"},
            path=tmp_path / "db.safetensors",
            progress=False,
        )
    assert a.calls == b.calls == 0 and not (tmp_path / "db.safetensors").exists()
    db = fbi.Database.build({"a": a}, inputs, k=2, families={"a": "F"}, progress=False)
    calls = a.calls
    for models in ([("b", b), ("a", a)], [("b", b), ("b", b)]):
        with pytest.raises(ValueError, match="models"):
            db.extend(models, inputs, families={"a": "F", "b": "F"}, progress=False)
    assert (
        db.names == ["a"] and b.calls == 0 and a.calls == calls
    )  # nothing appended, nothing queried


def test_resume_with_other_labels_is_an_error(tmp_path, inputs):
    path = tmp_path / "db.safetensors"
    labels = np.arange(37) % 10
    fbi.Database.build(
        {"a": _model(0)}, inputs, k=2, families={"a": "F"}, labels=labels, path=path, progress=False
    )
    with pytest.raises(ValueError, match="labels"):
        fbi.Database.build(
            {"b": _model(1)},
            inputs,
            k=2,
            families={"b": "F"},
            labels=(labels + 1) % 10,
            path=path,
            progress=False,
        )
    db = fbi.Database.build(
        {"b": _model(1)}, inputs, k=2, families={"b": "F"}, labels=labels, path=path, progress=False
    )
    assert db.names == ["a", "b"] and np.array_equal(db.reference, labels)


def test_build_gives_the_models_back_in_their_mode():
    model = _model(0).train()
    frozen = _model(1)  # eval
    inputs = torch.randn(9, 3, 2, 2)
    fbi.Database.build(
        {"a": model, "b": frozen},
        inputs,
        k=2,
        families={"a": "F", "b": "F"},
        progress=False,
        device="cpu",
    )
    assert model.training and not frozen.training
    assert next(model.parameters()).device.type == "cpu"


def test_sharded_build_rejects_duplicate_names_before_any_query(tmp_path, inputs):
    a = Counting(_model(0))
    with pytest.raises(ValueError, match="duplicate"):
        fbi.build_sharded(
            [("a", a), ("a", a)],
            inputs,
            k=2,
            families={"a": "F"},
            shard_dir=tmp_path / "sh",
            progress=False,
        )
    assert a.calls == 0


def test_float_outputs_are_not_truncated_into_labels():
    with pytest.raises(TypeError, match="topk"):
        fbi.Database(np.full((1, 3, 1), 1.7), ["a"], ["F"], k=1, num_classes=2)
    db = fbi.Database.empty(3, k=1, num_classes=2)
    with pytest.raises(TypeError, match="topk"):
        db.add("a", "F", np.full((3, 1), 0.9))
    assert db.num_models == 0


def test_resume_with_another_family_for_a_stored_model_is_an_error(tmp_path, inputs):
    path = tmp_path / "db.safetensors"
    models = {"a": _model(0), "b": _model(1)}
    fbi.Database.build(
        models, inputs, k=2, families={"a": "F", "b": "G"}, path=path, progress=False
    )
    with pytest.raises(ValueError, match="families: models \\['b'\\]"):
        fbi.Database.build(
            models, inputs, k=2, families={"a": "F", "b": "F"}, path=path, progress=False
        )
    assert fbi.Database.load(path).families == ["F", "G"]  # the file is untouched
