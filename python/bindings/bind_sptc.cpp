#include "common.hpp"
#include "hinm/sptc.hpp"

using namespace hinm::py;

namespace {

// The metadata buffer as u32 words: any dtype, C-contiguous, exactly `words` * 4 bytes.
template <class A>
uint32_t* meta_words(const A& a, int64_t words) {
  require_cpu(a, "metadata");
  int64_t bytes = a.itemsize();
  int64_t expect_stride = 1;
  for (int64_t d = int64_t(a.ndim()) - 1; d >= 0; --d) {
    if (a.shape(d) > 1 && a.stride(d) != expect_stride) throw nb::value_error("metadata must be C-contiguous");
    expect_stride *= int64_t(a.shape(d));
    bytes *= int64_t(a.shape(d));
  }
  if (bytes != words * 4)
    throw nb::value_error(("metadata has " + std::to_string(bytes) + " bytes, expected " + std::to_string(words * 4))
                              .c_str());
  return static_cast<uint32_t*>(const_cast<void*>(static_cast<const void*>(a.data())));
}

hinm::DType sptc_dtype(const std::string& name) {
  if (name == "float16") return hinm::DType::f16;
  if (name == "bfloat16") return hinm::DType::bf16;
  if (name == "int8") return hinm::DType::i8;
  if (name == "float32") return hinm::DType::f32;
  throw nb::type_error(("sparse tensor cores take float16, bfloat16, int8 or float32, not " + name).c_str());
}

}  // namespace

void bind_sptc(nb::module_& m) {
  m.def("sptc_meta_words", [](const std::string& dtype, int64_t rows, int64_t cols) {
    return hinm::sptc_meta_words(sptc_dtype(dtype), rows, cols);
  }, nb::arg("dtype"), nb::arg("rows"), nb::arg("cols"));

  m.def("sptc_compress", [](InArray dense, OutArray values, OutArray meta) {
    auto d = as_matrix(dense, "dense");
    auto v = as_matrix(values, "values");
    uint32_t* words = meta_words(meta, hinm::sptc_meta_words(d.dtype, d.rows, d.cols));
    nb::gil_scoped_release nogil;
    hinm::sptc_compress(d, v, words);
  }, nb::arg("dense"), nb::arg("values"), nb::arg("meta"));

  m.def("sptc_decompress", [](InArray values, InArray meta, OutArray dense) {
    auto v = as_matrix(values, "values");
    auto d = as_matrix(dense, "dense");
    const uint32_t* words = meta_words(meta, hinm::sptc_meta_words(d.dtype, d.rows, d.cols));
    nb::gil_scoped_release nogil;
    hinm::sptc_decompress(v, words, d);
  }, nb::arg("values"), nb::arg("meta"), nb::arg("dense"));

  m.def("sptc_metadata_from_positions", [](InArray positions, const std::string& dtype, int64_t cols, OutArray meta) {
    auto p = as_matrix(positions, "positions");
    const hinm::DType dt = sptc_dtype(dtype);
    uint32_t* words = meta_words(meta, hinm::sptc_meta_words(dt, p.rows, cols));
    nb::gil_scoped_release nogil;
    hinm::sptc_metadata_from_positions(p, dt, cols, words);
  }, nb::arg("positions"), nb::arg("dtype"), nb::arg("cols"), nb::arg("meta"));
}
