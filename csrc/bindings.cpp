// The one nanobind binding file of fastfp._ext. Arrays arrive through DLPack
// (numpy, torch, cupy) without linking libtorch; .noconvert() refuses silent copies.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <stdexcept>
#include <string>

#include "fastfp.h"

namespace nb = nanobind;

using CpuF32 = nb::ndarray<float, nb::device::cpu, nb::c_contig>;
using CpuF32Const = nb::ndarray<const float, nb::device::cpu, nb::c_contig>;

static void sign_step_cpu(CpuF32Const x, CpuF32Const g, CpuF32 out, float alpha,
                          float lo, float hi) {
  if (x.size() != g.size())
    throw std::invalid_argument("grad: must have as many elements as x");
  if (x.size() != out.size())
    throw std::invalid_argument("out: must have as many elements as x");
  nb::gil_scoped_release release;
  fastfp::sign_step_f32(x.data(), g.data(), out.data(),
                        static_cast<std::int64_t>(x.size()), alpha, lo, hi);
}

NB_MODULE(_ext, m) {
  m.doc() = "fastfp compiled extension (C++/OpenMP, optional CUDA)";
  m.def("build_info", []() {
    nb::dict d;
#if defined(FASTFP_WITH_OPENMP)
    d["openmp"] = true;
#else
    d["openmp"] = false;
#endif
#if defined(FASTFP_WITH_CUDA)
    d["cuda"] = true;
#else
    d["cuda"] = false;
#endif
    d["threads"] = fastfp::openmp_max_threads();
    return d;
  });
  m.def("sign_step_cpu", &sign_step_cpu, nb::arg("x").noconvert(),
        nb::arg("grad").noconvert(), nb::arg("out").noconvert(), nb::arg("alpha"),
        nb::arg("lo"), nb::arg("hi"),
        "out = clamp(x - alpha * sign(grad), lo, hi) on contiguous float32 CPU arrays");
}
