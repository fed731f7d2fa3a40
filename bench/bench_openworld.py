"""FBI open world on a database of the paper's shape vs the code a user writes otherwise.

The database is ``fastfp.fbi.paper_database()``: 1,081 top-1 models in 35 families on 20,000
inputs (QUICK and --benchmark-disable: smaller). ``OpenWorld(L=100)`` with the paper's
defaults (30/70 detection, Entropy identification, close delegate). Groups (same run):

- ``fbi open world trial vs literal``: one fit trial (``OpenWorld.trial``: 35 detection draws
  + distances, one identification draw + distances) vs the literal twin, timed on one family's
  draw and a sample of models and extrapolated. Target <= 0.1 s on CPU.
- ``fbi open world trial vs numpy``: the same trial vs plain numpy (literal draws, bincount
  distances), timed whole. Target <= 0.1 s on CPU.
- ``fbi open world identify_many``: 1,000 black boxes (database outputs) on the deployment
  queries (``OpenWorld.queries()``, drawn once as Alice does) vs a numpy loop on the same
  queries, timed on a sample of boxes and extrapolated. Target <= 1 s on CPU.
- ``fbi open world identify_many fresh draws``: the same with one fresh query set per box
  (``seeds=``) vs the literal draws + numpy, extrapolated from a sample.
- ``fbi open world detect``: one black box after fitting (deployment queries) vs numpy on the
  same queries. Target <= 1 ms on CPU.

Correctness (also under --benchmark-disable): fastfp's draws equal the baselines' exactly and
its distances equal them to 1e-6.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch

from fastfp import fbi
from fastfp.reference import fbi as ref

from .baselines import openworld as base
from .baselines.fbi import pairwise_rajski_bincount
from .common import QUICK, measure

CPU = torch.device("cpu")


def _disabled(request) -> bool:
    return bool(request.config.getoption("benchmark_disable", default=False))


@functools.lru_cache(maxsize=2)
def _fitted(small: bool):
    if small:
        db = fbi.paper_database(n_families=5, n_variants=60, num_inputs=2000, num_classes=100)
        L = 60
    else:
        db = fbi.paper_database()
        L = 100
    return fbi.OpenWorld(L=L, trials=1, seed=0).fit(db)


def _ow(request):
    return _fitted(_disabled(request) or QUICK)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _same_trial(got, want, families=None, models=None):
    draws, D, S, D_id = got
    wd, wD, wS, wD_id = want
    n = wd.shape[0] if families is None else families
    m = D.shape[0] if models is None else models
    assert np.array_equal(draws[:n], wd)
    np.testing.assert_allclose(D[:m, :n], wD[:m], atol=1e-6, rtol=0)
    if families is None:  # a sampled literal trial draws its identification queries earlier
        assert np.array_equal(S, wS)
        np.testing.assert_allclose(D_id[:m], wD_id[:m], atol=1e-6, rtol=0)


@pytest.mark.parametrize("role", ["baseline", "fastfp"])
def test_trial_vs_literal(benchmark, request, role):
    ow = _ow(request)
    M, nF = ow.sym_.shape[0], len(ow.families_)
    group = f"fbi open world trial vs literal {M} models {nF} families L={ow.L}"
    models = 20 if _disabled(request) else 100
    if role == "baseline":

        def sample():
            return base.trial_literal(ow, np.random.default_rng(1), families=1, models=models)

        t = min(_timed(sample) for _ in range(2))
        scale = (nF + 1) / 2 * M / models  # one of nF detection draws + the identification draw
        got = measure(
            benchmark,
            sample,
            group=group,
            role=role,
            device=CPU,
            rounds=1,
            warmup=0,
            baseline_extrapolated_s=t * scale,
            extrapolation=f"1 of {nF} families, {models} of {M} models, x {scale:.0f}",
        )
        _same_trial(ow.trial(np.random.default_rng(1)), got, families=1, models=models)
    else:
        got = measure(
            benchmark,
            lambda: ow.trial(np.random.default_rng(1)),
            group=group,
            role=role,
            device=CPU,
            rounds=5,
            shape=[M, ow.sym_.shape[1], ow.L],
            target_max_s={"cpu": 0.1},
        )
        want = base.trial_literal(ow, np.random.default_rng(1), families=1, models=10)
        _same_trial(got, want, families=1, models=10)


@pytest.mark.parametrize("role", ["baseline", "fastfp"])
def test_trial_vs_numpy(benchmark, request, role):
    ow = _ow(request)
    M, nF = ow.sym_.shape[0], len(ow.families_)
    group = f"fbi open world trial vs numpy {M} models {nF} families L={ow.L}"

    def numpy_trial(rng):
        return base.trial_numpy(ow, rng)

    fn, other = (numpy_trial, ow.trial) if role == "baseline" else (ow.trial, numpy_trial)
    extra = {} if role == "baseline" else {"target_max_s": {"cpu": 0.1}}
    got = measure(
        benchmark,
        lambda: fn(np.random.default_rng(2)),
        group=group,
        role=role,
        device=CPU,
        rounds=1 if role == "baseline" else 5,
        warmup=0,
        **extra,
    )
    _same_trial(got, other(np.random.default_rng(2)))


def _boxes(ow, n):
    rows = np.random.default_rng(3).integers(ow.db.num_models, size=n)
    return [ow.db.topk[r] for r in rows], list(range(n))


def _distances_numpy(ow, box, S, rows):
    """Plain numpy on given queries: literal surjection, bincount distances to ``rows``."""
    z = ref.surjection(np.asarray(box)[S].tolist(), ow.reference_[S].tolist(), ow.k_)
    return pairwise_rajski_bincount(np.asarray([z]), ow.sym_[rows][:, S], ow.k_ + 1)[0]


def _identify_numpy_fixed(ow, boxes):
    """identify_many's work on the deployment queries, one black box at a time in numpy."""
    S = ow.queries()
    out = []
    for box in boxes:
        d = _distances_numpy(ow, box, S, ow.delegate_rows_)
        dist = base.family_distances(ow, d)
        out.append(ref.identify_decision(dist, ow.tau_identify_))
    return out


@pytest.mark.parametrize("role", ["baseline", "fastfp"])
@pytest.mark.parametrize("draws", ["deployment", "fresh"])
def test_identify_many(benchmark, request, role, draws):
    ow = _ow(request)
    fresh = draws == "fresh"
    n = 40 if _disabled(request) else 1000
    boxes, seeds = _boxes(ow, n)
    seeds = seeds if fresh else None
    group = f"fbi open world identify_many {n} black boxes L={ow.L}" + (
        " fresh draws" if fresh else ""
    )
    sample = min(n, 20 if fresh else 200)

    def numpy_run(k):
        if fresh:
            return base.identify_numpy(ow, boxes[:k], seeds[:k])
        return _identify_numpy_fixed(ow, boxes[:k])

    def fast_run(k):
        return ow.identify_many(boxes[:k], seeds=None if seeds is None else seeds[:k])

    if role == "baseline":
        t = min(_timed(lambda: numpy_run(sample)) for _ in range(2))
        got = measure(
            benchmark,
            lambda: numpy_run(sample),
            group=group,
            role=role,
            device=CPU,
            rounds=1,
            warmup=0,
            baseline_extrapolated_s=t * n / sample,
            extrapolation=f"sample of {sample} boxes x {n / sample:.0f}",
        )
        fast = fast_run(sample)
    else:
        extra = {} if fresh else {"target_max_s": {"cpu": 1.0}}
        fast = measure(
            benchmark,
            lambda: fast_run(n),
            group=group,
            role=role,
            device=CPU,
            rounds=3,
            **extra,
        )[:sample]
        got = numpy_run(sample)
    assert [r.family for r in fast] == got


@pytest.mark.parametrize("role", ["baseline", "fastfp"])
def test_detect_one(benchmark, request, role):
    ow = _ow(request)
    name = ow.db.names[1]
    family = ow.db.families[1]
    box = ow.db.topk[1]
    group = f"fbi open world detect one black box L={ow.L}"
    S = ow.queries(family)

    def numpy_detect():
        d = float(_distances_numpy(ow, box, S, ow.delegates_[family]).min())
        return d < ow.tau_, d

    if role == "baseline":
        positive, d = measure(benchmark, numpy_detect, group=group, role=role, device=CPU, rounds=5)
    else:
        ow.detect(box, family)  # the deployment queries are drawn on first use
        r = measure(
            benchmark,
            lambda: ow.detect(box, family),
            group=group,
            role=role,
            device=CPU,
            rounds=20,
            target_max_s={"cpu": 1e-3},
        )
        positive, d = numpy_detect()
        assert abs(r.distance - d) < 1e-6 and r.positive == positive
        assert np.array_equal(r.queries, S)
    assert name.endswith(family)


@functools.lru_cache(maxsize=2)
def _protocol_db(small: bool):
    """A paper-shaped database for the paper-tables row: 200 models x 2,000 inputs (QUICK and
    --benchmark-disable: 60 x 600)."""
    if small:
        return fbi.paper_database(n_families=6, n_variants=54, num_inputs=600, num_classes=100)
    return fbi.paper_database(n_families=7, n_variants=193, num_inputs=2000)


@pytest.mark.parametrize("role", ["baseline", "fastfp"])
def test_paper_tables_authors_vs_paper(benchmark, request, role):
    """``paper_tables(protocol="authors")`` (fastfp) against ``protocol="paper"`` (baseline) on
    the same database in the same run: the authors' protocol must stay within 2x of the
    paper's (speed-up >= 0.5); trials 2, L = 20, 50, 100."""
    from fastfp.fbi.protocol import paper_tables

    db = _protocol_db(_disabled(request) or QUICK)
    protocol = "paper" if role == "baseline" else "authors"
    group = (f"fbi paper-tables authors vs paper {db.num_models} models {db.num_inputs} "
             f"inputs trials 2")
    extra = {} if role == "baseline" else {"target_speedup": {"cpu": 0.5, "cuda": 0.5}}
    t = measure(benchmark, lambda: paper_tables(db, trials=2, Ls=(20, 50, 100),
                                                protocol=protocol),
                group=group, role=role, device=CPU, rounds=1 if role == "baseline" else 3,
                warmup=0, models=db.num_models, inputs=db.num_inputs, **extra)
    assert t["database"]["protocol"] == protocol
    for name, c in t["cells"].items():
        assert 0.0 <= c["mean"] <= 1.0 and c["fpr"] <= 1.0, name
