// Declarations shared by the binding file and the CPU / CUDA sources.
#pragma once
#include <cstdint>
#include <vector>

// A function built for the baseline ISA and for AVX2 / AVX-512, picked at load time (GCC on
// x86-64): for loops whose selects and int64 lanes only vectorise with the wider ISAs. Put it on
// the per-chunk worker, not on a function holding an OpenMP loop (the outlined body would not
// inherit the target).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTFP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTFP_CLONES
#endif

namespace fastfp {

int openmp_max_threads();

// One tensor of a multi-tensor noise launch: out[j] = in[j] + noise(base + j), j < numel.
// `base` is the global index of its first element (tensors laid end to end, bases increasing);
// in == nullptr means a zero master (out = the noise itself). dtype: noise::Dtype.
struct NoiseTensor {
  const void *in;
  void *out;
  std::int64_t numel;
  std::int64_t base;
  std::int32_t dtype;
};

// One OpenMP parallel region over the whole list (bits independent of the thread count).
void noise_perturb_cpu(const NoiseTensor *tensors, int count, float delta, std::uint64_t seed,
                       std::uint64_t offset);

// The open world's greedy guard cover of one draw (fastfp.fbi.openworld._Guard.covers): cols
// (W, P) word-major packed correctness of the pool's columns, right / wrong (W,) the coverable
// requirements (OR of the columns / NOT their AND: every column then meets one requirement of
// every model, so order[0] is the first pick), order (P,) the columns in the draw's order (a
// permutation of 0 .. P - 1).
// Returns the picked columns in order.
std::vector<std::int64_t> guard_cover_cpu(const std::uint64_t *cols, std::int64_t W,
                                          std::int64_t P, const std::uint64_t *right,
                                          const std::uint64_t *wrong, const std::int64_t *order);

#if defined(FASTFP_WITH_CUDA)
// One kernel launch per kMaxNoiseTensors tensors on `stream` (a cudaStream_t, 0 = default).
// The stream offset is `offset`, plus *offset_at when offset_at (device memory) is not null: the
// kernel reads it, so a captured CUDA graph draws the stream its replay finds there.
void noise_perturb_cuda(const NoiseTensor *tensors, int count, float delta, std::uint64_t seed,
                        std::uint64_t offset, const std::int64_t *offset_at, int device,
                        std::uintptr_t stream);
// The CUDA kernel's per-thread code run on the host over CPU buffers (tests without a GPU).
void noise_emulate_cuda(const NoiseTensor *tensors, int count, float delta, std::uint64_t seed,
                        std::uint64_t offset);
#endif

} // namespace fastfp
