"""The surjection S_k of the FBI paper (eq. 14): a top-k output -> the rank of the reference class.

``S_k(m(x)) = j`` if the reference class c(x) is the j-th label of the top-k output (1-based),
``0`` if it is not among the first k labels. It maps the (C)_k possible top-k outcomes onto
{0, 1, ..., k}, so that the joint statistics of two models fit in a (k+1) x (k+1) table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fastfp import _validate

from . import arrays
from .arrays import Array


def surjection(topk_labels: Array, reference: Array, k: int) -> Array:
    """S_k of each top-k output.

    topk_labels: (..., c) integer labels, best first, c >= k (only the first k columns count);
        a top-1 output may also be given without the last axis (same shape as ``reference``).
    reference: (...) reference classes c(x) (ground truth or majority vote), broadcastable to
        ``topk_labels.shape[:-1]``.
    Returns (...) uint8 symbols in 0..k, of the kind (numpy / torch / cupy) of ``topk_labels``.
    """
    kind = arrays.kind_of(topk_labels)
    labels = arrays.as_tensor("topk_labels", topk_labels)
    ref = arrays.as_tensor("reference", reference)
    k = _validate.integer("k", k, lo=1, hi=254)
    if labels.dim() == ref.dim() and labels.dim() >= 1 and labels.shape == ref.shape:
        labels = labels.unsqueeze(-1)  # top-1 labels given without the k axis
    if labels.dim() < 1:
        raise ValueError(
            f"topk_labels: expected at least 1 dim (..., c), got shape {tuple(labels.shape)}"
        )
    if labels.shape[-1] < k:
        raise ValueError(f"topk_labels: has {labels.shape[-1]} label columns, fewer than k = {k}")
    try:
        shape = tuple(np.broadcast_shapes(tuple(labels.shape[:-1]), tuple(ref.shape)))
    except ValueError:
        shape = None
    if shape != tuple(labels.shape[:-1]):
        raise ValueError(
            f"reference: shape {tuple(ref.shape)} does not broadcast to the outputs' "
            f"leading shape {tuple(labels.shape[:-1])}"
        )
    # numpy in: numpy all the way (a torch round trip costs more than a few hundred symbols)
    lab: Any
    r: Any
    out: Any
    if kind == "numpy":
        lab, r = labels.numpy(), ref.numpy()
        out = np.zeros(lab.shape[:-1], dtype=np.uint8)
    else:
        lab, r = labels, ref.to(labels.device)
        out = torch.zeros(labels.shape[:-1], dtype=torch.uint8, device=labels.device)
    for j in range(k - 1, -1, -1):  # from rank k down to rank 1: the first (best) match wins
        out[lab[..., j] == r] = j + 1
    return out if kind == "numpy" else arrays.restore(out, kind)
