"""Triton kernel of the in-graph weight noise (imported lazily: ``import fastfp`` never loads it).

``out[i] = master[i] + noise(i)`` where the noise is the stream contract of
:mod:`fastfp.reference.noise` (Philox4x32-10, key = seed, counter = (i // 4 lo, hi, offset lo,
hi), word i % 4, ``(2 * (u >> 8) * 2^-24 - 1) * float32(delta)``), with ``offset = step * q + copy``
and ``step`` *read from device memory*, so a captured CUDA graph draws fresh noise per replay.
"""

import triton
import triton.language as tl


@triton.jit
def _emit(master_ptr, out_ptr, r, i, n, delta):
    mask = i < n
    v = (r >> 8).to(tl.float32) * (1.0 / 16777216.0)   # exact: 24 bits, then 2^-24
    noise = (v * 2.0 - 1.0) * delta                      # one float32 rounding
    m = tl.load(master_ptr + i, mask=mask, other=0.0)
    tl.store(out_ptr + i, m + noise, mask=mask)          # one float32 addition (launched without FMA)


@triton.jit
def noise_kernel(master_ptr, out_ptr, step_ptr, n, q, copy, seed, delta, BLOCK: tl.constexpr):
    b = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)  # Philox block: 4 elements
    offset = tl.load(step_ptr) * q + copy
    zero = tl.zeros([BLOCK], dtype=tl.uint32)
    o_lo = (offset & 0xFFFFFFFF).to(tl.uint32) + zero
    o_hi = ((offset >> 32) & 0xFFFFFFFF).to(tl.uint32) + zero
    r0, r1, r2, r3 = tl.philox(seed, (b & 0xFFFFFFFF).to(tl.uint32),
                               ((b >> 32) & 0xFFFFFFFF).to(tl.uint32), o_lo, o_hi)
    _emit(master_ptr, out_ptr, r0, 4 * b, n, delta)
    _emit(master_ptr, out_ptr, r1, 4 * b + 1, n, delta)
    _emit(master_ptr, out_ptr, r2, 4 * b + 2, n, delta)
    _emit(master_ptr, out_ptr, r3, 4 * b + 3, n, delta)
