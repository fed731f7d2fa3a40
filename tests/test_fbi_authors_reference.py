"""The literal twin of the FBI authors' open-world scripts: hand-computable properties."""

import ast
import inspect
import math

import numpy as np
import pytest
from helpers import write_release_folder

from fastfp.reference import fbi_authors as authors


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    info = write_release_folder(tmp_path_factory.mktemp("release"))
    return info, authors.read_release(info["folder"])


def test_twin_imports_no_fast_code():
    tree = ast.parse(inspect.getsource(authors))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert all(m in ("__future__", "math", "collections", "collections.abc", "pathlib", "typing",
                     "numpy", "fastfp.reference")
               for m in imported), imported


def test_prepare_filters_and_removes_single_member_families(release):
    info, (top, names, families, vanilla, truth) = release
    assert top.shape == (len(names), 600, 1) and vanilla["alpha"] == "alpha"
    prep = authors.prepare(top, names, families, vanilla, truth)
    for gone in info["filtered"]:
        assert gone not in prep["models"]
    # omega lost both variants: removed from the family table, its vanilla model stays a negative
    assert "omega" not in prep["families"] and "omega" in prep["models"]
    assert sorted(prep["families"]) == sorted(info["families"][:-1])
    assert [prep["models"][i] for i in prep["originals"]] == sorted(info["families"])
    assert all(len(f["models"]) == 5 for f in prep["families"].values())
    # families in first-appearance order of the kept models (the file order here)
    assert list(prep["families"]) == list(dict.fromkeys(
        families[names.index(m)] for m in prep["models"] if families[names.index(m)] != "omega"))
    kept = authors.prepare(top, names, families, vanilla, truth, remove_single=False)
    assert kept["families"]["omega"]["models"] == ["omega"]
    # symbols: the rank of the truth in the top-k (0), else k (1)
    i = prep["models"].index("alpha")
    assert np.array_equal(prep["symbols"][i], (prep["top"][i, :, 0] != truth).astype(int))


def test_gt_index_top_k():
    top = np.array([[[3, 1, 2], [0, 4, 5]], [[1, 3, 0], [5, 0, 4]]])  # (2 models, 2 images, 3)
    assert authors.gt_index(top, np.array([1, 9])).tolist() == [[1, 3], [0, 3]]


def _tiny():
    """A vanilla model, an exact copy (a tie at the close end) and three farther members."""
    truth = np.zeros(12, dtype=np.int64)
    v = np.array([0] * 8 + [1] * 4)
    near = v.copy()
    near[[0, 8]] = [1, 0]  # one swap: same accuracy, less information
    mid = v.copy()
    mid[[0, 1, 8, 9]] = [1, 1, 0, 0]
    far = v.copy()
    far[[0, 1, 2, 8, 9, 10]] = [1, 1, 1, 0, 0, 0]
    other = np.array([0, 1] * 6)
    names = ["fam", "HALF-fam", "A-fam-1", "B-fam-2", "C-fam-3", "oth", "HALF-oth"]
    top = np.stack([v, v, near, mid, far, other, other])
    return authors.prepare(top, names, ["fam"] * 5 + ["oth"] * 2, {"fam": "fam", "oth": "oth"},
                           truth)


def test_delegates_on_a_tiny_family():
    prep = _tiny()
    # by name: A-fam-1 (near), B-fam-2 (mid), C-fam-3 (far), HALF-fam (tie), fam (tie)
    # mi ascending: C, B, A, HALF-fam, fam: close = the last (fam: ties keep name order)
    assert authors.pick_delegate(prep, "fam", "close", "mi") == "fam"
    assert authors.pick_delegate(prep, "fam", "far", "mi") == "C-fam-3"
    assert authors.pick_delegate(prep, "fam", "median", "mi") == "A-fam-1"  # index int(5 / 2)
    # rajski ascending: HALF-fam, fam (0), A, B, C: close = the first, middle index 2 = A
    assert authors.pick_delegate(prep, "fam", "close", "rajski") == "HALF-fam"
    assert authors.pick_delegate(prep, "fam", "far", "rajski") == "C-fam-3"
    assert authors.pick_delegate(prep, "fam", "median", "rajski") == "A-fam-1"
    assert authors.pick_delegate(prep, "fam", "close", "mi_min") == "HALF-fam"


def test_split_prefixes_are_nested():
    assert [int(L * 0.7) for L in (20, 50, 100, 500)] == [14, 35, 70, 350]
    right, wrong = list(range(100, 400)), list(range(400))
    picks = {L: authors.split_images(right, wrong, L, 0.7) for L in (20, 50, 100)}
    assert picks[20] == wrong[:14] + right[:6]
    for a, b in ((20, 50), (50, 100)):
        n_a, n_b = int(a * 0.7), int(b * 0.7)
        assert picks[a][:n_a] == picks[b][:n_a] and picks[a][n_a:] == picks[b][n_b:n_b + a - n_a]
    assert authors.split_images(right, wrong[:3], 10, 0.7) == wrong[:3] + right[:3]  # short


def test_detection_draws_nested_prefixes_per_family(release, monkeypatch):
    _, data = release
    calls = []
    real = authors.split_images

    def record(right, wrong, L, p):
        out = real(right, wrong, L, p)
        calls.append((L, tuple(right), tuple(wrong), out))
        return out

    monkeypatch.setattr(authors, "split_images", record)
    prep = authors.prepare(*data)
    authors.detection(prep, "30/70", "far", (20, 50), 2, np.random.default_rng(0))
    assert len(calls) == 2 * len(prep["families"]) * 2
    rng = np.random.default_rng(0)  # the documented order: right, then wrong, per family
    for j, f in enumerate(prep["families"]):
        (_, r20, w20, p20), (_, r50, w50, p50) = calls[2 * j], calls[2 * j + 1]
        assert r20 == r50 and w20 == w50  # one shuffle per family and trial
        right, wrong = authors.split_lists(prep, authors.pick_delegate(prep, f, "far", "mi"))
        assert list(r20) == rng.permutation(np.asarray(right, dtype=np.int64)).tolist()
        assert list(w20) == rng.permutation(np.asarray(wrong, dtype=np.int64)).tolist()
        assert p20[:14] == p50[:14] and p20[14:] == p50[35:41]


def test_roc_keeps_list_order_on_ties():
    fp, tp = authors.roc([True, False, True, False], [0.5, 0.5, 0.2, 0.9], "max")
    assert (fp, tp) == ([1.0, 1.0, 0.5, 0.0], [0.5, 0.0, 0.0, 0.0])
    fp, tp = authors.roc([False, True, True, False], [0.5, 0.5, 0.2, 0.9], "max")
    assert (fp, tp) == ([1.0, 0.5, 0.5, 0.0], [0.5, 0.5, 0.0, 0.0])
    # a distance (smaller is closer): walked from the largest, ties in list order too
    fp, tp = authors.roc([False, True, True, False], [0.5, 0.5, 0.2, 0.9], "min")
    assert (fp, tp) == ([0.5, 0.0, 0.0, 0.0], [1.0, 1.0, 0.5, 0.0])
    # averaged index-wise; the first index where the mean FPR < 5 %
    tps = [[1.0, 1.0, 1.0, 0.0], [1.0, 0.5, 0.5, 0.0]]
    out = authors.read_out(tps, [[1.0, 0.5, 0.08, 0.0], [0.5, 0.0, 0.0, 0.0]])
    assert out == {"mean": 0.75, "std": 0.25, "fpr": 0.04, "trials": 2}
    out = authors.read_out(tps, [[1.0, 0.5, 0.1, 0.0], [0.5, 0.0, 0.0, 0.0]])  # 5 % is not < 5 %
    assert out == {"mean": 0.0, "std": 0.0, "fpr": 0.0, "trials": 2}


def test_entropy_quirk_orders_term_lists_not_sums():
    # five vanilla models; per image, -p log2 p per label in first-appearance order
    top = np.array([[0, 0, 1], [0, 0, 2], [1, 0, 0], [1, 1, 0], [1, 2, 0]])[:, :, None]
    prep = {"top": top, "originals": [0, 1, 2, 3, 4]}
    # image 0: [.4, .6] -> [0.529, 0.442] (H 0.971); image 1: [.6, .2, .2] -> [0.442, 0.464,
    # 0.464] (H 1.371); image 2: [.2, .2, .6] -> [0.464, 0.464, 0.442] (H 1.371)
    assert authors.entropy_ranking(prep) == [0, 2, 1]  # the true entropy would rank 1, 2, 0
    h = [-sum(p * math.log(p, 2) for p in ps) for ps in ([.4, .6], [.6, .2, .2], [.2, .2, .6])]
    assert h[0] < h[1] and abs(h[1] - h[2]) < 1e-12


def test_detection_table_on_the_release_folder(release):
    _, data = release
    Ls = (20, 50, 100)
    table = authors.detection_table(*data, seed=3, trials=3, Ls=Ls)
    assert set(table) == {(s, d, L) for s, d in authors.DETECTION_RUNS for L in Ls}
    for cell in table.values():
        assert set(cell) == {"mean", "std", "fpr", "trials"} and cell["trials"] == 3
        assert 0.0 <= cell["mean"] <= 1.0 and cell["fpr"] < 0.05
    # the far delegate detects worst, as in the paper's Table IV; more queries help
    assert table[("30/70", "far", 100)]["mean"] < table[("30/70", "close", 100)]["mean"]
    assert table[("30/70", "close", 20)]["mean"] <= table[("30/70", "close", 100)]["mean"]
    # one generator per run: a run alone gives the same cells; the seed changes them
    alone = authors.detection_table(*data, seed=3, trials=3, Ls=Ls, runs=(("30/70", "far"),))
    assert all(alone[k] == table[k] for k in alone)
    other = authors.detection_table(*data, seed=4, trials=3, Ls=Ls, runs=(("30/70", "far"),))
    assert other != alone
    rajski = authors.detection_table(*data, seed=3, trials=2, Ls=(50,), distance="rajski",
                                     runs=(("entropy", "close"),))
    assert rajski[("entropy", "close", 50)]["trials"] == 2


def test_identification_entries_and_rate(release):
    _, data = release
    prep = authors.prepare(*data, remove_single=False)  # identification_pure.py keeps omega
    runs = authors.identification_entries(prep, (20, 60), 3, np.random.default_rng(0),
                                          unknown=2)
    nF = len(prep["families"])
    assert nF == 7
    for L in (20, 60):
        assert len(runs[L]) == 3 and all(len(r) == len(prep["models"]) for r in runs[L])
        unknown = {e for r in runs[L] for _, _, e in r if e == "unknown"}
        assert unknown == {"unknown"}
    table = authors.identification_table(*data, seed=0, repeats=3, Ls=(20, 60), unknown=2)
    for cell in table.values():
        assert cell["trials"] == 3 and cell["fpr"] <= 0.05
        assert 0.0 <= cell["mean"] <= cell["no_threshold"] <= 1.0
    # a hand-made run (mi: larger is closer): negatives 0.1, 0.3 -> tau = 0.3, accept > 0.3
    run = [(0.9, "a", "a"), (0.5, "b", "a"), (0.2, "a", "a"), (0.1, "a", "unknown"),
           (0.3, "b", "unknown")]
    rate = authors.identification_rate([run], "max", fpr=0.05)
    assert rate["tau"] == 0.3 and rate["fpr"] == 0.0
    assert rate["mean"] == pytest.approx(1 / 3) and rate["no_threshold"] == pytest.approx(2 / 3)


def test_bad_input(release):
    _, (top, names, families, vanilla, truth) = release
    with pytest.raises(ValueError, match="distance: expected one of 'rajski', 'mi', 'mi_min'"):
        authors.detection_table(top, names, families, vanilla, truth, distance="l2")
    with pytest.raises(ValueError, match="runs"):
        authors.detection_table(top, names, families, vanilla, truth, runs=(("70/30", "close"),))
    with pytest.raises(ValueError, match="truth"):
        authors.identification_table(top, names, families, vanilla, None)
    with pytest.raises(ValueError, match="vanilla: family 'alpha'"):
        authors.detection_table(top, names, families, {**vanilla, "alpha": "beta"}, truth)
    with pytest.raises(ValueError, match="delegate"):
        authors.identification_table(top, names, families, vanilla, truth, delegate="middle")
    with pytest.raises(ValueError, match="Ls: 500 images asked"):
        authors.detection_table(top, names, families, vanilla, truth, trials=1, Ls=(500,),
                                runs=(("entropy", "close"),))
