"""Characteristic examples (Wang et al., IJCAI'21): ``generate`` fingerprints, ``verify`` models.

Four methods: ``vanilla`` (C-examples, eq. 2), ``rc`` (fresh weight noise U(-delta, delta) each
step), ``rcgm`` (mean input gradient over q noisy copies per step) and ``ltrc`` (rcgm followed by a
DCT high-pass of band k after every step, eq. 3-4).

Modules, one job each: :mod:`.api` (generate, verify), :mod:`.verdict` (copy or not, with a
p-value), :mod:`.settings` and :mod:`.defaults` (the
validated settings and the paper's defaults), :mod:`.batching` (batch sizes from free memory),
:mod:`.gradmean` (the mean gradient over q noisy copies), :mod:`.engine` (the one step and its
loop, with optional CUDA-graph capture), :mod:`.sharded` (generation across torchrun processes),
:mod:`.checks` (argument checks). The literal one-example twin is
:mod:`fastfp.reference.cexamples`.
"""

from __future__ import annotations

from . import defaults
from .api import generate
from .settings import METHODS, PRECISIONS, Settings, settings_for
from .verdict import Verdict, verdict, verify

__all__ = ["generate", "verify", "verdict", "Verdict", "settings_for", "Settings", "METHODS",
           "PRECISIONS", "defaults"]
