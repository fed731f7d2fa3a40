// The greedy cover of the FBI open world's guard (every model gets >= 1 correct and >= 1 wrong
// query; fastfp.fbi.openworld._Guard): the same picks as its numpy strategy and the literal
// reference.select_inputs. Models are bits (64 to a word) of a column's packed correctness. After
// the first pick each model has at most one unmet requirement, and a column meets it iff the
// column's bit differs from the model's bit of `need_wrong`; a step counts that per column (xor,
// mask, popcount over the words holding unmet models), then takes the largest count, ties to the
// column first in the draw's order. Counts are kept for blocks of columns in L1 while the
// word-major rows stream by; on x86 the loop is compiled for AVX-512's vector popcount and for
// the popcnt instruction, picked at load. One thread: a step takes tens of microseconds, less
// than waking a thread team, whose spinning would also slow torch's own threads.
#include "fastfp.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastfp {
namespace {

constexpr std::int64_t kBlock = 256;  // columns whose counts stay in L1 while the words stream by

// The largest key (count << 32 | low_rank) over all P columns: count = the unmet requirements
// the column meets (popcount((col ^ flip[w]) & mask[w]) summed over the live words), so the key
// is the best count, ties to the lowest rank (keys are unique).
inline __attribute__((always_inline)) std::uint64_t best_key_body(
    const std::uint64_t *cols, std::int64_t P, const std::int64_t *live, std::int64_t n_live,
    const std::uint64_t *flip, const std::uint64_t *mask, const std::uint32_t *low_rank) {
  std::uint64_t best = 0;
  std::uint64_t count[kBlock];
  for (std::int64_t j0 = 0; j0 < P; j0 += kBlock) {
    const std::int64_t n = std::min(kBlock, P - j0);
    for (std::int64_t k = 0; k < n; ++k) count[k] = 0;
    for (std::int64_t i = 0; i < n_live; ++i) {
      const std::int64_t w = live[i];
      const std::uint64_t *c = cols + w * P + j0;
      const std::uint64_t f = flip[w], m = mask[w];
      for (std::int64_t k = 0; k < n; ++k)
        count[k] += static_cast<std::uint64_t>(__builtin_popcountll((c[k] ^ f) & m));
    }
    for (std::int64_t k = 0; k < n; ++k) {
      const std::uint64_t key = (count[k] << 32) | low_rank[j0 + k];
      best = key > best ? key : best;
    }
  }
  return best;
}

using BestKey = std::uint64_t (*)(const std::uint64_t *, std::int64_t, const std::int64_t *,
                                  std::int64_t, const std::uint64_t *, const std::uint64_t *,
                                  const std::uint32_t *);

std::uint64_t best_key_generic(const std::uint64_t *cols, std::int64_t P, const std::int64_t *live,
                               std::int64_t n_live, const std::uint64_t *flip,
                               const std::uint64_t *mask, const std::uint32_t *low_rank) {
  return best_key_body(cols, P, live, n_live, flip, mask, low_rank);
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// The same code for the popcnt instruction, and for AVX-512's vector popcount (vpopcntq).
__attribute__((target("popcnt"))) std::uint64_t best_key_popcnt(
    const std::uint64_t *cols, std::int64_t P, const std::int64_t *live, std::int64_t n_live,
    const std::uint64_t *flip, const std::uint64_t *mask, const std::uint32_t *low_rank) {
  return best_key_body(cols, P, live, n_live, flip, mask, low_rank);
}

__attribute__((target("avx512f,avx512vl,avx512vpopcntdq"))) std::uint64_t best_key_avx512(
    const std::uint64_t *cols, std::int64_t P, const std::int64_t *live, std::int64_t n_live,
    const std::uint64_t *flip, const std::uint64_t *mask, const std::uint32_t *low_rank) {
  return best_key_body(cols, P, live, n_live, flip, mask, low_rank);
}

BestKey pick_best_key() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("avx512vl"))
    return best_key_avx512;
  if (__builtin_cpu_supports("popcnt")) return best_key_popcnt;
  return best_key_generic;
}
#else
BestKey pick_best_key() { return best_key_generic; }
#endif

}  // namespace

std::vector<std::int64_t> guard_cover_cpu(const std::uint64_t *cols, std::int64_t W,
                                          std::int64_t P, const std::uint64_t *right,
                                          const std::uint64_t *wrong, const std::int64_t *order) {
  std::vector<std::int64_t> chosen;
  bool any = false;
  for (std::int64_t w = 0; w < W; ++w) any = any || (right[w] | wrong[w]);
  if (!any || P == 0) return chosen;
  // low_rank[j] = ~(place of column j in the draw): a larger key wins ties
  std::vector<std::uint32_t> low_rank(P, 0);
  std::vector<char> seen(P, 0);
  for (std::int64_t i = 0; i < P; ++i) {
    const std::int64_t j = order[i];
    if (j < 0 || j >= P || seen[j])
      throw std::invalid_argument("order: expected a permutation of 0 .. " + std::to_string(P - 1));
    seen[j] = 1;
    low_rank[j] = ~static_cast<std::uint32_t>(i);
  }
  std::vector<std::uint64_t> need_right(right, right + W), need_wrong(wrong, wrong + W);
  std::vector<std::uint64_t> mask(W);
  std::vector<std::int64_t> live;
  static const BestKey best_key = pick_best_key();
  // first pick: every column meets exactly one requirement of every model, a tie for all
  std::int64_t pick = order[0];
  for (;;) {
    chosen.push_back(pick);
    live.clear();
    for (std::int64_t w = 0; w < W; ++w) {
      const std::uint64_t bit = cols[w * P + pick];
      need_right[w] &= ~bit;
      need_wrong[w] &= bit;
      mask[w] = need_right[w] | need_wrong[w];
      if (mask[w]) live.push_back(w);
    }
    if (live.empty()) return chosen;
    const std::uint64_t key = best_key(cols, P, live.data(), static_cast<std::int64_t>(live.size()),
                                       need_wrong.data(), mask.data(), low_rank.data());
    // each pick meets >= 1 requirement, so the cover ends, unless one cannot be met at all
    if ((key >> 32) == 0)
      throw std::invalid_argument(
          "right, wrong: a model needs a correct or a wrong column that no column gives");
    pick = order[static_cast<std::uint32_t>(~static_cast<std::uint32_t>(key))];
  }
}

}  // namespace fastfp
