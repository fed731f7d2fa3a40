"""``paper_tables(protocol="authors")`` against the literal twin of the FBI authors' scripts
(fastfp.reference.fbi_authors), the three-column table, and bad input."""

from __future__ import annotations

import json

import pytest
from helpers import write_release_folder

from fastfp import fbi
from fastfp.fbi import protocol
from fastfp.fbi.release import import_predictions
from fastfp.reference import fbi_authors as authors

LS = (20, 50, 100)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    info = write_release_folder(tmp_path_factory.mktemp("release"))
    db, _ = import_predictions(info["folder"])
    return info, db, authors.read_release(info["folder"])


def _cells(tables):
    """{paper cell name: (mean, std, fpr, trials)} of a paper_tables result."""
    return {name: (c["mean"], c["std"], c["fpr"], c["trials"])
            for name, c in tables["cells"].items()}


@pytest.mark.parametrize("distance, seed, trials", [("mi", 5, 3), ("rajski", 1, 2),
                                                    ("mi_min", 2, 2)])
def test_authors_protocol_equals_the_twin_cell_by_cell(release, distance, seed, trials):
    _, db, data = release
    nF = len(set(data[2]))
    unknown = protocol.authors_unknown(nF)
    got = protocol.paper_tables(db, protocol="authors", distance=distance, trials=trials,
                                Ls=LS, seed=seed)
    det = authors.detection_table(*data, seed=seed, trials=trials, Ls=LS, distance=distance)
    ide = authors.identification_table(*data, seed=seed, repeats=trials, Ls=LS,
                                       unknown=unknown, distance=distance)
    want = {}
    for name, (sel, dele, L) in authors.PAPER_CELLS.items():
        if L not in LS:
            continue
        c = det[(sel, dele, L)]
        want[name] = (c["mean"], c["std"], c["fpr"], c["trials"])
    for L in LS:
        c = ide[L]
        want[f"VI L={L}"] = (c["mean"], c["std"], c["fpr"], c["trials"])
    cells = _cells(got)
    assert set(want) <= set(cells)
    for name, w in want.items():  # bit for bit: ==, not approx
        assert cells[name] == w, (name, cells[name], w)
    for L in LS:
        c = got["cells"][f"VI L={L}"]
        assert c["no_threshold"] == ide[L]["no_threshold"] and c["tau"] == ide[L]["tau"]


def test_authors_entropy_ranking_and_delegates_match_the_twin(release):
    _, db, data = release
    prep = authors.prepare(*data)
    fast = protocol.AuthorsData(db, max_drop=authors.MAX_DROP, remove_single=True)
    assert fast.models == prep["models"] and list(fast.families) == list(prep["families"])
    assert fast.entropy_pool().tolist() == authors.entropy_pool(prep)
    for dist in ("mi", "rajski", "mi_min"):
        for kind in ("close", "median", "far"):
            for f in prep["families"]:
                assert fast.delegate(f, kind, dist) == prep["models"].index(
                    authors.pick_delegate(prep, f, kind, dist)), (f, kind, dist)


def test_paper_protocol_is_unchanged_and_distance_overrides(release):
    _, db, _ = release
    a = protocol.paper_tables(db, protocol="paper", trials=2, Ls=(20, 50))
    b = protocol.paper_tables(db, protocol="paper", distance="rajski", trials=2, Ls=(20, 50))
    assert a["table3_selection"] == b["table3_selection"]
    assert a["database"]["protocol"] == "paper" and a["database"]["distance"] == "rajski"
    m = protocol.paper_tables(db, protocol="paper", distance="mi", trials=2, Ls=(20, 50))
    assert m["database"]["distance"] == "mi"
    for sel, r in a["table3_selection"].items():  # the actual FPR is reported, never above 5 %
        assert r["fpr"] <= 0.05 and a["cells"][{"all": "III All", "50/50": "III 50/50",
                                                "30/70": "III 30/70",
                                                "entropy": "III Entropy"}[sel]]["fpr"] == r["fpr"]


def test_three_columns_and_json(release, tmp_path, capsys):
    from fastfp.cli.main import main

    info, db, _ = release
    path, js = tmp_path / "db.safetensors", tmp_path / "t.json"
    db.save(path)
    argv = ["fbi", "paper-tables", "--db", str(path), "--trials", "2", "--L", *map(str, LS),
            "--json", str(js), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "paper" in out and "fastfp" in out and "diff" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("III All"))
    assert "83.4" in row
    data = json.loads(js.read_text())
    assert data["database"]["protocol"] == "authors" and data["database"]["distance"] == "mi"
    for name, c in data["cells"].items():
        assert {"paper", "mean", "std", "fpr", "trials", "diff"} <= set(c), name
        assert c["trials"] == 2
        if c["paper"] is not None:
            assert c["diff"] == pytest.approx(c["mean"] - c["paper"])
    assert data["cells"]["III All"]["paper"] == pytest.approx(0.834)
    assert data["cells"]["VI L=100"]["paper"] == pytest.approx(0.800)


def test_paper_numbers_have_sources():
    for name, entry in protocol.PAPER_NUMBERS.items():
        assert 0.0 < entry["value"] < 1.0 and entry["source"], name
    assert protocol.PAPER_NUMBERS["IV far"]["value"] == pytest.approx(0.316)
    assert protocol.PAPER_NUMBERS["V L=20"]["value"] == pytest.approx(0.797)


@pytest.mark.parametrize("flag, value, phrase", [
    ("--protocol", "fbi", "--protocol: expected one of 'authors', 'paper'"),
    ("--distance", "l2", "--distance: expected one of 'rajski', 'mi', 'mi_min'"),
])
def test_cli_checks_protocol_and_distance_before_any_work(tmp_path, capsys, flag, value, phrase):
    from fastfp.cli.main import main

    missing = tmp_path / "nothing.safetensors"  # never read: the choice is checked first
    argv = ["fbi", "paper-tables", "--db", str(missing), flag, value, "--no-progress"]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own exit
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and phrase in err and "Traceback" not in err


def test_authors_protocol_refuses_missing_truth_or_vanilla(release, tmp_path, capsys):
    from fastfp.cli.main import main

    _, db, _ = release
    no_truth = fbi.Database(db.topk, db.names, db.families, k=db.k, num_classes=db.num_classes)
    with pytest.raises(ValueError, match="ground truth"):
        protocol.paper_tables(no_truth, protocol="authors", trials=1, Ls=LS)
    rows = [i for i, n in enumerate(db.names) if n != "beta"]
    headless = protocol.subset(db, rows)
    with pytest.raises(ValueError, match="family 'beta' has no vanilla model"):
        protocol.paper_tables(headless, protocol="authors", trials=1, Ls=LS)
    # another rule: a mapping family -> vanilla model
    vanilla = {f: f for f in headless.family_names}
    vanilla["beta"] = "HALF-beta"
    t = protocol.paper_tables(headless, protocol="authors", trials=1, Ls=LS, vanilla=vanilla)
    assert t["database"]["families"] == 7 and t["database"]["detection_families"] == 6
    path = tmp_path / "headless.safetensors"
    headless.save(path)
    assert main(["fbi", "paper-tables", "--db", str(path), "--L", "20", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'beta'" in err and "--vanilla FAMILY=MODEL" in err
    # the same rule from the command line
    js = tmp_path / "t.json"
    assert main(["fbi", "paper-tables", "--db", str(path), "--L", *map(str, LS), "--trials", "1",
                 "--vanilla", "beta=HALF-beta", "--json", str(js), "--no-progress"]) == 0
    assert json.loads(js.read_text())["cells"] == json.loads(json.dumps(t["cells"]))
    assert main(["fbi", "paper-tables", "--db", str(path), "--vanilla", "beta"]) == 2
    assert "--vanilla: expected FAMILY=MODEL" in capsys.readouterr().err


def test_authors_protocol_checks_pools_before_any_trial(release, monkeypatch):
    _, db, _ = release
    calls = []
    monkeypatch.setattr(protocol, "pairwise_distance",
                        lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    with pytest.raises(ValueError, match="Ls: 500 images asked"):
        protocol.paper_tables(db, protocol="authors", trials=1, Ls=(20, 500))
    with pytest.raises(ValueError, match="protocol: expected one of 'authors', 'paper'"):
        protocol.paper_tables(db, protocol="fbi")
    with pytest.raises(ValueError, match="distance: expected one of"):
        protocol.paper_tables(db, distance="l2")
    with pytest.raises(ValueError, match="known_fams: .*paper"):
        protocol.paper_tables(db, protocol="authors", known_fams=["alpha"])
    assert not calls
