// Input gradient of a stride-1, undilated, ungrouped 2-D convolution with few input channels
// (an image's first layer, the one whose input gradient characteristic examples always need),
// on contiguous NCHW float32 arrays; oneDNN's backward-data is slow for these shapes on a CPU:
//   grad_in[n, ci, y, x] = sum over co, i, j of grad_out[n, co, y + ph - i, x + pw - j] w[co, ci, i, j]
// (terms outside grad_out are zero). Each (image, channel) plane accumulates row axpys that
// vectorise, in a fixed order (results do not depend on the thread count).
#include "fastfp.h"

#include <algorithm>
#include <cstdint>

namespace fastfp {
namespace {

struct ConvShape {
  std::int64_t co, ci, ho, wo, h, w, kh, kw, ph, pw;
};

// Cloned for AVX2 / AVX-512 (FASTFP_CLONES).
FASTFP_CLONES void grad_plane(const float *go, const float *wt, float *out, std::int64_t ci,
                              const ConvShape &s) {
  std::fill(out, out + s.h * s.w, 0.f);
  for (std::int64_t co = 0; co < s.co; ++co) {
    const float *g = go + co * s.ho * s.wo;
    for (std::int64_t i = 0; i < s.kh; ++i) {
      const std::int64_t y0 = std::max<std::int64_t>(0, i - s.ph);
      const std::int64_t y1 = std::min<std::int64_t>(s.h, s.ho + i - s.ph);
      for (std::int64_t j = 0; j < s.kw; ++j) {
        const float wv = wt[((co * s.ci + ci) * s.kh + i) * s.kw + j];
        const std::int64_t x0 = std::max<std::int64_t>(0, j - s.pw);
        const std::int64_t x1 = std::min<std::int64_t>(s.w, s.wo + j - s.pw);
        for (std::int64_t y = y0; y < y1; ++y) {
          const float *grow = g + (y + s.ph - i) * s.wo + (s.pw - j);
          float *orow = out + y * s.w;
          for (std::int64_t x = x0; x < x1; ++x) orow[x] += wv * grow[x];
        }
      }
    }
  }
}

} // namespace

void conv_input_grad_f32(const float *grad_out, const float *weight, float *grad_in, std::int64_t n,
                         std::int64_t co, std::int64_t ci, std::int64_t ho, std::int64_t wo,
                         std::int64_t h, std::int64_t w, std::int64_t kh, std::int64_t kw,
                         std::int64_t ph, std::int64_t pw) {
  const ConvShape s{co, ci, ho, wo, h, w, kh, kw, ph, pw};
  const std::int64_t planes = n * ci;
#if defined(FASTFP_WITH_OPENMP)
#pragma omp parallel for schedule(static) if (planes * co * h * w * kh * kw > (1 << 16))
#endif
  for (std::int64_t p = 0; p < planes; ++p)
    grad_plane(grad_out + (p / ci) * co * ho * wo, weight, grad_in + p * h * w, p % ci, s);
}

} // namespace fastfp
