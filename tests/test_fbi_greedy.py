"""Walled-garden greedy detection / identification: fast engine == literal twin, query by query."""

import numpy as np
import pytest
import torch

from fastfp import backend, fbi
from fastfp.fbi import greedy
from fastfp.reference import fbi as ref


def _tuples(outputs, k):
    out = np.asarray(outputs)
    if out.ndim == 2:
        out = out[:, :, None]
    return [[tuple(o[:k]) for o in model] for model in out.tolist()]


def _cases():
    rng = np.random.default_rng(0)
    yield "random", rng.integers(0, 4, (14, 25, 3)), [i // 3 for i in range(14)]
    yield "top1", rng.integers(0, 3, (10, 40)), [i % 4 for i in range(10)]
    same = rng.integers(0, 5, (8, 12, 2))
    same[1] = same[0]  # identical models in the same family
    same[5] = same[2]  # identical models in different families: detection can fail
    yield "identical", same, [0, 0, 1, 1, 2, 2, 3, 3]
    const = np.zeros((6, 9, 1), dtype=np.int64)
    const[3:, 4] = 1  # one single informative input
    yield "constant", const, [0, 0, 0, 1, 1, 1]
    yield "single-input", rng.integers(0, 3, (7, 1, 1)), [0, 1, 2, 3, 4, 5, 6]
    yield "singletons", rng.integers(0, 10, (9, 30, 10)), list(range(9))


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
@pytest.mark.parametrize("k", [1, 2, 10])
@pytest.mark.parametrize("seed", [None, 3])
def test_detect_and_identify_match_reference(case, k, seed):
    _, outputs, families = case
    k = min(k, np.asarray(outputs).shape[-1] if np.asarray(outputs).ndim == 3 else 1)
    tup = _tuples(outputs, k)
    enc = fbi.encode(outputs, k)
    for fam in sorted(set(families)):
        members = [m for m, f in enumerate(families) if f == fam]
        for bb in range(len(tup)):
            got = fbi.greedy_detect(enc, members, bb, seed=seed)
            want = ref.greedy_detect(tup, members, tup[bb], seed=seed)
            assert (got.decision, got.queries, got.family_left, got.others_left) == want
            if bb in members and got.decision != "fail":
                assert got.decision == "positive"
            if bb not in members and got.decision != "fail":
                assert got.decision == "negative"
    for bb in range(len(tup)):
        got = fbi.greedy_identify(enc, families, bb, seed=seed)
        want = ref.greedy_identify(tup, families, tup[bb], seed=seed)
        assert (got.family, got.status, got.queries, got.candidates) == want
        if got.status == "identified":
            assert got.family == families[bb]
        seq = fbi.sequential_identify(enc, families, bb, seed=seed)
        want_seq = ref.sequential_identify(
            tup, families, list(dict.fromkeys(families)), tup[bb], seed=seed
        )
        assert (seq.family, seq.L, [d[:2] for d in seq.decisions]) == want_seq


def test_blackbox_forms_agree_and_unknown_blackbox():
    rng = np.random.default_rng(1)
    outputs = rng.integers(0, 4, (12, 30, 2))
    fam = [0] * 4 + [1] * 8
    by_index = fbi.greedy_detect(outputs, list(range(4)), 2)
    by_array = fbi.greedy_detect(
        torch.from_numpy(outputs), torch.arange(4), torch.from_numpy(outputs[2])
    )
    calls = []
    by_call = fbi.greedy_detect(
        outputs, np.arange(12) < 4, lambda x: calls.append(x) or outputs[2][x]
    )
    assert by_index.queries == by_array.queries == by_call.queries == calls
    assert by_index.decision == "positive"
    # a black box answering like no known model: no family candidate survives
    alien = np.full((30, 2), 99)
    assert fbi.greedy_detect(outputs, list(range(4)), alien).decision == "negative"
    r = fbi.greedy_identify(outputs, fam, alien)
    assert r.status == "unknown" and r.family is None and r.L == 1


def test_fail_when_models_are_indistinguishable():
    outputs = np.array([[[0], [1], [2]], [[0], [1], [2]], [[1], [1], [0]]])
    r = fbi.greedy_detect(outputs, [0], 0)
    assert r.decision == "fail" and r.family_left == [0] and r.others_left == [1]
    r = fbi.greedy_identify(outputs, ["a", "b", "c"], 1)
    assert r.status == "fail" and r.candidates == [0, 1]
    r = fbi.greedy_detect(outputs, [2], 0, max_queries=0)
    assert r.decision == "fail" and r.L == 0


def test_family_is_everything_is_positive_at_once():
    outputs = np.random.default_rng(0).integers(0, 3, (4, 5))
    assert fbi.greedy_detect(outputs, [0, 1, 2, 3], 1).decision == "positive"
    assert fbi.greedy_identify(outputs, ["x"] * 4, 1).L == 0


def test_incremental_counts_equal_from_scratch():
    rng = np.random.default_rng(7)
    enc = fbi.encode(rng.integers(0, 3, (40, 60, 2)))
    in_f = torch.zeros(40, dtype=torch.bool)
    in_f[:10] = True
    state = greedy._DetectState(enc, in_f)
    for _step in range(6):
        gone = torch.from_numpy(rng.random(40) < 0.15) & state.cand
        state.remove(gone)
        fresh = fbi.detection_scores(enc, in_f, state.cand)
        assert torch.equal(state.num, fresh)
        # and against eq. (7) literally
        tup = _tuples(enc.labels.numpy(), 2)
        F = [m for m in range(40) if in_f[m] and state.cand[m]]
        others = [m for m in range(40) if not in_f[m] and state.cand[m]]
        if F:
            want = [ref.detection_score(tup, x, F, others) * len(F) for x in range(60)]
            assert fresh.tolist() == [int(w) for w in want]
    ist = greedy._IdentifyState(enc, torch.arange(40) % 5, 5)
    for _step in range(5):
        ist.remove(torch.from_numpy(rng.random(40) < 0.2) & ist.cand)
        fresh = greedy._IdentifyState(enc, torch.arange(40) % 5, 5)
        fresh.cand = ist.cand.clone()
        fresh.rebuild()
        assert torch.equal(ist.s, fresh.s) and torch.equal(ist.t, fresh.t)


def test_detection_scores_records_backend_and_excludes():
    outputs = np.random.default_rng(0).integers(0, 3, (6, 8))
    num = fbi.detection_scores(outputs, [0, 1], exclude=np.arange(8) < 2)
    assert num[:2].tolist() == [-1, -1]
    assert backend.last_used("fbi.detection_scores") == "torch"


def test_encode_wide_labels_falls_back_to_row_unique():
    rng = np.random.default_rng(3)
    outputs = rng.integers(0, 1000, (5, 20, 10))  # 1000^10 does not fit one int64 key
    outputs[1] = outputs[0]
    enc = fbi.encode(outputs)
    assert torch.equal(enc.codes[0], enc.codes[1])
    assert enc.num_groups == int(
        sum(len({tuple(r) for r in outputs[:, x].tolist()}) for x in range(20))
    )


def test_greedy_bad_input():
    outputs = np.zeros((3, 4, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="family"):
        fbi.greedy_detect(outputs, [], 0)
    with pytest.raises(ValueError, match="family"):
        fbi.greedy_detect(outputs, [5], 0)
    with pytest.raises(ValueError, match="blackbox"):
        fbi.greedy_detect(outputs, [0], np.zeros((5, 2), int))
    with pytest.raises(ValueError, match="blackbox"):
        fbi.greedy_detect(outputs, [0], 7)
    with pytest.raises(ValueError, match="fewer than k = 3"):
        fbi.greedy_detect(outputs, [0], 0, k=3)
    with pytest.raises(ValueError, match="families"):
        fbi.greedy_identify(outputs, [0, 1], 0)
    with pytest.raises(ValueError, match="order"):
        fbi.sequential_identify(outputs, [0, 1, 1], 0, order=[0, 9])
    with pytest.raises(ValueError, match="outputs"):
        fbi.greedy_detect(np.zeros((3,), int), [0], 0)
    with pytest.raises(ValueError, match="blackbox"):
        fbi.greedy_detect(np.arange(24).reshape(3, 4, 2), [0], lambda x: [0])
    with pytest.raises(TypeError, match="blackbox"):
        fbi.greedy_identify(outputs, [0, 1, 1], torch.nn.Linear(2, 2))  # answers top-1 for k = 2


@pytest.mark.gpu
def test_cuda_engine_matches_cpu():
    rng = np.random.default_rng(11)
    outputs = rng.integers(0, 4, (30, 80, 2))
    fam = [i // 5 for i in range(30)]
    cpu = [fbi.greedy_identify(outputs, fam, bb, seed=1) for bb in range(0, 30, 7)]
    gpu_out = torch.from_numpy(outputs).cuda()
    gpu = [fbi.greedy_identify(gpu_out, fam, bb, seed=1) for bb in range(0, 30, 7)]
    assert [(r.family, r.queries) for r in cpu] == [(r.family, r.queries) for r in gpu]
    num = fbi.detection_scores(gpu_out, list(range(5)))
    assert (
        num.is_cuda and num.cpu().tolist() == fbi.detection_scores(outputs, list(range(5))).tolist()
    )
    assert backend.last_used("fbi.detection_scores") in ("cupy", "torch")
    d = fbi.greedy_detect(gpu_out, list(range(5)), 3)
    assert d.decision == fbi.greedy_detect(outputs, list(range(5)), 3).decision


def test_reference_backend_dispatch(monkeypatch):
    rng = np.random.default_rng(5)
    outputs = rng.integers(0, 3, (9, 20, 2))
    fam = [i // 3 for i in range(9)]
    fast = [fbi.greedy_identify(outputs, fam, bb) for bb in range(9)]
    fast_d = [
        fbi.greedy_detect(outputs, [0, 1, 2], lambda x, bb=bb: outputs[bb][x]) for bb in range(9)
    ]
    monkeypatch.setenv("FASTFP_BACKEND", "reference")
    slow = [fbi.greedy_identify(outputs, fam, bb) for bb in range(9)]
    assert backend.last_used("fbi.greedy_identify") == "reference"
    slow_d = [
        fbi.greedy_detect(outputs, [0, 1, 2], lambda x, bb=bb: outputs[bb][x]) for bb in range(9)
    ]
    assert backend.last_used("fbi.greedy_detect") == "reference"
    assert [(r.family, r.status, r.queries) for r in fast] == [
        (r.family, r.status, r.queries) for r in slow
    ]
    assert [(r.decision, r.queries) for r in fast_d] == [(r.decision, r.queries) for r in slow_d]


def test_bool_masks_of_another_length_are_rejected():
    outputs = np.random.default_rng(0).integers(0, 3, (5, 8))
    with pytest.raises(ValueError, match="family"):  # was read as the indices [1, 0, 1]
        fbi.greedy_detect(outputs, np.array([True, False, True]), 0)
    with pytest.raises(ValueError, match="exclude"):
        fbi.detection_scores(outputs, [0], exclude=np.array([True, True]))
    with pytest.raises(ValueError, match="candidates"):
        fbi.detection_scores(outputs, [0], candidates=torch.ones(6, dtype=torch.bool))
    # masks of the right length and index lists still work
    assert (
        fbi.greedy_detect(outputs, np.arange(5) < 2, 0).queries
        == fbi.greedy_detect(outputs, [0, 1], 0).queries
    )
