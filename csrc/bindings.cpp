// The one nanobind binding file of fastfp._ext. Arrays arrive through DLPack
// (numpy, torch, cupy) without linking libtorch; .noconvert() refuses silent copies.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastfp.h"
#include "noise.h"

namespace nb = nanobind;

// ---------------------------------------------------------------------------- weight noise

using AnyArray = nb::ndarray<>;

static std::string item(const char *name, std::size_t i) {
  return std::string(name) + "[" + std::to_string(i) + "]";
}

static std::int32_t noise_dtype(const AnyArray &a, const std::string &name) {
  const nb::dlpack::dtype d = a.dtype();
  if (d.lanes == 1 && d.bits == 32 && d.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float))
    return fastfp::noise::F32;
  if (d.lanes == 1 && d.bits == 16 && d.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat))
    return fastfp::noise::BF16;
  if (d.lanes == 1 && d.bits == 16 && d.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float))
    return fastfp::noise::F16;
  throw nb::type_error((name + ": expected float32, bfloat16 or float16").c_str());
}

// Row-major with no gaps (dims of extent 1 may carry any stride).
static void require_contiguous(const AnyArray &a, const std::string &name) {
  std::int64_t expect = 1;
  for (std::size_t d = a.ndim(); d-- > 0;) {
    if (a.shape(d) != 1 && a.stride(d) != expect)
      throw std::invalid_argument(name + ": must be contiguous (row-major, no strides)");
    expect *= static_cast<std::int64_t>(a.shape(d));
  }
}

static void require_device(const AnyArray &a, const std::string &name, const AnyArray &ref) {
  if (a.device_type() != ref.device_type() || a.device_id() != ref.device_id())
    throw std::invalid_argument(name + ": on another device than masters[0] (all arrays must share one)");
  if (a.device_type() != nb::device::cpu::value && a.device_type() != nb::device::cuda::value)
    throw std::invalid_argument(name + ": expected a CPU or CUDA array");
}

static float check_delta(double delta) {
  if (!(delta >= 0.0) || !std::isfinite(delta))
    throw std::invalid_argument("delta: expected a finite number >= 0");
  return static_cast<float>(delta);
}

// The offset of a draw: `add` plus, when given, the value of the one-element int64 array
// `offset_at` (read as unsigned 64-bit). A CPU array is read here; a CUDA array is read by the
// kernel itself, so a captured CUDA graph draws the stream its replay finds in device memory.
struct Offset {
  std::uint64_t add = 0;
  const std::int64_t *at = nullptr;  // device memory (CUDA) or nullptr
};

using OffsetArray = nb::ndarray<const std::int64_t, nb::ndim<1>, nb::c_contig>;

static void run_noise(const std::vector<fastfp::NoiseTensor> &table, int device_type, int device,
                      float delta, std::uint64_t seed, Offset offset, std::uintptr_t stream) {
  const bool cuda = device_type == nb::device::cuda::value;
  nb::gil_scoped_release release;
  if (!cuda) {
    fastfp::noise_perturb_cpu(table.data(), static_cast<int>(table.size()), delta, seed,
                              offset.add);
    return;
  }
#if defined(FASTFP_WITH_CUDA)
  fastfp::noise_perturb_cuda(table.data(), static_cast<int>(table.size()), delta, seed, offset.add,
                             offset.at, device, stream);
#else
  (void)device;
  (void)stream;
  throw std::runtime_error("fastfp._ext was built without CUDA: rebuild on a machine with nvcc");
#endif
}

// A validated multi-tensor noise launch, reusable: building it converts every array once
// (DLPack, a few microseconds each); each run() is then one parallel region / kernel launch.
// It holds its arrays through DLPack, so their memory stays valid while the plan lives; it cannot
// see a later resize or replacement of a torch tensor (fastfp.noise.Perturber re-binds then).
class NoisePlan {
 public:
  NoisePlan(std::vector<AnyArray> masters, std::vector<AnyArray> outs)
      : masters_(std::move(masters)), outs_(std::move(outs)) {
    if (masters_.empty()) throw std::invalid_argument("masters: expected at least one array, got none");
    if (outs_.size() != masters_.size())
      throw std::invalid_argument("outs: expected one array per master (" +
                                  std::to_string(masters_.size()) + "), got " +
                                  std::to_string(outs_.size()));
    table_.resize(masters_.size());
    std::int64_t base = 0;
    for (std::size_t i = 0; i < masters_.size(); ++i) {
      const AnyArray &a = masters_[i], &o = outs_[i];
      const std::int32_t dt = noise_dtype(a, item("masters", i));
      if (noise_dtype(o, item("outs", i)) != dt)
        throw nb::type_error((item("outs", i) + ": dtype differs from masters[i]").c_str());
      if (o.size() != a.size())
        throw std::invalid_argument(item("outs", i) + ": must have as many elements as masters[i]");
      require_contiguous(a, item("masters", i));
      require_contiguous(o, item("outs", i));
      require_device(a, item("masters", i), masters_[0]);
      require_device(o, item("outs", i), masters_[0]);
      table_[i] = {a.data(), o.data(), static_cast<std::int64_t>(a.size()), base, dt};
      base += static_cast<std::int64_t>(a.size());
    }
    device_type_ = masters_[0].device_type();
    device_id_ = masters_[0].device_id();
  }

  void run(double delta, std::uint64_t seed, std::uint64_t offset, std::uintptr_t stream) const {
    run_noise(table_, device_type_, device_id_, check_delta(delta), seed, Offset{offset}, stream);
  }

  // run() with the offset read at run time from the one-element int64 array `offset_at` on the
  // plan's device, plus `add`: on CUDA the kernel reads it (no host sync, graph-capturable).
  void run_at(const OffsetArray &offset_at, double delta, std::uint64_t seed, std::uint64_t add,
              std::uintptr_t stream) const {
    const float d = check_delta(delta);
    if (offset_at.size() != 1)
      throw std::invalid_argument("offset: expected a one-element int64 array, got " +
                                  std::to_string(offset_at.size()) + " elements");
    if (offset_at.device_type() != device_type_ || offset_at.device_id() != device_id_)
      throw std::invalid_argument("offset: on another device than the plan's arrays");
    Offset o{add};
    if (device_type_ == nb::device::cuda::value)
      o.at = offset_at.data();
    else
      o.add += static_cast<std::uint64_t>(offset_at.data()[0]);
    run_noise(table_, device_type_, device_id_, d, seed, o, stream);
  }

#if defined(FASTFP_WITH_CUDA)
  void emulate_cuda(double delta, std::uint64_t seed, std::uint64_t offset) const {
    if (device_type_ != nb::device::cpu::value)
      throw std::invalid_argument("masters: the CUDA-kernel emulation takes CPU arrays");
    const float d = check_delta(delta);
    nb::gil_scoped_release release;
    fastfp::noise_emulate_cuda(table_.data(), static_cast<int>(table_.size()), d, seed, offset);
  }
#endif

  std::size_t size() const { return table_.size(); }
  std::int64_t numel() const { return table_.back().base + table_.back().numel; }

 private:
  std::vector<AnyArray> masters_, outs_;  // keep DLPack-imported arrays alive
  std::vector<fastfp::NoiseTensor> table_;
  int device_type_ = 0, device_id_ = 0;
};

static void noise_perturb(std::vector<AnyArray> masters, std::vector<AnyArray> outs, double delta,
                          std::uint64_t seed, std::uint64_t offset, std::uintptr_t stream) {
  NoisePlan(std::move(masters), std::move(outs)).run(delta, seed, offset, stream);
}

static void noise_fill(const AnyArray &out, std::int64_t start, double delta, std::uint64_t seed,
                       std::uint64_t offset, std::uintptr_t stream) {
  if (noise_dtype(out, "out") != fastfp::noise::F32)
    throw nb::type_error("out: expected float32");
  require_contiguous(out, "out");
  require_device(out, "out", out);
  if (start < 0) throw std::invalid_argument("start: expected an int >= 0");
  const float d = check_delta(delta);
  if (out.size() == 0) return;
  std::vector<fastfp::NoiseTensor> table{
      {nullptr, out.data(), static_cast<std::int64_t>(out.size()), start, fastfp::noise::F32}};
  run_noise(table, out.device_type(), out.device_id(), d, seed, Offset{offset}, stream);
}

// ---------------------------------------------------------------------------- FBI guard cover

using U64Rows = nb::ndarray<const std::uint64_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using U64Row = nb::ndarray<const std::uint64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using I64Row = nb::ndarray<const std::int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

static std::vector<std::int64_t> guard_cover(const U64Rows &cols, const U64Row &right,
                                             const U64Row &wrong, const I64Row &order) {
  const std::int64_t W = static_cast<std::int64_t>(cols.shape(0));
  const std::int64_t P = static_cast<std::int64_t>(cols.shape(1));
  if (right.shape(0) != cols.shape(0) || wrong.shape(0) != cols.shape(0))
    throw std::invalid_argument("right, wrong: expected one word per row of cols (" +
                                std::to_string(W) + ")");
  if (order.shape(0) != cols.shape(1))
    throw std::invalid_argument("order: expected one entry per column of cols (" +
                                std::to_string(P) + ")");
  if (P > (std::int64_t{1} << 32))
    throw std::invalid_argument("cols: at most 2^32 columns");
  nb::gil_scoped_release release;
  return fastfp::guard_cover_cpu(cols.data(), W, P, right.data(), wrong.data(), order.data());
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
  m.def("noise_perturb", &noise_perturb, nb::arg("masters").noconvert(), nb::arg("outs").noconvert(),
        nb::arg("delta"), nb::arg("seed"), nb::arg("offset") = 0, nb::arg("stream") = 0,
        "outs[i] = masters[i] + U(-delta, delta) for a list of contiguous float32/bfloat16/float16\n"
        "arrays on one device (CPU: one OpenMP region; CUDA: one launch per 40 arrays on `stream`).\n"
        "Noise of element i of the list laid end to end: Philox4x32-10 word i % 4 of counter\n"
        "(i // 4, offset), key seed; outs[i] may be masters[i] (in place).");
  nb::class_<NoisePlan>(m, "NoisePlan",
                        "noise_perturb(masters, outs, ...) validated once, run many times")
      .def(nb::init<std::vector<AnyArray>, std::vector<AnyArray>>(), nb::arg("masters").noconvert(),
           nb::arg("outs").noconvert())
      .def("run", &NoisePlan::run, nb::arg("delta"), nb::arg("seed"), nb::arg("offset") = 0,
           nb::arg("stream") = 0)
      .def("run_at", &NoisePlan::run_at, nb::arg("offset").noconvert(), nb::arg("delta"),
           nb::arg("seed"), nb::arg("add") = 0, nb::arg("stream") = 0,
           "run() with the stream offset[0] + add, offset being a one-element int64 array on the\n"
           "plan's device (CUDA: read by the kernel, so a captured graph sees each replay's value)")
#if defined(FASTFP_WITH_CUDA)
      .def("_emulate_cuda", &NoisePlan::emulate_cuda, nb::arg("delta"), nb::arg("seed"),
           nb::arg("offset") = 0, "run the CUDA kernel's per-thread code on the host (tests)")
#endif
      .def("__len__", &NoisePlan::size)
      .def_prop_ro("numel", &NoisePlan::numel);
  m.def("noise_fill", &noise_fill, nb::arg("out").noconvert(), nb::arg("start"), nb::arg("delta"),
        nb::arg("seed"), nb::arg("offset") = 0, nb::arg("stream") = 0,
        "out = the float32 noise of global indices start .. start + out.size - 1");
  m.def("guard_cover", &guard_cover, nb::arg("cols").noconvert(), nb::arg("right").noconvert(),
        nb::arg("wrong").noconvert(), nb::arg("order").noconvert(),
        "The FBI open world's greedy guard cover of one draw: cols (W, P) uint64 packed\n"
        "correctness of the pool's P columns (bit m of row w: model 64 w + m), right / wrong (W,)\n"
        "uint64 the models that can get a correct / a wrong query (the OR of the columns, and\n"
        "NOT their AND over the real models: then every column meets one requirement of every\n"
        "model, so order[0] is the first pick), order (P,) int64 the columns in the draw's order\n"
        "(ties go to the earliest). Returns the picked columns in order.");
}
