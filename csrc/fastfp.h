// Declarations shared by the binding file and the CPU / CUDA sources.
#pragma once
#include <cstdint>

// A function built for the baseline ISA and for AVX2 / AVX-512, picked at load time (GCC on
// x86-64): for loops whose selects and int64 lanes only vectorise with the wider ISAs. Put it on
// the per-plane worker, not on a function holding an OpenMP loop (the outlined body would not
// inherit the target).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTFP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTFP_CLONES
#endif

namespace fastfp {

int openmp_max_threads();

void sign_step_f32(const float *x, const float *g, float *out, std::int64_t n,
                   float alpha, float lo, float hi);

// Input gradient of a stride-1, undilated, ungrouped convolution (contiguous NCHW float32):
// grad_in (n, ci, h, w) from grad_out (n, co, ho, wo) and weight (co, ci, kh, kw), padding ph, pw.
void conv_input_grad_f32(const float *grad_out, const float *weight, float *grad_in, std::int64_t n,
                         std::int64_t co, std::int64_t ci, std::int64_t ho, std::int64_t wo,
                         std::int64_t h, std::int64_t w, std::int64_t kh, std::int64_t kw,
                         std::int64_t ph, std::int64_t pw);

// Max-pool of contiguous NCHW float32 planes over non-overlapping kh x kw windows (stride =
// kernel, no padding, floor mode), PyTorch's values and indices. false: window size not compiled
// (2x2, 3x3 and 4x4 are), nothing written.
bool max_pool2d_f32(const float *x, float *out, std::int64_t *idx, std::int64_t planes,
                    std::int64_t H, std::int64_t W, int kh, int kw);

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

#if defined(FASTFP_WITH_CUDA)
// One kernel launch per kMaxNoiseTensors tensors on `stream` (a cudaStream_t, 0 = default).
void noise_perturb_cuda(const NoiseTensor *tensors, int count, float delta, std::uint64_t seed,
                        std::uint64_t offset, int device, std::uintptr_t stream);
// The CUDA kernel's per-thread code run on the host over CPU buffers (tests without a GPU).
void noise_emulate_cuda(const NoiseTensor *tensors, int count, float delta, std::uint64_t seed,
                        std::uint64_t offset);
#endif

} // namespace fastfp
