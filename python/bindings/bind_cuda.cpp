#include <cstdint>

#include "common.hpp"
#include "hinm/cuda_layout.hpp"
#include "hinm/cuda_spmm.hpp"

using namespace hinm::py;

namespace {

// A 2-D CUDA array: its data pointer and row stride (elements); the last axis must be contiguous.
struct DeviceArray {
  const void* data = nullptr;
  hinm::DType dtype = hinm::DType::f32;
  int64_t rows = 0, cols = 0, stride = 0;
  int device = -1;
};

template <class A>
DeviceArray device_array(const A& a, const std::string& name) {
  if (a.device_type() != nb::device::cuda::value)
    throw nb::value_error((name + " must be a CUDA array").c_str());
  DeviceArray d;
  d.data = a.data();
  d.dtype = dtype_of(a.dtype(), name);
  d.device = int(a.device_id());
  if (a.ndim() == 1) {
    d.rows = 1;
    d.cols = int64_t(a.shape(0));
    if (d.cols > 1 && a.stride(0) != 1) throw nb::value_error((name + " must be contiguous").c_str());
    d.stride = d.cols;
  } else if (a.ndim() == 2) {
    d.rows = int64_t(a.shape(0));
    d.cols = int64_t(a.shape(1));
    if (d.cols > 1 && a.stride(1) != 1)
      throw nb::value_error((name + " must have a contiguous last axis").c_str());
    d.stride = d.rows > 1 ? int64_t(a.stride(0)) : d.cols;
    if (d.rows > 1 && d.stride < d.cols) throw nb::value_error((name + " has an overlapping row stride").c_str());
  } else {
    throw nb::value_error((name + " must be 1-D or 2-D").c_str());
  }
  return d;
}

void require_shape(const DeviceArray& a, const std::string& name, hinm::DType dtype, int64_t rows, int64_t cols,
                   int device) {
  if (a.dtype != dtype)
    throw nb::type_error((name + ": expected dtype " + hinm::dtype_name(dtype) + ", got " + hinm::dtype_name(a.dtype)).c_str());
  if ((rows >= 0 && a.rows != rows) || (cols >= 0 && a.cols != cols))
    throw nb::value_error((name + ": expected shape (" + std::to_string(rows) + ", " + std::to_string(cols) + "), got (" +
                           std::to_string(a.rows) + ", " + std::to_string(a.cols) + ")").c_str());
  if (a.device != device) throw nb::value_error((name + " is on another CUDA device").c_str());
}

}  // namespace

void bind_cuda(nb::module_& m) {
  m.def("cuda_layout_shape", [](int64_t slots, int64_t kept) {
    const int64_t sp = hinm::cuda_layout::slots_padded(slots), kp = hinm::cuda_layout::kept_padded(kept);
    return nb::make_tuple(sp, kp / 2, sp / 32, kp);
  }, nb::arg("slots"), nb::arg("kept"),
     "(frag rows, frag cols, lane-word rows, lane-word cols) of the CUDA device-ready layout");

  m.def("cuda_pack_layout", [](InArray values, InArray positions, int64_t rows, int64_t cols, int v, int64_t kept,
                               OutArray frag_values, OutArray lane_words) {
    hinm::HiNMView w;
    w.rows = rows;
    w.cols = cols;
    w.v = v;
    w.kept = kept;
    w.values = as_matrix(values, "values");
    w.positions = as_matrix(positions, "positions");
    auto f = as_matrix(frag_values, "frag_values");
    auto l = as_matrix(lane_words, "lane_words");
    nb::gil_scoped_release nogil;
    hinm::pack_cuda_layout(w, f, l);
  }, nb::arg("values"), nb::arg("positions"), nb::arg("rows"), nb::arg("cols"), nb::arg("v"), nb::arg("kept"),
     nb::arg("frag_values"), nb::arg("lane_words"));

  m.def("cuda_hinm_spmm", [](InArray frag_values, InArray lane_words, std::optional<InArray> col_idx,
                             std::optional<InArray> row_perm, std::optional<InArray> bias, int64_t rows, int64_t cols,
                             int v, int64_t kept, InArray x, int64_t n, OutArray y, bool accumulate, uintptr_t stream) {
    const auto f = device_array(frag_values, "frag_values");
    const int dev = f.device;
    hinm::HiNMDeviceView w;
    w.rows = rows;
    w.cols = cols;
    w.v = v;
    w.kept = kept;
    w.dtype = f.dtype;
    if (v < 1) throw nb::value_error("v must be >= 1");
    const int64_t slots = w.slots();  // the layout was packed for every slot row
    const int64_t sp = hinm::cuda_layout::slots_padded(slots), kp = hinm::cuda_layout::kept_padded(kept);
    require_shape(f, "frag_values", f.dtype, sp, kp / 2, dev);
    const auto l = device_array(lane_words, "lane_words");
    require_shape(l, "lane_words", hinm::DType::u32, sp / 32, kp, dev);
    w.frag_values = f.data;
    w.lane_words = static_cast<const uint32_t*>(l.data);
    if (col_idx) {
      const auto c = device_array(*col_idx, "col_idx");
      require_shape(c, "col_idx", hinm::DType::i32, w.tiles(), kept, dev);
      w.col_idx = static_cast<const int32_t*>(c.data);
    }
    if (row_perm) {
      const auto r = device_array(*row_perm, "row_perm");
      require_shape(r, "row_perm", hinm::DType::i64, 1, rows, dev);
      w.row_perm = static_cast<const int64_t*>(r.data);
    }
    const void* bias_ptr = nullptr;
    if (bias) {
      const auto b = device_array(*bias, "bias");
      require_shape(b, "bias", f.dtype, 1, rows, dev);
      bias_ptr = b.data;
    }
    const auto xa = device_array(x, "x");
    require_shape(xa, "x", f.dtype, cols, -1, dev);
    const auto ya = device_array(y, "y");
    require_shape(ya, "y", f.dtype, rows, -1, dev);
    if (n < 0 || n > ya.cols || (n + 7) / 8 * 8 > xa.cols)
      throw nb::value_error(("n=" + std::to_string(n) + " does not fit x (" + std::to_string(xa.cols) +
                             " columns, needs roundup(n, 8)) or y (" + std::to_string(ya.cols) + " columns)").c_str());
    nb::gil_scoped_release nogil;
    hinm::cuda_hinm_spmm(w, xa.data, n, xa.stride, const_cast<void*>(ya.data), ya.stride, bias_ptr, accumulate,
                         reinterpret_cast<void*>(stream));
  }, nb::arg("frag_values"), nb::arg("lane_words"), nb::arg("col_idx").none(), nb::arg("row_perm").none(),
     nb::arg("bias").none(), nb::arg("rows"), nb::arg("cols"), nb::arg("v"), nb::arg("kept"), nb::arg("x"),
     nb::arg("n"), nb::arg("y"), nb::arg("accumulate"), nb::arg("stream"),
     "y[row_perm[s], :n] (+)= W x[:, :n] (+ bias) on the GPU; asynchronous on `stream` (a cudaStream_t as int)");
}
