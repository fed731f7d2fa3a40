"""CUDA-graph path (placeholder until written): never taken off CUDA."""
from __future__ import annotations


def wanted(graphs, model, input_shape, device) -> bool:
    return False


def run_batch(model, x, y, settings, on_finish=None):
    return None
