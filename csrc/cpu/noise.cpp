// Multi-tensor weight noise on CPU: out_i = master_i + U(-delta, delta) for a whole parameter
// list in one OpenMP region. Work is split in chunks of 256 global elements (64 Philox blocks,
// aligned on the global index), so every thread computes exactly the words the stream defines,
// whatever the thread count. The Philox rounds run on structure-of-arrays lanes that the
// compiler vectorises; on x86 the chunk worker is cloned for AVX2 / AVX-512 and picked at load.
// Compiled with -ffp-contract=off: the noise add must never become an FMA (CUDA parity).
#include "fastfp.h"
#include "noise.h"

#include <algorithm>
#include <cstdint>

namespace fastfp {
namespace {

using noise::Key;
constexpr int kBlocks = 64;                      // Philox evaluations per chunk
constexpr std::int64_t kChunk = 4 * kBlocks;    // elements per chunk

template <int Dtype, bool HasIn>
inline void apply(const NoiseTensor &t, std::int64_t j0, std::int64_t n, const std::uint32_t *u,
                  float delta) {
  for (std::int64_t k = 0; k < n; ++k) {
    const float m = HasIn ? noise::load_as_float(t.in, j0 + k, Dtype) : 0.0f;
    const float z = noise::mul_rn(noise::unit_symmetric(u[k]), delta);
    noise::store_from_float(t.out, j0 + k, Dtype, noise::add_rn(m, z));
  }
}

template <int Dtype>
inline void apply_dtype(const NoiseTensor &t, std::int64_t j0, std::int64_t n,
                        const std::uint32_t *u, float delta) {
  if (t.in)
    apply<Dtype, true>(t, j0, n, u, delta);
  else
    apply<Dtype, false>(t, j0, n, u, delta);
}

// Index of the tensor holding global element g (the last one whose base is <= g).
int find_tensor(const NoiseTensor *t, int count, std::int64_t g) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (t[mid].base <= g)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

FASTFP_CLONES void process_chunk(std::int64_t chunk, const NoiseTensor *t, int count, float delta,
                                 std::uint32_t o0, std::uint32_t o1, Key key) {
  std::uint32_t c0[kBlocks], c1[kBlocks], c2[kBlocks], c3[kBlocks];
  const std::uint64_t first = static_cast<std::uint64_t>(chunk) * kBlocks;
  for (int i = 0; i < kBlocks; ++i) {
    const std::uint64_t b = first + static_cast<std::uint64_t>(i);
    c0[i] = static_cast<std::uint32_t>(b);
    c1[i] = static_cast<std::uint32_t>(b >> 32);
    c2[i] = o0;
    c3[i] = o1;
  }
  std::uint32_t k0 = key.k0, k1 = key.k1;
  for (int r = 0; r < 10; ++r) {  // Philox4x32-10, lane by lane (same math as noise::philox4x32_10)
    if (r) {
      k0 += noise::kW0;
      k1 += noise::kW1;
    }
    for (int i = 0; i < kBlocks; ++i) {
      const std::uint64_t p0 = static_cast<std::uint64_t>(noise::kM0) * c0[i];
      const std::uint64_t p1 = static_cast<std::uint64_t>(noise::kM1) * c2[i];
      const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1[i] ^ k0;
      const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3[i] ^ k1;
      c1[i] = static_cast<std::uint32_t>(p1);
      c3[i] = static_cast<std::uint32_t>(p0);
      c0[i] = n0;
      c2[i] = n2;
    }
  }
  std::uint32_t u[kChunk];  // element order: word w of block i is element 4 i + w
  for (int i = 0; i < kBlocks; ++i) {
    u[4 * i] = c0[i];
    u[4 * i + 1] = c1[i];
    u[4 * i + 2] = c2[i];
    u[4 * i + 3] = c3[i];
  }
  const std::int64_t g0 = chunk * kChunk, g1 = g0 + kChunk;
  for (int ti = find_tensor(t, count, std::max(g0, t[0].base)); ti < count && t[ti].base < g1; ++ti) {
    const NoiseTensor &x = t[ti];
    const std::int64_t s = std::max(g0, x.base), e = std::min(g1, x.base + x.numel);
    if (s >= e) continue;
    const std::uint32_t *uu = u + (s - g0);
    if (x.dtype == noise::F32)
      apply_dtype<noise::F32>(x, s - x.base, e - s, uu, delta);
    else if (x.dtype == noise::BF16)
      apply_dtype<noise::BF16>(x, s - x.base, e - s, uu, delta);
    else
      apply_dtype<noise::F16>(x, s - x.base, e - s, uu, delta);
  }
}

}  // namespace

void noise_perturb_cpu(const NoiseTensor *t, int count, float delta, std::uint64_t seed,
                       std::uint64_t offset) {
  if (count <= 0) return;
  const std::int64_t begin = t[0].base, end = t[count - 1].base + t[count - 1].numel;
  if (end <= begin) return;
  const Key key{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
  const std::uint32_t o0 = static_cast<std::uint32_t>(offset);
  const std::uint32_t o1 = static_cast<std::uint32_t>(offset >> 32);
  const std::int64_t c_first = begin / kChunk, c_last = (end - 1) / kChunk;
#if defined(FASTFP_WITH_OPENMP)
#pragma omp parallel for schedule(static) if (end - begin > (1 << 15))
#endif
  for (std::int64_t c = c_first; c <= c_last; ++c)
    process_chunk(c, t, count, delta, o0, o1, key);
}

}  // namespace fastfp
