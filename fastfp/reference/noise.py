"""Readable twin of the weight noise: Philox4x32-10 in plain integer ops, RC+GM by a literal loop.

The noise stream (the contract every implementation of ``fastfp.noise`` reproduces bit for bit):

- the parameter tensors are laid end to end; element ``i`` of that concatenation (row-major
  inside each tensor) is the *global index*;
- Philox4x32-10 (Salmon et al., SC'11, Random123) with key ``(seed mod 2^32, seed >> 32)`` and
  counter ``(b mod 2^32, b >> 32, offset mod 2^32, offset >> 32)`` where ``b = i // 4``;
  element ``i`` takes output word ``i % 4``, a 32-bit integer ``u``;
- ``v = (u >> 8) * 2^-24`` in ``[0, 1)`` (exact in float32);
- ``noise = (2 v - 1) * float32(delta)``: ``2 v - 1`` is exact, so one float32 rounding,
  which keeps ``noise`` in ``[-delta, delta)``;
- ``out = dtype(float32(master) + noise)``: one float32 addition (never fused into an FMA), then
  round-to-nearest-even to the parameter's dtype (float32, bfloat16 or float16).

Here ``uint32`` arithmetic is emulated in ``int64`` (torch has no full unsigned 32-bit math):
every intermediate stays below ``2^49``, so nothing overflows.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

MASK32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53  # round multipliers
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9  # Weyl key increments (golden ratio, sqrt(3) - 1)
PHILOX_W1 = 0xBB67AE85
ROUNDS = 10


# ----------------------------------------------------------------------------- scalar (Python ints)

def philox4x32_10_scalar(counter, key):
    """Philox4x32-10 on Python ints: ``counter`` is 4 words, ``key`` 2 words; returns 4 words."""
    c0, c1, c2, c3 = (int(c) & MASK32 for c in counter)
    k0, k1 = (int(k) & MASK32 for k in key)
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        p0, p1 = PHILOX_M0 * c0, PHILOX_M1 * c2
        hi0, lo0 = p0 >> 32, p0 & MASK32
        hi1, lo1 = p1 >> 32, p1 & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


# ----------------------------------------------------------------------------- int64 tensors

def _mulhilo(m: int, c: torch.Tensor):
    """(hi, lo) 32-bit halves of ``m * c`` for ``c`` in [0, 2^32), via 16-bit halves of ``c``."""
    p_lo = m * (c & 0xFFFF)  # < 2^48
    p_hi = m * (c >> 16)     # < 2^48
    lo = (p_lo + ((p_hi & 0xFFFF) << 16)) & MASK32
    hi = (p_hi + (p_lo >> 16)) >> 16
    return hi, lo


def philox4x32_10(c0, c1, c2, c3, key):
    """Philox4x32-10 on int64 tensors holding uint32 values; ``key`` is two Python ints."""
    k0, k1 = int(key[0]) & MASK32, int(key[1]) & MASK32
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def split64(v: int) -> tuple[int, int]:
    """A 64-bit unsigned int as (low word, high word)."""
    return v & MASK32, (v >> 32) & MASK32


def bits(start: int, count: int, seed: int, offset: int = 0, device="cpu") -> torch.Tensor:
    """The 32-bit draws ``u`` of global indices ``start .. start + count - 1`` (int64 tensor)."""
    device = torch.device(device)
    if count == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    first, last = start // 4, (start + count - 1) // 4
    b = torch.arange(first, last + 1, dtype=torch.int64, device=device)
    o0, o1 = split64(offset)
    words = philox4x32_10(b & MASK32, b >> 32, torch.full_like(b, o0), torch.full_like(b, o1),
                          split64(seed))
    stream = torch.stack(words, dim=1).reshape(-1)  # word i % 4 of block i // 4, in order
    skip = start - 4 * first
    return stream[skip:skip + count]


def noise(start: int, count: int, delta: float, seed: int, offset: int = 0,
          device="cpu") -> torch.Tensor:
    """float32 noise of global indices ``start .. start + count - 1``, in ``[-delta, delta)``."""
    u = bits(start, count, seed, offset, device)
    v = (u >> 8).to(torch.float32) * (2.0 ** -24)
    return (v * 2.0 - 1.0) * torch.tensor(delta, dtype=torch.float32, device=v.device)


def perturb(params, delta: float, seed: int, offset: int = 0) -> list[torch.Tensor]:
    """``p + U(-delta, delta)`` for each tensor of ``params``, one tensor after the other."""
    outs, base = [], 0
    for p in params:
        n = noise(base, p.numel(), delta, seed, offset, p.device).reshape(p.shape)
        outs.append((p.detach().to(torch.float32) + n).to(p.dtype))
        base += p.numel()
    return outs


# ----------------------------------------------------------------------------- RC+GM, literally

def grad_mean(model, x, labels, delta: float, q: int, seed: int, offset: int = 0) -> torch.Tensor:
    """Mean over copies ``c < q`` of d CE(model_{theta + Delta(seed, offset + c)}(x), labels) / dx.

    One deep copy of the model per noisy copy, perturbed in place: the obvious, slow way.
    The loss is summed over the batch, so every example's gradient is its own.
    """
    masters = [p.detach() for p in model.parameters()]
    total = torch.zeros_like(x)
    for c in range(q):
        noisy = copy.deepcopy(model).eval()
        with torch.no_grad():
            noisy_weights = perturb(masters, delta, seed, offset + c)
            for p, new in zip(noisy.parameters(), noisy_weights, strict=True):
                p.copy_(new)
        xg = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(noisy(xg).float(), labels, reduction="sum")
        (g,) = torch.autograd.grad(loss, xg)
        total = total + g
    return total / q
