// Multi-tensor weight noise on CUDA: one grid-stride launch over (up to kMaxTensors) parameter
// tensors at once, their pointer/size table passed by value in the kernel parameters (no device
// allocation, no host-to-device copy). One thread evaluates one Philox4x32-10 block = 4
// consecutive global elements, loaded and stored as one 16-byte (fp32) or 8-byte (bf16/fp16)
// vector when the 4 elements sit in one tensor and are aligned; scalar otherwise (tensor edges).
// The math is the same inline code as the CPU path (noise.h), with fp32 ops that are never
// contracted into an FMA, so the bits are identical. noise_emulate_cuda runs the same per-thread
// code on the host, so the CPU-only test suite checks the kernel's indexing and vector paths.
// The stream offset may be read from device memory by the kernel (offset_at), so that a captured
// CUDA graph draws fresh noise at each replay when the caller increments it.
#include "fastfp.h"
#include "noise.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace fastfp {
namespace {

constexpr int kMaxTensors = 40;  // 40 x 40 B of kernel parameters, well under the 4 KiB limit
constexpr int kThreads = 256;

struct Table {
  NoiseTensor t[kMaxTensors];
  int count;
  std::int64_t begin, end;  // global range covered by this launch
};

FASTFP_HD int find_tensor(const Table &tb, std::int64_t g) {
  int lo = 0, hi = tb.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tb.t[mid].base <= g)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

FASTFP_HD float noisy(float m, std::uint32_t u, float delta) {
  return noise::add_rn(m, noise::mul_rn(noise::unit_symmetric(u), delta));
}

// Is byte `at` of buffer p aligned for a `bytes`-wide vector access? (no buffer: trivially)
FASTFP_HD bool aligned(const void *p, std::int64_t at, int bytes) {
  return p == nullptr || ((reinterpret_cast<std::uintptr_t>(p) + at) % bytes) == 0;
}

FASTFP_HD std::int64_t philox_blocks(const Table &tb) { return (tb.end - 1) / 4 - tb.begin / 4 + 1; }

// The work of one thread: Philox block `i` of the table's range (global elements 4 b .. 4 b + 3).
// Host-callable too, so that the CPU test suite runs this exact code (see noise_emulate_cuda).
FASTFP_HD void noise_block(const Table &tb, std::int64_t i, float delta, std::uint32_t o0,
                           std::uint32_t o1, noise::Key key) {
  const std::int64_t b = tb.begin / 4 + i, g = 4 * b;
  std::uint32_t c[4] = {static_cast<std::uint32_t>(b),
                        static_cast<std::uint32_t>(static_cast<std::uint64_t>(b) >> 32), o0, o1};
  const NoiseTensor &x = tb.t[find_tensor(tb, g > tb.begin ? g : tb.begin)];
  const std::int64_t j = g - x.base;
  const bool whole = j >= 0 && j + 4 <= x.numel;
  if (whole && x.dtype == noise::F32 && aligned(x.in, 4 * j, 16) && aligned(x.out, 4 * j, 16)) {
    float4 m = make_float4(0.f, 0.f, 0.f, 0.f);
    if (x.in) m = *reinterpret_cast<const float4 *>(static_cast<const float *>(x.in) + j);
    noise::philox4x32_10(c, key);
    const float4 o = make_float4(noisy(m.x, c[0], delta), noisy(m.y, c[1], delta),
                                 noisy(m.z, c[2], delta), noisy(m.w, c[3], delta));
    *reinterpret_cast<float4 *>(static_cast<float *>(x.out) + j) = o;
  } else if (whole && x.dtype != noise::F32 && aligned(x.in, 2 * j, 8) && aligned(x.out, 2 * j, 8)) {
    ushort4 h = make_ushort4(0, 0, 0, 0);
    if (x.in) h = *reinterpret_cast<const ushort4 *>(static_cast<const std::uint16_t *>(x.in) + j);
    noise::philox4x32_10(c, key);
    const std::uint16_t hs[4] = {h.x, h.y, h.z, h.w};
    std::uint16_t r[4];
    for (int w = 0; w < 4; ++w) {
      const float m = !x.in ? 0.f : (x.dtype == noise::BF16 ? noise::bf16_to_float(hs[w])
                                                            : noise::f16_to_float(hs[w]));
      const float v = noisy(m, c[w], delta);
      r[w] = x.dtype == noise::BF16 ? noise::float_to_bf16(v) : noise::float_to_f16(v);
    }
    *reinterpret_cast<ushort4 *>(static_cast<std::uint16_t *>(x.out) + j) =
        make_ushort4(r[0], r[1], r[2], r[3]);
  } else {  // a block on a tensor edge, or misaligned storage: element by element
    noise::philox4x32_10(c, key);
    for (int w = 0; w < 4; ++w) {
      const std::int64_t gw = g + w;
      if (gw < tb.begin || gw >= tb.end) continue;
      const NoiseTensor &y = tb.t[find_tensor(tb, gw)];
      const std::int64_t k = gw - y.base;
      if (k < 0 || k >= y.numel) continue;
      const float m = y.in ? noise::load_as_float(y.in, k, y.dtype) : 0.f;
      noise::store_from_float(y.out, k, y.dtype, noisy(m, c[w], delta));
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    noise_kernel(const __grid_constant__ Table tb, float delta, std::uint64_t offset,
                 const std::int64_t *offset_at, noise::Key key) {
  if (offset_at) offset += static_cast<std::uint64_t>(*offset_at);  // read at run (graph replay)
  const auto o0 = static_cast<std::uint32_t>(offset), o1 = static_cast<std::uint32_t>(offset >> 32);
  const std::int64_t n = philox_blocks(tb);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride)
    noise_block(tb, i, delta, o0, o1, key);
}

// Split the list into launch tables of at most kMaxTensors (each covers a disjoint global range).
template <class Launch>
void for_each_table(const NoiseTensor *tensors, int count, Launch launch) {
  for (int first = 0; first < count; first += kMaxTensors) {
    Table tb{};
    tb.count = std::min(kMaxTensors, count - first);
    std::copy(tensors + first, tensors + first + tb.count, tb.t);
    tb.begin = tb.t[0].base;
    tb.end = tb.t[tb.count - 1].base + tb.t[tb.count - 1].numel;
    if (tb.end > tb.begin && !launch(tb)) return;
  }
}

void check(cudaError_t err, const char *what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fastfp noise CUDA kernel: ") + what + ": " +
                             cudaGetErrorString(err));
}

}  // namespace

void noise_perturb_cuda(const NoiseTensor *tensors, int count, float delta, std::uint64_t seed,
                        std::uint64_t offset, const std::int64_t *offset_at, int device,
                        std::uintptr_t stream) {
  int previous = 0;
  check(cudaGetDevice(&previous), "cudaGetDevice");
  check(cudaSetDevice(device), "cudaSetDevice");
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "SM count");
  const noise::Key key{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
  auto s = reinterpret_cast<cudaStream_t>(stream);
  cudaError_t err = cudaSuccess;
  for_each_table(tensors, count, [&](const Table &tb) {
    const std::int64_t grid = std::min<std::int64_t>((philox_blocks(tb) + kThreads - 1) / kThreads,
                                                     static_cast<std::int64_t>(sms) * 16);
    noise_kernel<<<static_cast<unsigned>(grid), kThreads, 0, s>>>(tb, delta, offset, offset_at,
                                                                   key);
    err = cudaGetLastError();
    return err == cudaSuccess;
  });
  cudaSetDevice(previous);
  check(err, "launch");
}

void noise_emulate_cuda(const NoiseTensor *tensors, int count, float delta, std::uint64_t seed,
                        std::uint64_t offset) {
  const noise::Key key{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
  const auto o0 = static_cast<std::uint32_t>(offset), o1 = static_cast<std::uint32_t>(offset >> 32);
  for_each_table(tensors, count, [&](const Table &tb) {
    // Blocks in reverse order: threads of a launch run in no particular order.
    for (std::int64_t i = philox_blocks(tb); i-- > 0;) noise_block(tb, i, delta, o0, o1, key);
    return true;
  });
}

}  // namespace fastfp
