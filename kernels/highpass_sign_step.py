"""Fused sign step + clip + low-rank DCT high-pass, one Triton program per (batch*channel) image.

    s   = clamp(x - alpha * sign(grad), lo, hi)          (STEP; else s = x)
    out = s - Dh^T (M * (Dh s Dw^T)) Dw                   (k >= 1; else out = s)

with Dh (rh x H), Dw (rw x W) the first rh = min(k+1, H), rw = min(k+1, W) rows of the orthonormal
DCT-II matrices and M[i, j] = 1 iff 1 <= i + j <= k. The removed corner of the spectrum is walked
in RB x RB blocks of frequencies (one block for the usual k = 20 at 224 or k = 2 at 32; more when
k is large, up to full rank): per block, pass 1 projects s onto the block's DCT rows/columns
(C = Dh_a s Dw_b^T, kept in registers) and pass 2 subtracts Dh_a^T (M * C) Dw_b from the image.
x and grad are read from memory, out written once per block; pass 2 walks the rows backwards so
that its re-read of the image tile hits the cache lines pass 1 touched last. When k is so large
that the kept part (DC + the high corner i + j > k) is the smaller one, the kernel rebuilds the
image from its mean plus that corner instead (same blocks, no cancellation): see
fastfp._lowrank.plan. Everything is accumulated in float32 (``input_precision="ieee"``, no TF32:
see DOT_PRECISION), whatever the input dtype.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


@triton.jit
def _load_step(x_ptr, g_ptr, rows, cols, H, W, sxh, sxw, sgh, sgw, alpha, lo, hi,
               STEP: tl.constexpr):
    inside = (rows[:, None] < H) & (cols[None, :] < W)
    v = tl.load(x_ptr + rows[:, None] * sxh + cols[None, :] * sxw, mask=inside, other=0.0)
    v = v.to(tl.float32)
    if STEP:
        g = tl.load(g_ptr + rows[:, None] * sgh + cols[None, :] * sgw, mask=inside, other=0.0)
        # sign in grad's own dtype: a float64 grad below float32's range keeps its sign, and a
        # NaN grad gives 0, as torch.sign; a NaN in x propagates through the clip as in
        # torch.clamp (the compiled min/max would drop it: the interpreter's numpy would not)
        sgn = tl.where(g > 0, 1.0, tl.where(g < 0, -1.0, 0.0))
        v = tl.minimum(tl.maximum(v - alpha * sgn, lo, propagate_nan=tl.PropagateNan.ALL), hi,
                       propagate_nan=tl.PropagateNan.ALL)
        v = tl.where(inside, v, 0.0)  # padding must not leak into the projection
    return v


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def highpass_sign_step_kernel(
    x_ptr, g_ptr, out_ptr, dh_ptr, dw_ptr,
    H, W, k, rh, rw, h0, w0,
    sxn, sxh, sxw, sgn_, sgh, sgw,
    alpha, lo, hi,
    STEP: tl.constexpr, HIGHPASS: tl.constexpr, KEPT: tl.constexpr,
    BH: tl.constexpr, BW: tl.constexpr, RB: tl.constexpr, DOT: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    x_ptr += n * sxn
    g_ptr += n * sgn_
    out_ptr += n * H * W  # out is contiguous (N, H, W)
    ri = tl.arange(0, BH)
    ci = tl.arange(0, BW)
    fi = tl.arange(0, RB)
    # No tl.cdiv / tl.zeros / tl.sum here: they are std-library @jit functions, which the
    # interpreter cannot call when triton was imported before TRITON_INTERPRET was set (as in a
    # test run).
    n_rb = (H + BH - 1) // BH

    if (not HIGHPASS) or KEPT:
        # k = 0: out = s. KEPT: out = mean(s) (the DC term); the blocks below add the high corner.
        if KEPT:
            tot = tl.full((BH, BW), 0.0, tl.float32)
            for r in range(0, n_rb):
                for c0 in range(0, W, BW):
                    tot += _load_step(x_ptr, g_ptr, r * BH + ri, c0 + ci, H, W, sxh, sxw, sgh,
                                      sgw, alpha, lo, hi, STEP)
            mean = tl.reduce(tl.reduce(tot, 1, _add), 0, _add) / (H * W)
        for r in range(0, n_rb):
            rows = r * BH + ri
            for c0 in range(0, W, BW):
                cols = c0 + ci
                inside = (rows[:, None] < H) & (cols[None, :] < W)
                if KEPT:
                    v = tl.full((BH, BW), 0.0, tl.float32) + mean
                else:
                    v = _load_step(x_ptr, g_ptr, rows, cols, H, W, sxh, sxw, sgh, sgw,
                                   alpha, lo, hi, STEP)
                tl.store(out_ptr + rows[:, None] * W + cols[None, :],
                         v.to(out_ptr.dtype.element_ty), mask=inside)
        tl.debug_barrier()

    if HIGHPASS:
        for a in range(0, (rh + RB - 1) // RB):
            for b in range(0, (rw + RB - 1) // RB):
                # does this block of frequencies (h0 + a*RB + i, w0 + b*RB + j) meet the band?
                if KEPT:
                    meets = (a + b + 2) * RB - 2 + h0 + w0 > k
                else:
                    meets = (a + b) * RB <= k
                if meets:
                    fa = a * RB + fi  # block rows of dh (frequency h0 + fa along H)
                    fb = b * RB + fi  # block rows of dw (frequency w0 + fb along W)
                    # pass 1: C = Dh_a s Dw_b^T  (RB x RB)
                    acc = tl.full((RB, RB), 0.0, tl.float32)
                    for r in range(0, n_rb):
                        rows = r * BH + ri
                        # Dh_a^T rows of this tile: (BH x RB), element [y, i] = Dh[fa_i, y]
                        dhT = tl.load(dh_ptr + fa[None, :] * H + rows[:, None],
                                      mask=(fa[None, :] < rh) & (rows[:, None] < H), other=0.0)
                        t = tl.full((BH, RB), 0.0, tl.float32)
                        for c0 in range(0, W, BW):
                            cols = c0 + ci
                            v = _load_step(x_ptr, g_ptr, rows, cols, H, W, sxh, sxw, sgh, sgw,
                                           alpha, lo, hi, STEP)
                            dwT = tl.load(dw_ptr + fb[None, :] * W + cols[:, None],
                                          mask=(fb[None, :] < rw) & (cols[:, None] < W), other=0.0)
                            t = tl.dot(v, dwT, t, input_precision=DOT)
                        acc = tl.dot(tl.trans(dhT), t, acc, input_precision=DOT)
                    f = (h0 + fa)[:, None] + (w0 + fb)[None, :]
                    if KEPT:
                        acc = tl.where(f > k, acc, 0.0)
                    else:
                        acc = tl.where((f >= 1) & (f <= k), -acc, 0.0)  # subtracted below
                    first = (a == 0) & (b == 0)
                    # pass 2: out = base + Dh_a^T (M * C) Dw_b; base = s on the first block of
                    # the removed band, else what earlier blocks (or the mean) left in out
                    for rr in range(0, n_rb):
                        r = n_rb - 1 - rr
                        rows = r * BH + ri
                        dhT = tl.load(dh_ptr + fa[None, :] * H + rows[:, None],
                                      mask=(fa[None, :] < rh) & (rows[:, None] < H), other=0.0)
                        u = tl.dot(dhT, acc, input_precision=DOT)  # (BH x RB)
                        for c0 in range(0, W, BW):
                            cols = c0 + ci
                            inside = (rows[:, None] < H) & (cols[None, :] < W)
                            dw = tl.load(dw_ptr + fb[:, None] * W + cols[None, :],
                                         mask=(fb[:, None] < rw) & (cols[None, :] < W), other=0.0)
                            o_ptrs = out_ptr + rows[:, None] * W + cols[None, :]
                            if KEPT:
                                base = tl.load(o_ptrs, mask=inside, other=0.0).to(tl.float32)
                            else:
                                if first:
                                    base = _load_step(x_ptr, g_ptr, rows, cols, H, W, sxh, sxw,
                                                      sgh, sgw, alpha, lo, hi, STEP)
                                else:
                                    base = tl.load(o_ptrs, mask=inside, other=0.0).to(tl.float32)
                            res = tl.dot(u, dw, base, input_precision=DOT)
                            tl.store(o_ptrs, res.to(out_ptr.dtype.element_ty), mask=inside)
                    # later blocks read back what this one stored (other threads' elements)
                    tl.debug_barrier()


# tl.dot precision: "ieee" keeps float32 accuracy (the tests demand the reference's error level);
# "tf32x3" (three TF32 tensor-core passes, close to float32) is the knob to try if a GPU profile
# shows the kernel compute-bound rather than memory-bound.
DOT_PRECISION = "ieee"


@functools.cache
def _placeholder(device: torch.device) -> torch.Tensor:
    # one per device, allocated once: a launch allocates nothing (CUDA-graph capture)
    return torch.zeros(1, 1, dtype=torch.float32, device=device)


def launch(x3: torch.Tensor, g3: torch.Tensor, out3: torch.Tensor, dh: torch.Tensor,
           dw: torch.Tensor, k: int, alpha: float, lo: float, hi: float, *, step: bool,
           kept: bool = False, h0: int = 0, w0: int = 0) -> None:
    """Fill ``out3`` (contiguous (N, H, W), x's dtype) from x3 / g3 ((N, H, W) views, any strides).

    dh (rh x H) / dw (rw x W): float32 contiguous DCT rows h0.. / w0.. (see fastfp._lowrank.plan);
    kept=False: the removed band (rows from 0), kept=True: the kept high corner plus the mean.
    k = 0: no high-pass (dh / dw unused).
    """
    n, h, w = x3.shape
    if n == 0 or h == 0 or w == 0:
        return
    rh, rw = dh.shape[0], dw.shape[0]
    if rh == 0 or rw == 0:  # nothing to add (k = 0, or only the mean is kept): no null pointers
        dh = dw = _placeholder(x3.device)
        rh = rw = 0
    # Tiles: tl.dot wants every dim >= 16. About 2K elements per image tile: compiled for sm_90,
    # a 32x64 fp32 tile with RB = 32 takes ~60 KB of shared memory (3 programs per SM), a 32x128
    # one ~116 KB (1 per SM: too few bytes in flight for a memory-bound kernel). Untuned on a GPU.
    bw = max(16, min(triton.next_power_of_2(w), 64))
    bh = max(16, min(triton.next_power_of_2(h), 2048 // bw))
    rb = max(16, min(triton.next_power_of_2(max(rh, rw, 1)), 32))
    g3 = g3 if step else x3
    highpass_sign_step_kernel[(n,)](
        x3, g3, out3, dh, dw,
        h, w, k, rh, rw, h0, w0,
        x3.stride(0), x3.stride(1), x3.stride(2), g3.stride(0), g3.stride(1), g3.stride(2),
        float(alpha), float(lo), float(hi),
        STEP=step, HIGHPASS=k > 0, KEPT=kept, BH=bh, BW=bw, RB=rb, DOT=DOT_PRECISION,
        num_warps=4,
    )
