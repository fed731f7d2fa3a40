"""Batch sizing: how many examples (and noisy copies) one engine call holds, from free memory."""

from __future__ import annotations

import os

import torch

SMALL_INPUT = 64 * 64  # pixels: up to here a GPU step is dominated by kernel launches


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def auto_batch_size(per_example: int, num: int, device: torch.device) -> int:
    """Examples per batch: a quarter of free memory over ~4x the forward activations per example
    (forward + saved tensors + backward), capped (CPU gains nothing from huge batches)."""
    cap = 1024 if device.type == "cuda" else 256
    fit = (free_bytes(device) // 4) // max(4 * per_example, 1)
    return int(max(1, min(num, cap, fit)))


def batched_copies(per_example: int, batch: int, q: int, device: torch.device,
                   pixels: int) -> int:
    """Noisy copies per vmap call. Small inputs on a GPU are launch-bound, so the copies are
    evaluated together when their activations fit in an eighth of free memory; elsewhere one
    after the other (on CPU the grouped kernels vmap produces are slower: measured)."""
    if q == 1 or device.type != "cuda" or pixels > SMALL_INPUT:
        return 1
    fit = (free_bytes(device) // 8) // max(4 * per_example * batch, 1)
    return int(max(1, min(q, fit)))
