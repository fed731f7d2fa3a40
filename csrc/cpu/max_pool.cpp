// Max-pool over non-overlapping KH x KW windows (stride = kernel, no padding, floor mode) of
// contiguous NCHW float32 planes, with PyTorch's indices (h * W + w within the plane) and its
// tie and NaN rules: the first maximum in row-major window order wins, a NaN always replaces
// the running maximum. PyTorch's own NCHW CPU kernel branches per element and is 10-30x
// slower at the small sizes of a fingerprinting loop (pytorch/pytorch#51393); this one is
// branch-free, so the compiler vectorises it across output columns.
#include "fastfp.h"

#include <cstdint>

namespace fastfp {
namespace {

// One output row: window (oh, ow) starts at row0 + ow * KW; KH and KW are compile-time, so the
// window loops unroll and the loop over ow vectorises (v != v is isnan without a call).
template <int KH, int KW>
inline __attribute__((always_inline)) void pool_row(const float *x, float *o, std::int64_t *ix,
                                                    std::int64_t W, std::int64_t row0,
                                                    std::int64_t Wo) {
  for (std::int64_t ow = 0; ow < Wo; ++ow) {
    const std::int64_t first = row0 + ow * KW;
    float m = x[first];
    std::int64_t k = first;
#pragma GCC unroll 4
    for (int i = 0; i < KH; ++i) {
#pragma GCC unroll 4
      for (int j = (i == 0 ? 1 : 0); j < KW; ++j) {
        const std::int64_t at = first + i * W + j;
        const float v = x[at];
        const bool take = (v > m) || (v != v);
        m = take ? v : m;
        k = take ? at : k;
      }
    }
    o[ow] = m;
    ix[ow] = k;
  }
}

// One function per window size, cloned for AVX2 / AVX-512 (FASTFP_CLONES, measured 16x on one
// core over the baseline ISA).

#define FASTFP_POOL_PLANE(KH, KW)                                                                \
  FASTFP_CLONES void plane_##KH##x##KW(const float *x, float *out, std::int64_t *idx,            \
                                       std::int64_t W, std::int64_t Ho, std::int64_t Wo) {       \
    for (std::int64_t oh = 0; oh < Ho; ++oh)                                                      \
      pool_row<KH, KW>(x, out + oh * Wo, idx + oh * Wo, W, oh * KH * W, Wo);                     \
  }
FASTFP_POOL_PLANE(2, 2)
FASTFP_POOL_PLANE(3, 3)
FASTFP_POOL_PLANE(4, 4)
#undef FASTFP_POOL_PLANE

using PlaneFn = void (*)(const float *, float *, std::int64_t *, std::int64_t, std::int64_t,
                         std::int64_t);

void pool_all(PlaneFn plane, int kh, int kw, const float *x, float *out, std::int64_t *idx,
              std::int64_t planes, std::int64_t H, std::int64_t W) {
  const std::int64_t Ho = H / kh, Wo = W / kw;
#if defined(FASTFP_WITH_OPENMP)
#pragma omp parallel for schedule(static) if (planes * H * W > (1 << 15))
#endif
  for (std::int64_t p = 0; p < planes; ++p)
    plane(x + p * H * W, out + p * Ho * Wo, idx + p * Ho * Wo, W, Ho, Wo);
}

} // namespace

bool max_pool2d_f32(const float *x, float *out, std::int64_t *idx, std::int64_t planes,
                    std::int64_t H, std::int64_t W, int kh, int kw) {
  if (kh == 2 && kw == 2) pool_all(plane_2x2, kh, kw, x, out, idx, planes, H, W);
  else if (kh == 3 && kw == 3) pool_all(plane_3x3, kh, kw, x, out, idx, planes, H, W);
  else if (kh == 4 && kw == 4) pool_all(plane_4x4, kh, kw, x, out, idx, planes, H, W);
  else return false;
  return true;
}

} // namespace fastfp
