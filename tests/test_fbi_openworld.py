"""Open world: selection, delegates, thresholds, detection and identification with abstention."""

import math

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from fastfp import backend, fbi
from fastfp.reference import fbi as ref


@pytest.fixture(scope="module")
def db():
    return fbi.synthetic_database(5, 4, 300, num_classes=10, k=3, accuracy=0.7, noise=0.15, seed=3)


@pytest.fixture(scope="module")
def ow(db):
    return fbi.OpenWorld(L=60, trials=4, delegates=("close", "median"), seed=1).fit(db)


def test_fit_matches_literal_threshold_and_delegates(db, ow):
    sym = db.symbols()
    # delegates: ranked by distance to the anchor (vanilla) model on all inputs
    for f in ow.families_:
        members = db.members(f)
        a = ow.anchors_[f]
        d = [ref.rajski_distance(sym[a].tolist(), sym[m].tolist()) for m in members]
        order = [members[i] for i in np.argsort(d, kind="stable")]
        assert ow.delegates_[f] == list(dict.fromkeys([order[0], order[(len(order) - 1) // 2]]))
    # tau: literal recomputation over the same draws
    neg = []
    for draw in ow.samples_["detect"]:
        for f, S in draw.items():
            dele = [sym[m][S].tolist() for m in ow.delegates_[f]]
            for m in range(db.num_models):
                if db.families[m] != f:
                    neg.append(ref.family_distance(sym[m][S].tolist(), dele))
    assert abs(ow.tau_ - ref.threshold(neg, ow.fpr)) < 1e-9
    assert np.mean(np.array(neg) < ow.tau_ - 1e-9) <= ow.fpr  # (round-off aside) FPR <= target
    assert 0 < ow.tau_identify_ <= 1


def test_detection_scores_are_the_fit_pairs(db, ow):
    sym = db.symbols()
    fams = ow.families_
    every = ow.detection_scores(include_delegates=True)
    assert len(every) == ow.trials
    # negatives reproduce tau; positives with delegates reproduce detect_tpr_
    neg = np.concatenate([d[y == 0] for d, y in every])
    pos = np.concatenate([d[y == 1] for d, y in every])
    assert ow.tau_ == sorted(neg)[math.floor(ow.fpr * neg.size)]
    assert np.mean(pos < ow.tau_) == pytest.approx(ow.detect_tpr_)
    n_neg = sum(db.num_models - len(db.members(f)) for f in fams)
    n_del = sum(len(ow.delegates_[f]) for f in fams)
    for (_d, y), (d0, y0), draw in zip(
        ow.detection_scores(), every, ow.samples_["detect"], strict=True
    ):
        assert (y == 0).sum() == (y0 == 0).sum() == n_neg
        assert (y == 1).sum() == (y0 == 1).sum() - n_del == db.num_models - n_del
        assert d0[y0 == 1].min() == 0.0  # a delegate against its own family
        # one literal pair: model 0 against the last family, on that family's draw
        f = fams[-1]
        lit = ref.family_distance(
            sym[0][draw[f]].tolist(), [sym[m][draw[f]].tolist() for m in ow.delegates_[f]]
        )
        assert np.isclose(d0[y0 == 0], lit, rtol=0, atol=1e-9).any()


def test_detect_members_and_strangers(db, ow):
    hits = [
        ow.detect(name, fam, seed=i).positive
        for i, (name, fam) in enumerate(zip(db.names, db.families, strict=True))
    ]
    assert np.mean(hits) > 0.9
    false = [
        ow.detect(name, "f0", seed=i).positive
        for i, name in enumerate(db.names)
        if db.families[i] != "f0"
    ]
    assert np.mean(false) <= 0.2
    r = ow.detect("f2v1", "f2", seed=0)
    # the decision is the literal compound distance on the queried inputs
    sym = db.symbols()
    d = ref.family_distance(
        sym[db.index("f2v1")][r.queries].tolist(),
        [sym[m][r.queries].tolist() for m in ow.delegates_["f2"]],
    )
    assert abs(r.distance - d) < 1e-9 and r.positive == (d < ow.tau_)


def test_identify_known_unknown_and_ties(db, ow):
    got = [ow.identify(name, seed=i) for i, name in enumerate(db.names)]
    right = [g.family == f for g, f in zip(got, db.families, strict=True)]
    assert np.mean(right) > 0.8
    for g in got:
        assert g.family is None or g.family == ref.identify_decision(g.distances, g.tau)
    # a black box from a family Alice does not know: abstain (H0) most of the time
    other = fbi.synthetic_database(1, 3, 300, num_classes=10, k=3, seed=99)
    stranger = other.topk[0]
    abst = [ow.identify(stranger, seed=s).status for s in range(5)]
    assert abst.count("abstain-h0") >= 4
    # two families with identical models: every query ties -> abstain
    tie = fbi.Database(
        np.concatenate([db.topk[:4], db.topk[:4], db.topk[4:8]]),
        [f"a{i}" for i in range(12)],
        ["A"] * 4 + ["B"] * 4 + ["C"] * 4,
        k=3,
        num_classes=10,
        ground_truth=db.ground_truth,
    )
    ow2 = fbi.OpenWorld(L=50, trials=2, seed=0).fit(tie)
    assert ow2.tau_identify_ == 0.0  # A and B are indistinguishable: nothing may be identified
    assert ow2.identify("a0", seed=0).status == "abstain-h0"
    ow2.tau_identify_ = 1.01  # even with a permissive threshold, a tie abstains
    r = ow2.identify("a0", seed=0)
    assert r.status == "abstain-tie" and r.family is None


def test_reference_backend_gives_the_same_decisions(db, monkeypatch):
    fast = fbi.OpenWorld(L=40, trials=2, selection="50/50", seed=5).fit(db)
    monkeypatch.setenv("FASTFP_BACKEND", "reference")
    slow = fbi.OpenWorld(L=40, trials=2, selection="50/50", seed=5).fit(db)
    assert abs(fast.tau_ - slow.tau_) < 1e-9 and abs(fast.tau_identify_ - slow.tau_identify_) < 1e-9
    for i in (0, 5, 13):
        a, b = fast.identify(db.names[i], seed=i), slow.identify(db.names[i], seed=i)
        assert a.family == b.family and a.status == b.status


@pytest.mark.parametrize("strategy", ["all", "50/50", "30/70", "entropy"])
def test_selection_guard_and_ratios(db, strategy):
    sym = db.symbols()
    correct = sym == 1
    top1 = db.topk[:, :, 0].astype(np.int64)
    ent = fbi.label_entropy(top1)
    rng = np.random.default_rng(0)
    S = fbi.select_inputs(
        40, strategy, rng, correct=correct, anchor_correct=correct[0], entropy=ent
    )
    assert len(S) == 40 and len(set(S.tolist())) == 40
    # guard: every model has >= 1 correct and >= 1 wrong input among the queries
    assert correct[:, S].any(1).all() and (~correct[:, S]).any(1).all()
    if strategy in ("50/50", "30/70"):
        share = {"50/50": 0.5, "30/70": 0.3}[strategy]
        assert abs(correct[0, S].mean() - share) <= 0.1
    if strategy == "entropy":
        head = np.argsort(-ent, kind="stable")[: math.ceil(0.5 * db.num_inputs)]
        assert set(S.tolist()) <= set(head.tolist())


def test_guard_impossible_and_optional():
    correct = np.eye(6, dtype=bool)  # each model right on one input only
    with pytest.raises(ValueError, match="cannot give every model"):
        fbi.select_inputs(2, "all", np.random.default_rng(0), correct=correct)
    S = fbi.select_inputs(1, "all", np.random.default_rng(0), correct=correct, guard=False)
    assert S.shape == (1,)


def test_constant_model_and_L1(db):
    const = fbi.Database(
        np.concatenate([db.topk[:8], np.zeros((2, 300, 3), np.int64) + [0, 1, 2]]),
        db.names[:8] + ["c0", "c1"],
        db.families[:8] + ["C", "C"],
        k=3,
        num_classes=10,
        ground_truth=db.ground_truth,
    )
    ow = fbi.OpenWorld(L=1, trials=3, guard=False, selection="all", identify_selection="all").fit(
        const
    )
    r = ow.identify("c0", seed=0)
    # one query: every sequence is constant, H(joint) = 0, so every distance is 0 (a tie), the
    # negatives set tau = 0, and D = 0 >= tau abstains under H0
    assert ow.tau_identify_ == 0.0
    assert r.status == "abstain-h0" and r.family is None
    assert set(r.distances.values()) == {0.0}


def test_openworld_bad_input(db, ow):
    with pytest.raises(ValueError, match="fpr: expected a rate strictly between"):
        fbi.OpenWorld(fpr=1.0)
    with pytest.raises(ValueError, match="fpr: expected a rate strictly between"):
        fbi.OpenWorld(fpr=0)
    with pytest.raises(ValueError, match="selection"):
        fbi.OpenWorld(selection="70/30")
    with pytest.raises(ValueError, match="delegates"):
        fbi.OpenWorld(delegates="middle")
    with pytest.raises(ValueError, match="L: 301 queries asked"):
        fbi.OpenWorld(L=301).fit(db)
    with pytest.raises(ValueError, match="exceeds the database's k"):
        fbi.OpenWorld(k=5).fit(db)
    with pytest.raises(ValueError, match="family"):
        ow.detect("f0", "nope")
    with pytest.raises(ValueError, match="name"):
        ow.detect("not-a-model", "f0")
    with pytest.raises(ValueError, match="fitted with k = 3"):
        ow.identify(db.topk[0][:, :1])  # top-1 outputs for a top-3 open world
    with pytest.raises(ValueError, match="blackbox"):
        ow.identify(db.topk[0][:10])
    import torch

    with pytest.raises(TypeError, match="blackbox"):
        ow.identify(torch.nn.Linear(3, 10))
    with pytest.raises(ValueError, match="anchors"):
        fbi.OpenWorld(L=20, trials=1).fit(db, anchors={"zz": "f0"})
    with pytest.raises(TypeError, match="db: expected a fastfp.fbi.Database"):
        fbi.OpenWorld().fit(np.zeros((2, 3)))
    single = fbi.synthetic_database(1, 3, 50, seed=0)
    with pytest.raises(ValueError, match="two families"):
        fbi.OpenWorld(L=10).fit(single)


def test_query_law_fit_recovers_a_known_law():
    recs = [
        {
            "k": k,
            "n_families": n,
            "family_size": s,
            "queries": 0.01 * s * n / k + {1: 1.0, 3: 0.5}[k],
        }
        for k in (1, 3)
        for n in (2, 5, 9)
        for s in (1.0, 3.0)
    ]
    fit = fbi.fit_query_law(recs)
    assert (
        abs(fit["slope"] - 0.01) < 1e-9 and abs(fit["beta"][1] - 1.0) < 1e-9 and fit["r2"] > 0.999
    )


def test_query_law_experiment_runs(db):
    res = fbi.query_law_experiment(
        db.topk, db.families, k_values=(1, 3), n_families=(2, 5), trials=3
    )
    assert len(res["records"]) == 4 and all(r["queries"] >= 1 for r in res["records"])
    assert set(res["fit"]["beta"]) == {1, 3}


def _one_call_per_family(ow, blackbox, seed):
    """identify() as first written: one pairwise_rajski call per family, then the decision."""
    S = ow.sample(None, np.random.default_rng(seed))
    z = ow._symbols(blackbox, S)
    dist = {
        f: float(
            np.asarray(
                fbi.pairwise_rajski(z[None], ow.sym_[ow.delegates_[f]][:, S], k=ow.k_, exact=True)
            ).min()
        )
        for f in ow.families_
    }
    best = min(dist.values())
    winners = [f for f, d in dist.items() if d == best]
    if best >= ow.tau_identify_:
        return None, "abstain-h0", dist, S
    if len(winners) > 1:
        return None, "abstain-tie", dist, S
    return winners[0], "identified", dist, S


def _tie_heavy_db(k=1):
    """Two families with the very same models and a coarse alphabet: equal distances everywhere."""
    base = fbi.synthetic_database(3, 3, 120, num_classes=4, k=k, accuracy=0.6, noise=0.3, seed=7)
    topk = np.concatenate([base.topk[:3], base.topk[:3], base.topk[3:]])
    fams = ["A"] * 3 + ["B"] * 3 + [base.families[i] for i in range(3, base.num_models)]
    return fbi.Database(
        topk,
        [f"m{i}" for i in range(len(fams))],
        fams,
        k=k,
        num_classes=4,
        ground_truth=base.ground_truth,
    )


def _check_batched_equals_single(ow, db, seeds):
    boxes = [db.topk[i % db.num_models] for i in range(len(seeds))]
    many = ow.identify_many(boxes, seeds=seeds)
    assert len(many) == len(boxes)
    for b, s, r in zip(boxes, seeds, many, strict=True):
        fam, status, dist, S = _one_call_per_family(ow, b, s)
        single = ow.identify(b, seed=s)
        for got in (r, single):
            assert (got.family, got.status) == (fam, status)
            assert got.distances == dist  # exact, not approximate
            assert got.tau == ow.tau_identify_ and np.array_equal(got.queries, S)
    # the fit's identification negatives: stacked delegates == per-family calls, bit for bit
    for S in ow.samples_["identify"]:
        symS = np.ascontiguousarray(ow.sym_[:, S])
        per_family = [fbi.pairwise_rajski(symS, symS[ow.delegates_[f]], k=ow.k_, exact=True)
                      for f in ow.families_]
        old = np.stack([np.asarray(d).min(1) for d in per_family], 1)
        assert np.array_equal(ow._compound(ow.sym_[:, S], S), old)
    return many


@pytest.mark.parametrize("backend", ["auto", pytest.param("reference", marks=pytest.mark.slow)])
def test_identify_many_equals_single_calls(db, backend, monkeypatch):
    if backend == "reference":
        monkeypatch.setenv("FASTFP_BACKEND", "reference")
    L = 20 if backend == "reference" else 60
    ow = fbi.OpenWorld(L=L, trials=2, delegates=DELEGATES_ALL, seed=2).fit(db)
    rng = np.random.default_rng(0)
    seeds = [int(s) for s in rng.integers(0, 50, 12 if backend == "reference" else 30)]
    seeds += seeds[:4]  # repeated seeds share one query set: several black boxes in one call
    _check_batched_equals_single(ow, db, seeds)
    assert ow.identify_many([]) == []


@pytest.mark.parametrize("backend", ["auto", pytest.param("reference", marks=pytest.mark.slow)])
def test_identify_many_ties_equal_single_calls(backend, monkeypatch):
    if backend == "reference":
        monkeypatch.setenv("FASTFP_BACKEND", "reference")
    tdb = _tie_heavy_db()
    ow = fbi.OpenWorld(L=8, trials=2, delegates=DELEGATES_ALL, guard=False, seed=1).fit(tdb)
    ow.tau_identify_ = 1.01  # let ties, not H0, decide
    many = _check_batched_equals_single(ow, tdb, list(range(12)) + [3, 3, 3])
    assert sum(r.status == "abstain-tie" for r in many) >= 3


def test_open_world_distances_do_not_depend_on_the_pairwise_path(db, monkeypatch):
    from fastfp.fbi import information

    ow = fbi.OpenWorld(L=60, trials=2, delegates=DELEGATES_ALL, seed=2).fit(db)
    seeds = [0, 1, 1, 5]
    boxes = [db.topk[i] for i in range(4)]
    before = ow.identify_many(boxes, seeds=seeds)
    monkeypatch.setattr(information, "SMALL", 0)  # default calls now take the blocked matmul
    _check_batched_equals_single(ow, db, seeds)
    after = ow.identify_many(boxes, seeds=seeds)
    S = before[1].queries
    z = ow.sym_[1][S][None]
    dele = ow.sym_[ow.delegate_rows_][:, S]
    blocked = np.asarray(fbi.pairwise_rajski(z, dele, k=ow.k_))
    exact = np.asarray(fbi.pairwise_rajski(z, dele, k=ow.k_, exact=True))
    np.testing.assert_allclose(blocked, exact, atol=1e-6, rtol=0)
    for a, b in zip(
        before, after, strict=True
    ):  # the open world always takes the exact path: same bits
        assert (a.status, a.family, a.distances) == (b.status, b.family, b.distances)


def test_identify_many_bad_input(db, ow):
    with pytest.raises(ValueError, match="seeds: expected one per black box"):
        ow.identify_many(db.names[:2], seeds=[1])
    with pytest.raises(ValueError, match="blackbox"):  # checked before any distance is computed
        ow.identify_many([db.names[0], np.zeros(7, dtype=np.int64)], seeds=[1, 2])


DELEGATES_ALL = ("close", "median", "far")


def test_select_inputs_rejects_mismatched_lengths(db):
    correct = db.symbols() == 1
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="correct"):
        fbi.select_inputs(5, "all", rng, correct=correct[0])
    with pytest.raises(ValueError, match="anchor_correct"):
        fbi.select_inputs(5, "50/50", rng, correct=correct, anchor_correct=correct[0][:7])
    with pytest.raises(ValueError, match="entropy"):
        fbi.select_inputs(5, "entropy", rng, correct=correct, entropy=np.ones(db.num_inputs + 3))


def test_failed_refit_keeps_the_previous_fit(db):
    ow = fbi.OpenWorld(L=20, trials=1, seed=0).fit(db)
    before = dict(ow.__dict__)
    other = fbi.synthetic_database(3, 2, 80, seed=1)
    for anchors in ({"zz": "f0"}, {"f0": "not-a-model"}):
        with pytest.raises(ValueError, match="anchors"):
            ow.fit(other, anchors=anchors)
        assert ow.db is db and ow.__dict__.keys() == before.keys()
        assert all(ow.__dict__[key] is before[key] for key in before)
    assert ow.detect("f1v1", "f1", seed=0).tau == before["tau_"]
    fresh = fbi.OpenWorld(L=20, trials=1)
    with pytest.raises(ValueError, match="anchors"):
        fresh.fit(other, anchors={"zz": "f0"})
    with pytest.raises(RuntimeError, match="call fit"):  # still unfitted, not half fitted
        fresh.detect("f0", "f0")


def test_blackbox_scores_or_odd_shapes_are_not_read_as_labels(db, ow):
    with pytest.raises(
        TypeError, match="blackbox"
    ):  # probabilities, not labels: never truncated to 0
        ow.identify(np.random.default_rng(0).random((db.num_inputs, 3)))
    with pytest.raises(TypeError, match="blackbox"):
        ow.detect(lambda S: np.zeros((len(S), 3)), "f0")
    with pytest.raises(ValueError, match="blackbox"):
        ow.detect(lambda S: np.zeros((len(S), 3, 1), dtype=np.int64), "f0")


def test_seeds_and_rng_are_checked_before_any_work(db, ow):
    with pytest.raises(ValueError, match="seed: expected an int in"):
        ow.detect("f0", "f0", seed=-1)
    with pytest.raises(TypeError, match="seeds: expected an int"):
        ow.identify_many(["f0"], seeds=["a"])
    with pytest.raises(ValueError, match="seed: expected an int in"):
        fbi.OpenWorld(seed=-3)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        fbi.select_inputs(5, "all", 0, correct=db.symbols() == 1)
    with pytest.raises(TypeError, match="delegates: expected a name"):
        fbi.OpenWorld(delegates=3)
    with pytest.raises(TypeError, match="anchors: expected a mapping"):
        fbi.OpenWorld(L=20, trials=1).fit(db, anchors=["f0"])
    with pytest.raises(ValueError, match="seed: expected an int in"):
        fbi.greedy_detect(db.topk, [0, 1], 0, seed=-1)
    with pytest.raises(TypeError, match="seed: expected an int"):
        fbi.greedy_identify(db.topk, db.families, 0, seed=1.5)
    with pytest.raises(TypeError, match="expected a numeric array"):
        fbi.pairwise_rajski(np.array([["a", "b"]]))


@pytest.fixture(params=["ext", "numpy"])
def cover(request, monkeypatch):
    """The guard cover's strategy: the compiled extension (auto) or numpy (FASTFP_BACKEND=torch)."""
    if request.param == "ext" and not hasattr(backend.extension(), "guard_cover"):
        pytest.skip("the compiled extension is not built")
    monkeypatch.setenv("FASTFP_BACKEND", "auto" if request.param == "ext" else "torch")
    return request.param


@pytest.mark.parametrize("strategy", ["all", "50/50", "30/70", "entropy"])
def test_select_inputs_equals_the_literal_twin(db, strategy, cover):
    correct = db.symbols() == 1
    ent = fbi.label_entropy(db.topk[:, :, 0])
    for seed in range(25):
        for L in (12, 40):
            got = fbi.select_inputs(
                L,
                strategy,
                np.random.default_rng(seed),
                correct=correct,
                anchor_correct=correct[seed % 4],
                entropy=ent,
            )
            want = ref.select_inputs(
                L, strategy, np.random.default_rng(seed), correct, correct[seed % 4], ent
            )
            assert got.tolist() == want  # every greedy decision and draw, exactly
            assert backend.last_used("fbi.guard_cover") == cover


@pytest.mark.parametrize("M", [1, 5, 63, 64, 65, 150])
def test_select_inputs_cover_with_constant_models_and_many_words(M, cover):
    rng = np.random.default_rng(M)
    correct = rng.random((M, 90)) < 0.8  # up to three 64-model words, the last one partial
    correct[M // 2] = True  # always right: only its "right" requirement
    if M > 2:
        correct[M - 1] = False  # always wrong
    for seed in range(10):
        for L, strategy in ((30, "all"), (25, "entropy")):
            ent = rng.random(90).round(1)  # ties in the ranking
            got = fbi.select_inputs(
                L, strategy, np.random.default_rng(seed), correct=correct, entropy=ent,
                pool_fraction=0.5,
            )
            want = ref.select_inputs(
                L, strategy, np.random.default_rng(seed), correct, None, ent, 0.5
            )
            assert got.tolist() == want
            assert backend.last_used("fbi.guard_cover") == cover


def test_compiled_cover_checks_its_arrays():
    ext = backend.extension()
    if not hasattr(ext, "guard_cover"):
        pytest.skip("the compiled extension is not built")
    cols = np.random.default_rng(0).integers(0, 2**63, size=(2, 7), dtype=np.uint64)
    right = np.bitwise_or.reduce(cols, axis=1)  # the requirements some column meets
    wrong = ~np.bitwise_and.reduce(cols, axis=1)
    order = np.arange(7, dtype=np.int64)[::-1].copy()
    assert ext.guard_cover(cols, right, wrong, order)[0] == 6  # the first pick: order[0]
    always_right = cols | np.uint64(1)  # model 0 is right on every column
    with pytest.raises(ValueError, match="a model needs a correct or a wrong column"):
        ext.guard_cover(always_right, right, np.ones(2, dtype=np.uint64), order)  # its "wrong"
    with pytest.raises(ValueError, match="order: expected a permutation of 0 .. 6"):
        ext.guard_cover(cols, right, wrong, np.zeros(7, dtype=np.int64))
    with pytest.raises(ValueError, match="order: expected one entry per column"):
        ext.guard_cover(cols, right, wrong, order[:5].copy())
    with pytest.raises(ValueError, match="right, wrong: expected one word per row"):
        ext.guard_cover(cols, right[:1].copy(), wrong, order)
    with pytest.raises(TypeError):  # no silent conversion of another dtype
        ext.guard_cover(cols.astype(np.int64), right, wrong, order)


def test_batched_pairwise_equals_per_batch_calls_and_the_twin():
    rng = np.random.default_rng(6)
    A, B = rng.integers(3, size=(4, 9, 25)), rng.integers(3, size=(4, 2, 25))
    got = fbi.pairwise_rajski(A, B, k=2)
    assert got.shape == (4, 9, 2)
    for i in range(4):
        assert np.array_equal(got[i], fbi.pairwise_rajski(A[i], B[i], k=2, exact=True))
        np.testing.assert_allclose(
            got[i], ref.pairwise_rajski(A[i].tolist(), B[i].tolist()), atol=1e-9, rtol=0
        )
    with pytest.raises(ValueError, match="B: expected"):
        fbi.pairwise_rajski(A, B[:3], k=2)


def test_paper_database_shape():
    db = fbi.paper_database(n_families=4, n_variants=60, num_inputs=500, num_classes=50, seed=1)
    assert db.num_models == 64 and len(db.family_names) == 4 and db.k == 1
    acc = (db.topk[:, :, 0] == db.ground_truth).mean(1)
    for f in db.family_names:  # the paper's filter: at most 15 % relative accuracy drop
        members = db.members(f)
        assert (acc[members] >= 0.85 * acc[db.index(f)] - 1e-12).all()
    ow = fbi.OpenWorld(L=50, trials=2, seed=0).fit(db)
    assert ow.detect(db.names[1], db.families[1], seed=0).family == db.families[1]


def test_entropy_ranking_uses_the_anchors_by_default(db):
    ow = fbi.OpenWorld(L=20, trials=1, seed=0).fit(db)
    anchors = [ow.anchors_[f] for f in ow.families_]
    want = [ref.entropy(db.topk[anchors, x, 0].tolist()) for x in range(db.num_inputs)]
    np.testing.assert_allclose(ow.entropy_, want, atol=1e-12, rtol=0)
    every = fbi.OpenWorld(L=20, trials=1, entropy_models="all", seed=0).fit(db)
    want = [ref.entropy(db.topk[:, x, 0].tolist()) for x in range(db.num_inputs)]
    np.testing.assert_allclose(every.entropy_, want, atol=1e-12, rtol=0)
    assert fbi.OpenWorld().pool_fraction == 0.2
    with pytest.raises(ValueError, match="entropy_models: expected one of"):
        fbi.OpenWorld(entropy_models="vanilla")


def test_trial_needs_a_fit_and_repeats_the_fit(db, ow):
    with pytest.raises(RuntimeError, match="call fit"):
        fbi.OpenWorld().trial(np.random.default_rng(0))
    draws, D, S, D_id = ow.trial(np.random.default_rng(1))
    assert draws.shape == (len(ow.families_), ow.L) and D.shape == (
        db.num_models,
        len(ow.families_),
    )
    sym = db.symbols()
    f = ow.families_[2]
    lit = ref.family_distance(
        sym[5][draws[2]].tolist(), [sym[m][draws[2]].tolist() for m in ow.delegates_[f]]
    )
    assert abs(D[5, 2] - lit) < 1e-9
    lit = ref.family_distance(sym[5][S].tolist(), [sym[m][S].tolist() for m in ow.delegates_[f]])
    assert abs(D_id[5, 2] - lit) < 1e-9


def test_paper_database_bad_input():
    with pytest.raises(ValueError, match="strengths: low"):
        fbi.paper_database(num_inputs=50, n_variants=4, strengths=(0.5, 0.2))
    with pytest.raises(TypeError, match="strengths: expected a"):
        fbi.paper_database(num_inputs=50, n_variants=4, strengths=0.3)
    with pytest.raises(ValueError, match="seed: expected an int in"):
        fbi.paper_database(num_inputs=50, n_variants=4, seed=-1)


@pytest.mark.gpu
def test_open_world_arrays_cupy_in_cupy_out():
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(0)
    A, B = rng.integers(2, size=(3, 50, 40)), rng.integers(2, size=(3, 2, 40))
    got = fbi.pairwise_rajski(cupy.asarray(A), cupy.asarray(B), k=1)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(got), fbi.pairwise_rajski(A, B, k=1), atol=1e-9)
    labels = rng.integers(1000, size=(200, 35))
    ent = fbi.entropy(cupy.asarray(labels))
    assert isinstance(ent, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(ent), fbi.entropy(labels), atol=1e-12)


def test_deployment_queries_are_fixed_and_match_the_literal_draw(db, ow):
    # drawn once from the fit's seed: the same L inputs every time, per family and for identify
    S = ow.queries()
    assert S.shape == (ow.L,) and np.array_equal(S, ow.queries())
    assert np.array_equal(S, ow.sample(None, np.random.default_rng([ow.seed, 1, 0])))
    want = ref.select_inputs(
        ow.L,
        ow.identify_selection,
        np.random.default_rng([ow.seed, 1, 0]),
        ow.correct_,
        None,
        ow.entropy_,
        ow.pool_fraction,
        ow.guard,
    )
    assert S.tolist() == list(want)
    f = ow.families_[2]
    Sf = ow.queries(f)
    assert np.array_equal(Sf, ow.sample(f, np.random.default_rng([ow.seed, 1, 3])))
    assert not np.array_equal(Sf, ow.queries(ow.families_[1]))
    S[:] = 0  # a copy: the held queries cannot be changed from outside
    assert np.array_equal(ow.queries(), ow.sample(None, np.random.default_rng([ow.seed, 1, 0])))
    with pytest.raises(ValueError, match="unknown family"):
        ow.queries("nope")


def test_detect_and_identify_without_seed_ask_the_deployment_queries(db, ow):
    for i, name in enumerate(db.names[:6]):
        f = db.families[i]
        r = ow.detect(name, f)
        assert np.array_equal(r.queries, ow.queries(f))
        z = ow._symbols(name, r.queries)
        d = min(
            ref.rajski_distance(z.tolist(), ow.sym_[j, r.queries].tolist())
            for j in ow.delegates_[f]
        )
        assert abs(r.distance - d) < 1e-9 and r.positive == (d < ow.tau_)
        # a seed still draws fresh queries
        assert not np.array_equal(ow.detect(name, f, seed=i).queries, r.queries)
    boxes = [db.topk[i] for i in range(db.num_models)]
    many = ow.identify_many(boxes)
    for i, r in enumerate(many):
        assert np.array_equal(r.queries, ow.queries())
        S = ow.queries()
        z = ow._symbols(boxes[i], S)
        want = {
            f: min(ref.rajski_distance(z.tolist(), ow.sym_[j, S].tolist()) for j in d)
            for f, d in ow.delegates_.items()
        }
        assert r.distances.keys() == want.keys()
        assert all(abs(r.distances[f] - want[f]) < 1e-9 for f in want)
    # mixed: fixed and seeded black boxes in one call, each as when asked alone
    mixed = ow.identify_many(boxes[:4], seeds=[None, 3, None, 5])
    for b, s, r in zip(boxes[:4], [None, 3, None, 5], mixed, strict=True):
        one = ow.identify(b, seed=s)
        assert np.array_equal(one.queries, r.queries) and one.distances == r.distances


@pytest.mark.parametrize("p_right", [0.5, 0.99, 0.01])
def test_ratio_draws_from_a_long_pool_equal_the_literal_twin(p_right, cover):
    # 8 L < N: the split is read from a head of the permutation, or (a skewed anchor: the head
    # runs short of one kind) from all of it; both give the literal draws
    rng = np.random.default_rng(int(p_right * 100))
    correct = rng.random((7, 3000)) < 0.7
    anchor = rng.random(3000) < p_right
    for seed in range(6):
        for strategy in ("50/50", "30/70"):
            got = fbi.select_inputs(20, strategy, np.random.default_rng(seed), correct=correct,
                                    anchor_correct=anchor)
            want = ref.select_inputs(20, strategy, np.random.default_rng(seed), correct, anchor)
            assert got.tolist() == want


# --- the distance setting -------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["mi", "mi_min"])
def test_open_world_distance_setting_matches_the_literal_twin(db, distance):
    """Scores are smaller-is-closer for every distance (-I for "mi"): delegates, compound
    distance (the max of I over delegates), tau and the identification argmin follow."""
    sign = -1.0 if distance == "mi" else 1.0
    ow = fbi.OpenWorld(L=60, trials=3, delegates=("close", "far"), seed=1, distance=distance)
    ow.fit(db)
    assert ow.report()["distance"] == distance
    sym = db.symbols()

    def score(a, b):
        return sign * ref.distance(a.tolist(), b.tolist(), distance)

    for f in ow.families_:
        members = db.members(f)
        d = [score(sym[ow.anchors_[f]], sym[m]) for m in members]
        order = [members[i] for i in np.argsort(d, kind="stable")]
        assert ow.delegates_[f] == list(dict.fromkeys([order[0], order[-1]]))
    neg, pos = [], []
    for t, draw in enumerate(ow.samples_["detect"]):
        for j, (f, S) in enumerate(draw.items()):
            for m in range(db.num_models):
                want = min(score(sym[m][S], sym[x][S]) for x in ow.delegates_[f])
                assert abs(ow.detect_distances_[t][m, j] - want) < 1e-12
                (pos if db.families[m] == f else neg).append(want)
    assert abs(ow.tau_ - ref.threshold(neg, ow.fpr)) < 1e-12
    assert ow.detect_tpr_ > 0.9
    det = ow.detect(db.names[5], db.families[5], seed=3)
    S = det.queries
    want = min(score(sym[5][S], sym[x][S]) for x in ow.delegates_[db.families[5]])
    assert abs(det.distance - want) < 1e-12 and det.positive == (det.distance < ow.tau_)
    for i in (0, 6, 13):
        got = ow.identify(db.names[i], seed=i)
        assert got.family == ref.identify_decision(got.distances, got.tau)
        S = got.queries
        for f, d in got.distances.items():
            assert abs(d - min(score(sym[i][S], sym[x][S]) for x in ow.delegates_[f])) < 1e-12
    assert np.mean([ow.identify(n, seed=i).family == f
                    for i, (n, f) in enumerate(zip(db.names, db.families, strict=True))]) > 0.8


def test_open_world_mi_scores_are_minus_the_mutual_information(db):
    raj = fbi.OpenWorld(L=50, trials=2, seed=4).fit(db)
    mi = fbi.OpenWorld(L=50, trials=2, seed=4, distance="mi").fit(db)
    # the same draws (the distance changes no random draw); the scores are -I
    for a, b in zip(raj.samples_["detect"], mi.samples_["detect"], strict=True):
        assert all(np.array_equal(a[f], b[f]) for f in a)
    r = mi.identify(db.names[2], seed=0)
    S = r.queries
    sym = db.symbols()
    best = min(r.distances, key=r.distances.get)
    assert r.distances[best] < 0  # -I: the most informative family scores lowest
    x = mi.delegates_[best][0]
    assert abs(-r.distances[best] - mutual_info_score(sym[2][S], sym[x][S])) < 1e-12


def test_open_world_distance_checked_first():
    with pytest.raises(ValueError, match="distance: expected one of 'rajski', 'mi', 'mi_min'"):
        fbi.OpenWorld(L=0, distance="mutual_information")  # before L is even looked at


def test_the_actual_fpr_of_the_threshold_is_reported_never_the_target():
    # small L, top-1: few distinct distances, so the conservative threshold (P(D < tau) <= fpr)
    # reaches less than the 5 % target; the open world says how much, everywhere it reports tau
    db = fbi.synthetic_database(6, 5, 200, num_classes=5, k=1, accuracy=0.8, noise=0.1, seed=2)
    ow = fbi.OpenWorld(L=10, trials=3, seed=0).fit(db)
    neg = np.concatenate([d[y == 0] for d, y in ow.detection_scores(include_delegates=True)])
    assert ow.fpr_ == float(np.mean(neg < ow.tau_)) and ow.fpr_ <= ow.fpr
    assert ow.fpr_ < ow.fpr  # ties at tau: the target is not reached, and that is visible
    assert 0.0 <= ow.fpr_identify_ <= ow.fpr
    rep = ow.report()
    assert rep["actual_fpr"] == ow.fpr_ and rep["actual_fpr_identify"] == ow.fpr_identify_
    assert rep["fpr"] == 0.05 and rep["threshold_rule"].startswith("conservative")
    det = ow.detect(db.names[0], db.families[0])
    assert det.fpr == ow.fpr_
    assert ow.identify(db.names[0]).fpr == ow.fpr_identify_
