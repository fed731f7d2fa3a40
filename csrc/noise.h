// The weight-noise stream shared by the CPU (OpenMP) and CUDA kernels, written once so that
// both produce the same bits. Definition (see fastfp/reference/noise.py, the readable twin):
//   element i of the parameter list laid end to end takes word i % 4 of
//   Philox4x32-10(counter = (i/4 lo, i/4 hi, offset lo, offset hi), key = (seed lo, seed hi));
//   noise = ((u >> 8) * 2^-23 - 1) * float(delta)          (exact, then one fp32 rounding)
//   out   = round_to_dtype(float(master) + noise)           (one fp32 add, never an FMA)
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FASTFP_HD __host__ __device__ __forceinline__
#else
#define FASTFP_HD inline
#endif

namespace fastfp {
namespace noise {

enum Dtype : std::int32_t { F32 = 0, BF16 = 1, F16 = 2 };

constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // Philox round multipliers
constexpr std::uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments

struct Key {
  std::uint32_t k0, k1;
};

// One Philox4x32-10 evaluation; c[] is the counter on entry and the 4 output words on exit.
FASTFP_HD void philox4x32_10(std::uint32_t c[4], Key key) {
  std::uint32_t k0 = key.k0, k1 = key.k1;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += kW0;
      k1 += kW1;
    }
    const std::uint64_t p0 = static_cast<std::uint64_t>(kM0) * c[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(kM1) * c[2];
    const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    const std::uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
  }
}

// (2 v - 1) with v = (u >> 8) * 2^-24: an integer in [-2^24, 2^24) times 2^-24, exact in fp32.
FASTFP_HD float unit_symmetric(std::uint32_t u) {
  const std::int32_t m = static_cast<std::int32_t>(u >> 8) * 2 - (1 << 24);
  return static_cast<float>(m) * 5.9604644775390625e-08f;  // 2^-24
}

FASTFP_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);  // never contracted into an FMA
#else
  return a * b;  // the CPU sources are compiled with -ffp-contract=off
#endif
}

FASTFP_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

FASTFP_HD std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

FASTFP_HD float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// bfloat16 <-> float32, round to nearest even (as torch does); NaN -> canonical quiet NaN.
FASTFP_HD float bf16_to_float(std::uint16_t h) { return bits_float(static_cast<std::uint32_t>(h) << 16); }

FASTFP_HD std::uint16_t float_to_bf16(float f) {
  const std::uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0u;
  return static_cast<std::uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// IEEE binary16 <-> float32, round to nearest even, subnormals and overflow to inf handled.
FASTFP_HD float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  if (exp == 0x1Fu) return bits_float(sign | 0x7F800000u | (man << 13));  // inf / NaN
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
  // zero or subnormal: man * 2^-24, exact in fp32
  const float v = static_cast<float>(man) * 5.9604644775390625e-08f;
  return bits_float(sign | float_bits(v));
}

FASTFP_HD std::uint16_t float_to_f16(float f) {
  const std::uint32_t x = float_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return sign | 0x7E00u;   // NaN
  if (ax >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds to inf
  if (ax >= 0x38800000u) {                       // normal half: rebias, round the 13 dropped bits
    std::uint32_t h = (ax >> 13) - (112u << 10);
    const std::uint32_t rem = ax & 0x1FFFu;
    h += (rem > 0x1000u) || (rem == 0x1000u && (h & 1u));
    return sign | static_cast<std::uint16_t>(h);
  }
  if (ax < 0x33000000u) return sign;  // below 2^-25: rounds to zero
  const std::uint32_t e = ax >> 23, mant = (ax & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t s = 126u - e;  // 14 .. 24: value / 2^-24 = mant >> s
  std::uint32_t h = mant >> s;
  const std::uint32_t rem = mant & ((1u << s) - 1u), half = 1u << (s - 1u);
  h += (rem > half) || (rem == half && (h & 1u));
  return sign | static_cast<std::uint16_t>(h);
}

FASTFP_HD float load_as_float(const void *p, std::int64_t j, std::int32_t dtype) {
  if (dtype == F32) return static_cast<const float *>(p)[j];
  const std::uint16_t h = static_cast<const std::uint16_t *>(p)[j];
  return dtype == BF16 ? bf16_to_float(h) : f16_to_float(h);
}

FASTFP_HD void store_from_float(void *p, std::int64_t j, std::int32_t dtype, float v) {
  if (dtype == F32) {
    static_cast<float *>(p)[j] = v;
  } else {
    static_cast<std::uint16_t *>(p)[j] = dtype == BF16 ? float_to_bf16(v) : float_to_f16(v);
  }
}

inline int itemsize(std::int32_t dtype) { return dtype == F32 ? 4 : 2; }

}  // namespace noise
}  // namespace fastfp
