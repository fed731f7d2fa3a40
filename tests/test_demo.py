"""`fastfp demo --quick` end to end (the zoo trained once per session in a tmp cache), and its bad
input."""

import json
import os

import pytest

from fastfp import demo
from fastfp.cli.main import main


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FASTFP_CACHE", str(tmp_path_factory.getbasetemp() / "fastfp-cache"))


@pytest.mark.slow  # the whole quick demo, zoo training included
def test_quick_demo_writes_tables_figures_and_json(tmp_path, capsys):
    out, js = tmp_path / "out", tmp_path / "report.json"
    assert main(["demo", "--quick", "--out", str(out), "--json", str(js), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for needle in ("Characteristic examples", "ltrc", "Detection", "Identification",
                   "Walled garden", "Timing"):
        assert needle in text
    r = json.loads(js.read_text())
    assert r["schema"] == "fastfp.demo/1"
    for m in ("vanilla", "rc", "rcgm", "ltrc"):
        c = r["cexamples"][m]
        for key in ("robustness", "transferability"):
            assert 0.0 <= c[key] <= 1.0
        assert c["uniqueness"] == pytest.approx(c["robustness"] - c["transferability"])
        assert c["base_accuracy"] >= (0.9 if m == "vanilla" else 0.5)  # fits its own model
    det, ide = r["fbi"]["detection"], r["fbi"]["identification"]
    assert 0.0 <= det["tpr_at_5fpr"] <= 1.0 and 0.5 < det["roc_auc"] <= 1.0
    assert ide["success"] + ide["abstain"] + ide["error"] == pytest.approx(1.0)
    assert set(det["by_selection"]) == {"all", "50/50", "30/70", "entropy"}
    assert set(det["by_delegate"]) == {"close", "median", "far"}
    for row in list(det["by_selection"].values()) + list(det["by_delegate"].values()):
        assert row["fpr"] <= 0.05 + 1e-12  # tau is fitted on these negatives at 5 % FPR
    wg = r["fbi"]["walled_garden"]
    assert wg["success"] + wg["fail"] + wg["error"] == pytest.approx(1.0)
    assert wg["black_boxes"] == r["fbi"]["database"]["models"]
    assert 1 <= wg["queries_mean"] <= wg["queries_max"]
    for stage in ("zoo_s", "cexamples_s", "fbi_s", "total_s"):
        assert r["timing"][stage] >= 0
    assert r["fbi"]["database"]["models"] > r["fbi"]["database"]["vanilla"] >= 5
    assert {(p["method"], p["k"]) for p in r["sweep"]} >= {("ltrc", 2), ("ltrc", 8), ("rcgm", 0)}
    for f in ("cexamples.png", "cexamples_dct.png", "fbi_roc.png", "fbi_distances.png",
              "tradeoff.png"):
        assert (out / f).stat().st_size > 1000, f
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from fastfp import Fingerprint

    fp = Fingerprint.load(out / "fingerprints" / "cnn-s0-ltrc.safetensors")
    assert fp.inputs.shape[1:] == (1, 32, 32)


def test_bad_model_name_is_a_clean_error(tmp_path, capsys):
    assert main(["demo", "--quick", "--model", "nope-s0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope-s0" in err and "Traceback" not in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder_is_a_clean_error(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["demo", "--quick", "--out", str(ro / "sub")]) == 2
        assert main(["demo", "--quick", "--out", str(ro)]) == 2
    finally:
        ro.chmod(0o700)
    err = capsys.readouterr().err
    assert "--out" in err and "Traceback" not in err


def test_output_path_that_is_a_file_and_bad_json_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo", "--quick", "--out", str(f)]) == 2
    assert main(["demo", "--quick", "--out",
                 "/proc/fastfp-demo-out"]) == 2  # unwritable, even for root
    assert main(["demo", "--quick", "--out", str(tmp_path), "--json",
                 str(tmp_path / "no" / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--json" in err


def test_config_validation():
    cfg = demo.config(quick=True)
    assert cfg["protected"] == ["cnn-s0"]
    assert demo.config(quick=False, model="resnet-s1", seeds=2)["protected"] == ["resnet-s1",
                                                                                 "resnet-s2"]
    with pytest.raises(ValueError, match="seeds: "):
        demo.config(quick=True, seeds=5)
    with pytest.raises(ValueError, match="num: "):
        demo.config(quick=True, num=0)


def test_fbi_experiment_on_a_synthetic_database():
    """The demo's FBI layout on fastfp.fbi, checked against the database it runs on."""
    import numpy as np

    from fastfp import fbi
    from fastfp.demo import fbi_experiment as FE

    syn = fbi.synthetic_database(4, 5, 200, num_classes=10, k=1, accuracy=0.7, noise=0.1, seed=0)
    fam = {"f0": "a-s0", "f1": "a-s1", "f2": "b-s0", "f3": "b-s1"}
    names = [fam[n] if n in fam else f"{fam[n[:2]]}/{n[2:]}" for n in syn.names]
    db = fbi.Database(syn.topk, names, [fam[f] for f in syn.families], k=1, num_classes=10,
                      ground_truth=syn.ground_truth)
    info = {"kinds": ["vanilla" if "/" not in n else "v" for n in names], "dropped": []}
    rep, figs = FE.run(db, info, L=40, trials=2, progress=False)
    assert rep["database"]["known_families"] == ["a-s0", "b-s0"]
    for row in rep["identification"]["by_setting"].values():
        assert row["black_boxes_known"] == 2 * 2 and row["black_boxes_unknown"] == 2 * 5
        assert row["success"] + row["abstain"] + row["error"] == pytest.approx(1.0)
    det = rep["detection"]["by_selection"]["all"]
    assert det["negatives"] == 4 * 15 and det["positives"] == 4 * 4  # delegates left out
    assert det["fpr"] <= 0.05 and det["tpr_at_5fpr"] > 0.5
    s, y, auc = figs["roc"]["all"]
    assert s.shape == y.shape == (2 * (60 + 16),) and auc == pytest.approx(det["roc_auc"])
    # walled garden: the same greedy_identify the public API runs, one model at a time
    r = fbi.greedy_identify(db.topk, db.families, 7)
    assert rep["walled_garden"]["queries_max"] >= r.L and rep["walled_garden"]["black_boxes"] == 20
    assert np.allclose(np.diag(figs["distances"]), 0.0)
    with pytest.raises(ValueError, match="selection: "):
        FE.identification(db, known_fams=["a-s0"], selection="30/70", delegates="vanilla", L=10,
                          trials=1, seed=0)
    with pytest.raises(ValueError, match="delegates: "):
        FE.identification(db, known_fams=["a-s0"], selection="all", delegates="median", L=10,
                          trials=1, seed=0)


# --- the figures' choices, on small synthetic inputs -------------------------------------------

def test_example_grid_columns_are_targets_not_positions():
    import numpy as np

    from fastfp import plots

    # ltrc lost its examples of targets 0 and 2 (not fitted): its i-th example is another target
    labels = {"vanilla": np.array([0, 1, 2, 3]), "ltrc": np.array([1, 3, 1])}
    targets, picks = plots.grid_columns(labels)
    assert targets == [0, 1, 2, 3]
    assert picks["vanilla"] == [0, 1, 2, 3]
    assert picks["ltrc"] == [None, 0, None, 1]
    assert plots.grid_columns(labels, classes=2)[0] == [0, 1]


def test_family_styles_are_distinct_and_not_paired_shades():
    from fastfp import plots

    fams = [f"f{i}" for i in range(23)]
    styles = plots.family_styles(fams + fams[:3])  # repeated names keep their style
    assert list(styles) == fams
    assert len(set(styles.values())) == len(fams)
    assert styles["f0"][0] != styles["f1"][0]  # neighbours differ in colour, not only in shade
    with pytest.raises(ValueError, match="distinct style"):
        plots.family_styles([f"f{i}" for i in range(500)])


def test_figures_write_pngs_and_check_their_shapes(tmp_path):
    import numpy as np

    from fastfp import plots

    pts = {"vanilla": [(0.0, 1.0, 1.0)], "rcgm": [(0.03, 1.0, 1.0)],
           "ltrc (k=8)": [(0.03, 0.86, 0.07), (0.07, 0.8, 0.05)]}
    fams = ["a", "a", "b", "b", "c"]
    rng = np.random.default_rng(0)
    for path in (plots.tradeoff(pts, tmp_path / "t.png"),
                 plots.embedding(rng.normal(size=(5, 2)), fams, tmp_path / "e.png"),
                 plots.heatmap(rng.uniform(size=(5, 5)), fams, tmp_path / "h.png",
                               names=list("vwxyz"))):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="xy: expected shape"):
        plots.embedding(np.zeros((4, 2)), fams, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="dist: expected a 5 x 5"):
        plots.heatmap(np.zeros((4, 4)), fams, tmp_path / "bad.png")
