"""The FBI protocol steps (fastfp.fbi.protocol): the one accuracy filter of eq. (1), and the demo
running the same detection / identification as ``fastfp fbi paper-tables``."""

import numpy as np
import pytest

from fastfp import fbi
from fastfp.fbi.protocol import accuracy_filter, paper_tables, within_accuracy_drop


def _demo_style_db(*, spoil: str | None = None) -> fbi.Database:
    """A synthetic database named like the demo's (arch-sSEED families, FAMILY/VARIANT)."""
    syn = fbi.synthetic_database(4, 5, 200, num_classes=10, k=1, accuracy=0.7, noise=0.1, seed=0)
    fam = {"f0": "a-s0", "f1": "a-s1", "f2": "b-s0", "f3": "b-s1"}
    names = [fam[n] if n in fam else f"{fam[n[:2]]}/{n[2:]}" for n in syn.names]
    topk = syn.topk.copy()
    if spoil is not None:  # this variant is always wrong: the filter must drop it
        topk[names.index(spoil), :, 0] = (syn.ground_truth + 1) % 10
    return fbi.Database(topk, names, [fam[f] for f in syn.families], k=1, num_classes=10,
                        ground_truth=syn.ground_truth)


def test_filter_is_the_relative_rule_of_eq_1():
    # 10 points lost from 50 % is a 20 % relative drop: out, although an absolute rule keeps it
    assert not within_accuracy_drop(0.40, 0.50)
    assert within_accuracy_drop(0.425, 0.50)  # exactly 15 % relative: kept
    assert within_accuracy_drop(0.81, 0.95) and not within_accuracy_drop(0.76, 0.90)
    assert within_accuracy_drop(0.0, 0.0)  # nothing to lose
    with pytest.raises(ValueError, match="max_drop: "):
        within_accuracy_drop(0.5, 0.5, max_drop=1.5)
    with pytest.raises(ValueError, match="acc_variant: "):
        within_accuracy_drop(2.0, 0.5)
    # on a database: vanilla 50 % right, one variant 40 % (dropped), one 45 % (kept)
    truth = np.zeros(100, dtype=np.int64)
    rows = [np.r_[np.zeros(p), np.ones(100 - p)].astype(np.int64) for p in (50, 40, 45)]
    db = fbi.Database(np.stack(rows)[:, :, None], ["m", "m/v40", "m/v45"], ["m"] * 3, k=1,
                      num_classes=2, ground_truth=truth)
    kept, dropped = accuracy_filter(db)
    assert dropped == ["m/v40"] and kept.names == ["m", "m/v45"]
    with pytest.raises(TypeError, match="db: "):
        accuracy_filter(rows)


def test_demo_and_paper_tables_give_the_same_numbers_on_one_database():
    from fastfp.demo import fbi_experiment as FE

    db = _demo_style_db(spoil="a-s1/v2")
    info = {"kinds": ["vanilla" if "/" not in n else "v" for n in db.names]}
    rep, _ = FE.run(db, info, L=40, trials=2, progress=False)
    known = FE.known_families(db.families)
    t = paper_tables(db, trials=2, Ls=[40], seed=FE.SEED, known_fams=known,
                     protocol="paper")
    assert rep["database"]["dropped"] == t["database"]["dropped"] == ["a-s1/v2"]
    assert rep["database"]["models"] == t["database"]["models"] == 19
    np.testing.assert_equal(rep["detection"]["by_selection"], t["table3_selection"])
    np.testing.assert_equal(rep["detection"]["by_delegate"], t["table4_delegate"])
    for dk in ("vanilla", "compound"):
        np.testing.assert_equal(rep["identification"]["by_setting"][f"entropy/{dk}"],
                                t["table6_identification"][dk]["40"])
    assert t["database"]["known_families"] == known == ["a-s0", "b-s0"]


def test_the_paper_tables_command_gives_the_demo_tables_from_the_saved_database(tmp_path):
    import json

    from fastfp.cli.main import main
    from fastfp.demo import fbi_experiment as FE

    db = _demo_style_db(spoil="a-s1/v2")
    info = {"kinds": ["vanilla" if "/" not in n else "v" for n in db.names]}
    rep, _ = FE.run(db, info, L=40, trials=2, progress=False)
    path, js = tmp_path / "fbi-database.safetensors", tmp_path / "tables.json"
    db.save(path)
    argv = ["fbi", "paper-tables", "--db", str(path), "--protocol", "paper", "--L", "40",
            "--trials", "2", "--seed",
            str(FE.SEED), "--max-drop", str(rep["database"]["max_drop"]), "--known-families",
            *rep["database"]["known_families"], "--json", str(js), "--no-progress"]
    assert main(argv) == 0
    t = json.loads(js.read_text())
    assert t["table3_selection"] == json.loads(json.dumps(rep["detection"]["by_selection"]))
    for dk in ("vanilla", "compound"):
        assert t["table6_identification"][dk]["40"] == json.loads(
            json.dumps(rep["identification"]["by_setting"][f"entropy/{dk}"]))


def test_identification_checks_its_arguments_before_work():
    from fastfp.fbi.protocol import identification

    db = _demo_style_db()
    with pytest.raises(ValueError, match="known_fams: "):
        identification(db, delegates="vanilla", L=10, trials=1, seed=0, known_fams=["zz"])
    with pytest.raises(ValueError, match="trials: "):
        identification(db, delegates="vanilla", L=10, trials=0, seed=0)
    r = identification(db, delegates="vanilla", L=20, trials=2, seed=0,
                       known_fams=["a-s0", "b-s0"])
    assert r["black_boxes_known"] == 2 * 2 and r["black_boxes_unknown"] == 2 * 5
    assert r["success"] + r["abstain"] + r["error"] == pytest.approx(1.0)
