// Declarations shared by the binding file and the CPU / CUDA sources.
#pragma once
#include <cstdint>

namespace fastfp {

int openmp_max_threads();

void sign_step_f32(const float *x, const float *g, float *out, std::int64_t n,
                   float alpha, float lo, float hi);

} // namespace fastfp
