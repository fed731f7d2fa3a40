"""Paper defaults for the settings a caller leaves as ``None`` (Wang et al., IJCAI'21, sec. 3-4).

The paper fixes two operating points: CIFAR-10 (32x32) and ImageNet (224x224). Other resolutions
are interpolated between them, using the geometric-mean side ``r = sqrt(H * W)`` so that
non-square inputs get the value of a square input with the same number of pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CIFAR_SIDE, IMAGENET_SIDE = 32.0, 224.0

# Table 3 (CIFAR-10): best uniqueness with LTRC k = 2, delta = 0.03.
# Tables 1/2 (ImageNet, VGG-16): best uniqueness with k = 20, delta = 0.001.
K_CIFAR, K_IMAGENET = 2, 20
DELTA_CIFAR, DELTA_IMAGENET = 0.03, 0.001

# PGD step-size rule of Madry et al. (2018): alpha = 2.5 * epsilon / steps lets the iterate cross
# the whole feasible set and still have room to move along its boundary. Characteristic examples
# search the whole box [0, 1] (epsilon = its width, 1), so alpha = 2.5 / steps: 0.005 (~1.3/255)
# for the paper's 500 steps.
ALPHA_RANGE_FACTOR = 2.5


def side(input_shape) -> float:
    h, w = input_shape[-2:]
    return math.sqrt(float(h) * float(w))


def k_for(input_shape) -> int:
    """High-pass band size: 2 at 32x32, 20 at 224x224, linear in the side (k = 0.09375 r - 1).

    At least 1 (ltrc always filters something) and at most H + W - 2 (the largest valid band).
    """
    h, w = input_shape[-2:]
    r = side(input_shape)
    slope = (K_IMAGENET - K_CIFAR) / (IMAGENET_SIDE - CIFAR_SIDE)
    k = round(K_CIFAR + slope * (r - CIFAR_SIDE))
    return int(min(max(k, 1), max(h + w - 2, 0)))


def delta_for(input_shape) -> float:
    """Weight-noise bound: 0.03 up to CIFAR scale, 0.001 from ImageNet scale, log-linear between."""
    r = side(input_shape)
    if r <= CIFAR_SIDE:
        return DELTA_CIFAR
    if r >= IMAGENET_SIDE:
        return DELTA_IMAGENET
    t = (math.log(r) - math.log(CIFAR_SIDE)) / (math.log(IMAGENET_SIDE) - math.log(CIFAR_SIDE))
    return float(math.exp((1 - t) * math.log(DELTA_CIFAR) + t * math.log(DELTA_IMAGENET)))


def alpha_for(steps: int, lo: float = 0.0, hi: float = 1.0, *, k: int = 0,
              input_shape: Sequence[int] | None = None) -> float:
    """PGD's rule, 2.5 (hi - lo) / steps, times how much wider the high-pass band is than the
    paper's own at this size (max(1, k / k_for(input_shape))).

    Each LTRC step is filtered, and the band removes the low frequencies where a CNN's input
    gradient lives, so a wider band undoes more of every step. Measured on the digits CNN
    (32x32, 200 steps, 16 examples): at k = 8 with the plain rule 88 % of the examples fit and
    none reached eta; with 3-4x the step all fit. At the paper's bands (k = 2 at 32x32, 20 at
    224x224) the factor is 1, so its settings are unchanged.
    """
    widen = 1.0
    if k and input_shape is not None:
        widen = max(1.0, k / max(k_for(input_shape), 1))
    return ALPHA_RANGE_FACTOR * (hi - lo) / steps * widen
