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
    assert main(["demo", "--quick", "--out", str(out), "--json", str(js)]) == 0
    captured = capsys.readouterr()
    text, bars = captured.out, captured.err
    # the first line says what the run does and about how long it takes
    first = text.splitlines()[0]
    assert first.startswith("fastfp demo (--quick): ") and "$FASTFP_CACHE" in first
    assert "about" in first and "on 2 CPU cores" in first
    # progress over example-steps (1 model x 4 methods x 16 examples x 60 steps), not fingerprints
    assert "c-examples" in bars and f"/{4 * 16 * 60} " in bars and "fbi variants" in bars
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

    fp_path = out / "fingerprints" / "cnn-s0-ltrc.safetensors"
    fp = Fingerprint.load(fp_path)
    assert fp.inputs.shape[1:] == (1, 32, 32)

    # Every saved fingerprint records the transferability the demo measured as its null: the
    # Laplace-smoothed match rate of the zoo models that are not copies (the higher of the other
    # seeds of cnn and the other architectures), so verify decides against it, not chance level.
    from fastfp import cexamples, variants, zoo
    from fastfp.cexamples.verdict import null_rate_of

    names = zoo.names(quick=True)
    same = [zoo.load(n) for n in names if n.startswith("cnn-") and n != "cnn-s0"]
    others = [zoo.load(n) for n in names if not n.startswith("cnn-")]
    for m in ("vanilla", "rc", "rcgm", "ltrc"):
        f = Fingerprint.load(out / "fingerprints" / f"cnn-s0-{m}.safetensors")
        assert f.meta["null_source"] == "demo transferability"
        assert f.meta["null_rate"] == pytest.approx(max(null_rate_of(f, same),
                                                        null_rate_of(f, others)))
        assert f.meta["null_models"] in (len(same), len(others))
        run = next(r for r in r["cexamples_runs"] if r["model"] == "cnn-s0" and r["method"] == m)
        assert run["null_rate"] == pytest.approx(f.meta["null_rate"])
    assert 0 < fp.meta["null_rate"] < 0.5  # ltrc transfers little (vanilla: nearly always)
    # another seed of the protected architecture is not a copy; the model itself and a pruned
    # copy are
    assert main(["verify", "cnn-s1", str(fp_path)]) == 1
    said = capsys.readouterr().out
    assert "NOT A COPY" in said and "p-value" in said and "recorded" in said
    assert main(["verify", "cnn-s0", str(fp_path)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("COPY")
    pruned = variants.prune_global(zoo.load("cnn-s0"), 0.6)
    v = cexamples.verdict(pruned, fp)
    assert v.is_copy and v.null_rate == fp.meta["null_rate"]

    # a second run into the same folder is refused before any work, and nothing is touched
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


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


def _plant_earlier_run(out):
    """The files an earlier demo run leaves in ``out``, and two of the user's own."""
    (out / "fingerprints").mkdir(parents=True)
    demo_files = [out / "fbi-database.safetensors", out / "fbi-database.safetensors.lock",
                  out / "cexamples.png", out / "tradeoff.png",
                  out / "fingerprints" / "cnn-s0-ltrc.safetensors",
                  out / "fingerprints" / "resnet-s1-vanilla.safetensors"]
    user_files = [out / "notes.txt", out / "fingerprints" / "mine.safetensors"]
    for p in demo_files + user_files:
        p.write_bytes(b"x")
    return demo_files, user_files


def test_out_with_an_earlier_run_is_refused_unless_forced(tmp_path, capsys):
    out = tmp_path / "out"
    demo_files, user_files = _plant_earlier_run(out)
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "earlier fastfp demo run" in err and "--force" in err and "--out" in err
    assert all(p.exists() for p in demo_files + user_files)  # refused: nothing touched
    with pytest.raises(FileExistsError, match="--force"):
        demo.check_output(out)
    assert demo.check_output(out, force=True) == out
    assert sorted(demo.earlier_outputs(out)) == sorted(demo_files)
    # --force clears the demo's own files, and only those
    assert sorted(demo.clear_earlier(out)) == sorted(demo_files)
    assert not any(p.exists() for p in demo_files)
    assert all(p.read_bytes() == b"x" for p in user_files)
    assert demo.check_output(out) == out  # no earlier run left: accepted
    with pytest.raises(TypeError, match="force: "):
        demo.check_output(out, force="yes")


def test_force_removes_an_empty_fingerprints_folder(tmp_path):
    out = tmp_path / "out"
    (out / "fingerprints").mkdir(parents=True)
    (out / "fingerprints" / "cnn-s0-rc.safetensors").write_bytes(b"x")
    demo.clear_earlier(out)
    assert not (out / "fingerprints").exists() and out.is_dir()


def test_first_line_says_what_and_how_long_and_help_agrees(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTFP_CACHE", str(tmp_path / "cache"))
    cfg = demo.config(quick=True)
    names = ["a", "b", "c", "d", "e", "f"]
    cold = demo.intro(cfg, names, 6)
    assert cold.startswith("fastfp demo (--quick): trains the 6-model digits zoo once")
    assert str(tmp_path / "cache") in cold and "$FASTFP_CACHE" in cold
    warm = demo.intro(cfg, [], 6)
    assert "loads the 6-model digits zoo" in warm
    # the estimates come from the measured times: training the zoo adds its measured time
    zoo_s, rest_s = demo.MEASURED_S["quick"]
    assert demo.expected_seconds(cfg, 6, 6) == pytest.approx(zoo_s + rest_s)
    assert demo.expected_seconds(cfg, 0, 6) == pytest.approx(rest_s)
    assert "longer" in demo.intro(demo.config(quick=True, num=64), [], 6)
    assert "longer" not in warm
    # --help states the same measured times
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert " ".join(demo.help_times().split()) in " ".join(capsys.readouterr().out.split())


def test_zoo_training_shows_progress_per_optimizer_step(tmp_path, monkeypatch, capsys):
    import torch.optim.optimizer as optim_module

    monkeypatch.setenv("FASTFP_CACHE", str(tmp_path / "cache"))  # nothing cached: mlp-s0 trains
    handles = []
    register = optim_module.register_optimizer_step_post_hook

    def recording(hook):
        handles.append(register(hook))
        return handles[-1]

    monkeypatch.setattr(optim_module, "register_optimizer_step_post_hook", recording)
    assert demo.cached_zoo(["mlp-s0"]) == {}
    models = demo.train_zoo(["mlp-s0"], {}, progress=True)
    assert list(models) == ["mlp-s0"]
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\n", "\r").split("\r") if "zoo training" in f]
    assert len({f.split("|")[2].split("[")[0] for f in frames if f.count("|") >= 2}) >= 3
    assert "mlp-s0 (1/1 models)" in err
    assert len(handles) == 1 and handles[0].id not in handles[0].hooks_dict_ref()  # removed
    assert list(demo.cached_zoo(["mlp-s0"])) == ["mlp-s0"]  # cached for the next run


def test_fbi_database_makes_each_variant_just_before_querying_it(monkeypatch):
    """The bar moves per model (vanilla or variant), not per family."""
    import torch
    import torch.nn as nn

    from fastfp.demo import fbi_experiment as FE

    events = []

    class Spec:
        def __init__(self, name):
            self.name = self.kind = name

        def apply(self, model, data):
            events.append(("make", self.name))
            return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

    real = FE.fbi.query_topk

    def query(model, inputs, k):
        events.append(("query",))
        return real(model, inputs, k)

    monkeypatch.setattr(FE.fbi, "query_topk", query)
    torch.manual_seed(0)
    zoo_models = {f"a-s{i}": nn.Sequential(nn.Flatten(), nn.Linear(4, 3)) for i in range(2)}
    x, y = torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    db, info = FE.build_database(zoo_models, x, y, [Spec("v1"), Spec("v2")], None, progress=False)
    assert db.names == ["a-s0", "a-s0/v1", "a-s0/v2", "a-s1", "a-s1/v1", "a-s1/v2"]
    assert info["kinds"] == ["vanilla", "v1", "v2"] * 2
    assert events == [("query",), ("make", "v1"), ("query",), ("make", "v2"), ("query",)] * 2


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
