"""Baselines for the FBI open world: what a user writes without fastfp.

Both draw the queries with the literal selection (``fastfp.reference.fbi.select_inputs``: a
Python greedy cover over the (2M, P) requirement matrix, then the 50/50 or 30/70 split), with
the same random stream as :meth:`fastfp.fbi.OpenWorld.trial`, so their draws and distances can
be compared with fastfp's exactly.

- :func:`trial_literal`: distances by the literal twin (``Counter`` + sklearn), model by model.
- :func:`trial_numpy`: distances by plain vectorised numpy (one ``np.bincount`` of combined
  codes per family, :func:`bench.baselines.fbi.pairwise_rajski_bincount`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fastfp.reference import fbi as ref

from .fbi import pairwise_rajski_bincount


def _draw(ow, family, rng) -> np.ndarray:
    strategy = ow.identify_selection if family is None else ow.selection
    anchor = None if family is None else ow.correct_[ow.anchors_[family]]
    S = ref.select_inputs(
        ow.L, strategy, rng, ow.correct_, anchor, ow.entropy_, ow.pool_fraction, ow.guard
    )
    return np.asarray(S, dtype=np.int64)


def _trial(ow, rng, distances: Callable, families=None):
    """(draws, detection distances (M, nF'), identification queries, identification distances)
    over ``families`` (default all; a prefix times a sample of the literal trial)."""
    fams = ow.families_ if families is None else families
    sym = ow.sym_
    draws = np.stack([_draw(ow, f, rng) for f in fams])
    D = np.stack(
        [
            distances(sym[:, S], sym[ow.delegates_[f]][:, S]).min(1)
            for f, S in zip(fams, draws, strict=True)
        ],
        1,
    )
    S = _draw(ow, None, rng)
    d = distances(sym[:, S], sym[ow.delegate_rows_][:, S])
    D_id = np.stack(
        [
            d[:, ow.delegate_starts_[j] : ow.delegate_starts_[j] + len(ow.delegates_[f])].min(1)
            for j, f in enumerate(ow.families_)
        ],
        1,
    )
    return draws, D, S, D_id


def trial_numpy(ow, rng):
    """One open-world fit trial in plain numpy."""
    K = ow.k_ + 1
    return _trial(ow, rng, lambda A, B: pairwise_rajski_bincount(A, B, K))


def trial_literal(ow, rng, families: int | None = None, models: int | None = None):
    """One trial by the literal twin; ``families`` / ``models`` restrict it to a sample (the
    benchmark extrapolates): the first families' draws, the first models' distances."""
    M = ow.sym_.shape[0] if models is None else models

    def distances(A, B):
        return np.asarray(ref.pairwise_rajski(A[:M].tolist(), B.tolist()))

    fams = ow.families_ if families is None else ow.families_[:families]
    return _trial(ow, rng, distances, fams)


def family_distances(ow, d) -> dict:
    """The compound distance per family: the min of ``d`` over that family's delegates."""
    return {
        f: float(d[ow.delegate_starts_[j] : ow.delegate_starts_[j] + len(ow.delegates_[f])].min())
        for j, f in enumerate(ow.families_)
    }


def identify_numpy(ow, boxes, seeds):
    """identify_many's work one black box at a time: literal draw, numpy distances, decision."""
    out = []
    K = ow.k_ + 1
    for box, seed in zip(boxes, seeds, strict=True):
        S = _draw(ow, None, np.random.default_rng(seed))
        z = ref.surjection(np.asarray(box)[S].tolist(), ow.reference_[S].tolist(), ow.k_)
        d = pairwise_rajski_bincount(np.asarray([z]), ow.sym_[ow.delegate_rows_][:, S], K)[0]
        dist = family_distances(ow, d)
        out.append(ref.identify_decision(dist, ow.tau_identify_))
    return out


def detect_numpy(ow, box, family, seed):
    """detect's work: literal draw, numpy distance to the family's delegates, decision."""
    S = _draw(ow, family, np.random.default_rng(seed))
    z = ref.surjection(np.asarray(box)[S].tolist(), ow.reference_[S].tolist(), ow.k_)
    d = pairwise_rajski_bincount(np.asarray([z]), ow.sym_[ow.delegates_[family]][:, S], ow.k_ + 1)[
        0
    ].min()
    return float(d) < ow.tau_, float(d)
