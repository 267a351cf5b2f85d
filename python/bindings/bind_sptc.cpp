#include "common.hpp"
#include "hinm/sptc.hpp"

using namespace hinm::py;

namespace {

hinm::DType value_dtype(const std::string& name) {
  if (name == "float16") return hinm::DType::f16;
  if (name == "bfloat16") return hinm::DType::bf16;
  if (name == "float32") return hinm::DType::f32;
  if (name == "int8") return hinm::DType::i8;
  throw nb::value_error(("dtype " + name + " has no sparse-tensor-core format (float16, bfloat16, int8, float32)").c_str());
}

}  // namespace

// The metadata buffer is passed as any contiguous array of the right byte size (the Python layer
// hands a uint8 view of either layout).
void bind_sptc(nb::module_& m) {
  m.def("sptc_compress", [](InArray dense, OutArray values, OutArray metadata) {
    auto d = as_matrix(dense, "dense");
    auto v = as_matrix(values, "values");
    auto e = as_matrix(metadata, "metadata");
    nb::gil_scoped_release nogil;
    hinm::sptc_compress(d, v, e);
  }, nb::arg("dense"), nb::arg("values"), nb::arg("metadata"));

  m.def("sptc_decompress", [](InArray values, InArray metadata, OutArray dense) {
    auto v = as_matrix(values, "values");
    auto e = as_matrix(metadata, "metadata");
    auto d = as_matrix(dense, "dense");
    nb::gil_scoped_release nogil;
    hinm::sptc_decompress(v, e, d);
  }, nb::arg("values"), nb::arg("metadata"), nb::arg("dense"));

  m.def("sptc_metadata_from_positions", [](InArray positions, const std::string& dtype, OutArray metadata) {
    auto p = as_matrix(positions, "positions");
    auto e = as_matrix(metadata, "metadata");
    const hinm::DType t = value_dtype(dtype);
    nb::gil_scoped_release nogil;
    hinm::sptc_metadata_from_positions(p, t, e);
  }, nb::arg("positions"), nb::arg("dtype"), nb::arg("metadata"));

  m.def("sptc_check_shape", [](const std::string& dtype, int64_t rows, int64_t cols, const std::string& what) {
    hinm::sptc_check_shape(value_dtype(dtype), rows, cols, what.c_str());
  }, nb::arg("dtype"), nb::arg("rows"), nb::arg("cols"), nb::arg("what") = "dense");
}
