"""The weight-noise gradient mean used by rc / rcgm / ltrc, from :mod:`fastfp.noise`.

Kept behind one function so the engine does not care which implementation serves it; the
paper-literal twin in :mod:`fastfp.reference.noise` serves when ``fastfp.noise`` is not importable
(it draws the very same noise, only slower).
"""

from __future__ import annotations


def _module():
    try:
        from .. import noise
    except ModuleNotFoundError as exc:
        if exc.name != "fastfp.noise":
            raise
        from ..reference import noise
    return noise


def grad_mean(model, x, labels, delta, q, seed, offset=0):
    return _module().grad_mean(model, x, labels, delta, q, seed, offset=offset)
