// Threaded clamp(x - alpha * sign(g), lo, hi) on float32 buffers: the elementwise half of
// the sign step, used by the CPU path when the high-pass is off (k = 0).
#include "fastfp.h"

#include <cstdint>

namespace fastfp {

void sign_step_f32(const float *x, const float *g, float *out, std::int64_t n,
                   float alpha, float lo, float hi) {
#if defined(FASTFP_WITH_OPENMP)
#pragma omp parallel for schedule(static) if (n > (1 << 16))
#endif
  for (std::int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float s = (gi > 0.f) ? 1.f : ((gi < 0.f) ? -1.f : 0.f);
    float v = x[i] - alpha * s;
    v = v < lo ? lo : v;
    out[i] = v > hi ? hi : v;
  }
}

} // namespace fastfp
