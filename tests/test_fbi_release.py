"""Released prediction folders (fastfp.fbi.release) and the paper's tables (fastfp.fbi.protocol)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from fastfp import fbi
from fastfp.fbi.protocol import accuracy_filter, format_tables, paper_tables
from fastfp.fbi.release import export_predictions, import_predictions


def _released_db() -> fbi.Database:
    """A small synthetic database renamed to the release layout (FAMILY, VARIANT-FAMILY-P)."""
    db = fbi.synthetic_database(n_families=4, family_size=4, num_inputs=120, k=1, seed=3)
    pairs = zip(db.names, db.families, strict=True)
    names = [n if n == f else f"prune-{f}-{n}" for n, f in pairs]
    return fbi.Database(db.topk, names, db.families, k=db.k, num_classes=db.num_classes,
                        ground_truth=db.ground_truth)


@pytest.fixture
def folder(tmp_path):
    db = _released_db()
    d = tmp_path / "release"
    export_predictions(db, d)
    np.save(d / "images_names.npy", np.array([f"img{i}.JPEG" for i in range(db.num_inputs)]))
    return d, db


def _cli(argv: list[str]) -> int:
    from fastfp.cli.main import main

    return main(argv)


def test_import_round_trip(folder):
    d, src = folder
    db, notes = import_predictions(d)
    order = [src.names.index(n) for n in db.names]
    assert sorted(db.names) == sorted(src.names)
    np.testing.assert_array_equal(db.topk, src.topk[order])
    assert db.families == [src.families[i] for i in order]
    np.testing.assert_array_equal(db.ground_truth, src.ground_truth)
    assert db.num_classes == int(max(src.topk.max(), src.ground_truth.max())) + 1
    assert any("images_names.npy: skipped" in n for n in notes)


def test_families_map_and_topk(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    rng = np.random.default_rng(0)
    np.save(d / "ground_truth.npy", rng.integers(5, size=30))
    np.save(d / "alpha.npy", rng.integers(5, size=(30, 3)))
    np.save(d / "beta_model.npy", rng.integers(5, size=(30, 3)))
    (d / "map.json").write_text(json.dumps({"beta_model": "alpha"}))
    db, notes = import_predictions(d, families={"beta_model": "alpha"})
    assert db.families == ["alpha", "alpha"] and db.k == 3
    assert any("map.json" in n for n in notes)


@pytest.mark.parametrize("make, phrase", [
    (lambda d: np.save(d / "f0.npy", np.zeros(7, dtype=np.int64)), "f0.npy: has 7 predictions"),
    (lambda d: np.save(d / "f1.npy", -np.ones(120, dtype=np.int64)), "f1.npy: has negative"),
    (lambda d: np.save(d / "f2.npy", np.full(120, 99)), "f2.npy: label 99 >= num_classes"),
    (lambda d: np.save(d / "F0.npy", np.zeros(120, dtype=np.int64)), "duplicate model name"),
    (lambda d: np.save(d / "jpeg-nofam-1.npy", np.zeros(120, dtype=np.int64)),
     "family 'nofam' has no vanilla model"),
])
def test_rejections_before_writing(folder, tmp_path, make, phrase):
    d, _ = folder
    make(d)
    out = tmp_path / "db.safetensors"
    with pytest.raises(ValueError, match=phrase):
        import_predictions(d, num_classes=10 if "99" in phrase else None)
    argv = ["fbi", "import-predictions", str(d), "--out", str(out)]
    if "99" in phrase:
        argv += ["--num-classes", "10"]
    assert _cli(argv) == 2
    assert not out.exists()


def test_pickled_npy_is_skipped_never_loaded(folder):
    d, src = folder
    evil = np.array([{"x": 1}], dtype=object)
    with open(d / "evil.npy", "wb") as f:
        np.lib.format.write_array(f, evil, allow_pickle=True)
    (d / "raw.npy").write_bytes(pickle.dumps([1, 2]))
    np.save(d / "floats.npy", np.zeros(120))
    db, notes = import_predictions(d)
    assert "evil" not in db.names and "floats" not in db.names
    assert db.num_models == src.num_models
    text = " ".join(notes)
    assert "evil.npy: skipped (not a plain array" in text
    assert "floats.npy: skipped (not integer labels" in text


def test_accuracy_filter_drops_bad_variants():
    db = _released_db()
    topk = db.topk.copy()
    bad = db.names.index(next(n for n in db.names if n != db.families[db.names.index(n)]))
    topk[bad, :, 0] = (db.ground_truth + 1) % db.num_classes  # always wrong
    db = fbi.Database(topk, db.names, db.families, k=1, num_classes=db.num_classes,
                      ground_truth=db.ground_truth)
    kept, dropped = accuracy_filter(db)
    assert dropped == [db.names[bad]] and kept.num_models == db.num_models - 1


def test_paper_tables_python_api():
    db = _released_db()
    t = paper_tables(db, trials=2, Ls=[20, 50], protocol="paper")  # 120 inputs: too few for
    # the authors' Entropy pool (20 % of the inputs >= the largest L)
    assert set(t["table3_selection"]) == {"all", "50/50", "30/70", "entropy"}
    assert set(t["table6_identification"]) == {"vanilla", "compound"}
    r = t["table5_queries"]["50"]
    assert 0.0 <= r["tpr_at_5fpr"] <= 1.0 and r["tpr_at_5fpr_std"] >= 0.0
    assert "Table VI" in format_tables(t)
    with pytest.raises(ValueError, match="trials"):
        paper_tables(db, trials=0)


def test_paper_tables_cli_end_to_end(folder, tmp_path, capsys):
    d, _ = folder
    out, js = tmp_path / "db.safetensors", tmp_path / "tables.json"
    assert _cli(["fbi", "import-predictions", str(d), "--out", str(out)]) == 0
    assert _cli(["fbi", "paper-tables", "--db", str(out), "--trials", "2", "--L", "20", "50",
                 "--protocol", "paper", "--json", str(js), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Table III" in text and "+-" in text
    data = json.loads(js.read_text())
    assert data["database"]["models"] == 16 and data["database"]["Ls"] == [20, 50]


def test_import_extends_an_existing_database_or_refuses_it(folder, tmp_path):
    d, src = folder
    out = tmp_path / "db.safetensors"
    assert _cli(["fbi", "import-predictions", str(d), "--out", str(out)]) == 0
    before = out.read_bytes()
    # the same folder again: nothing to add, nothing lost
    assert _cli(["fbi", "import-predictions", str(d), "--out", str(out)]) == 0
    assert fbi.Database.load(out).num_models == src.num_models
    # a folder with one more model: extended, the earlier models kept
    more = tmp_path / "more"
    export_predictions(src, more)
    np.save(more / f"jpeg-{src.families[0]}-9.npy", src.topk[0, :, 0])
    assert _cli(["fbi", "import-predictions", str(more), "--out", str(out)]) == 0
    db = fbi.Database.load(out)
    assert db.num_models == src.num_models + 1 and set(src.names) <= set(db.names)
    # a model stored with other labels, or other inputs: refused, the file left as it was
    grown = out.read_bytes()
    np.save(more / f"{src.names[1]}.npy", (src.topk[1, :, 0] + 1) % src.num_classes)
    assert _cli(["fbi", "import-predictions", str(more), "--out", str(out)]) == 2
    other = tmp_path / "other"
    other.mkdir()
    np.save(other / "a.npy", np.zeros(7, dtype=np.int64))
    assert _cli(["fbi", "import-predictions", str(other), "--out", str(out)]) == 2
    assert out.read_bytes() == grown != before


@pytest.mark.parametrize("label", [np.int64(2) ** 62, np.iinfo(np.uint64).max])
def test_huge_labels_are_refused_before_any_cast(folder, tmp_path, label):
    # they used to wrap: int64 2**62 was stored as 0, uint64 2**64-1 wrote an unloadable file
    d, _ = folder
    np.save(d / "huge.npy", np.full(120, label, dtype=np.asarray(label).dtype))
    with pytest.raises(ValueError, match=r"huge.npy: label \d+ is larger than"):
        import_predictions(d)
    out = tmp_path / "db.safetensors"
    assert _cli(["fbi", "import-predictions", str(d), "--out", str(out)]) == 2
    assert not out.exists()


def test_import_checks_its_outputs_before_reading(folder, tmp_path, capsys):
    d, _ = folder
    missing = tmp_path / "no-such-folder" / "db.safetensors"
    assert _cli(["fbi", "import-predictions", str(d), "--out", str(missing)]) == 2
    assert "--out" in capsys.readouterr().err
    assert _cli(["fbi", "import-predictions", str(d), "--out", str(tmp_path / "db.safetensors"),
                 "--json", str(missing)]) == 2
    assert not (tmp_path / "db.safetensors").exists()
