#include "fastfp.h"
#if defined(FASTFP_WITH_OPENMP)
#include <omp.h>
#endif

namespace fastfp {
int openmp_max_threads() {
#if defined(FASTFP_WITH_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}
} // namespace fastfp
