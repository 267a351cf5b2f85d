// Compresses a small matrix to 2:4 with the installed hinm library and checks the round trip.
#include <hinm/hinm.hpp>

#include <cstdio>
#include <vector>

int main() {
  const int64_t rows = 8, cols = 16, kc = cols / 2;
  std::vector<float> w(rows * cols), values(rows * kc), dense(rows * cols);
  std::vector<uint8_t> positions(rows * kc);
  for (int64_t i = 0; i < rows * cols; ++i) w[i] = float((i * 37) % 11) - 5.0f;

  const hinm::NMPattern pattern{2, 4};
  hinm::compress_nm(hinm::make_matrix(w.data(), hinm::DType::f32, rows, cols), hinm::Matrix{}, pattern,
                    hinm::make_matrix(values.data(), hinm::DType::f32, rows, kc),
                    hinm::make_matrix(positions.data(), hinm::DType::u8, rows, kc));
  hinm::decompress_nm(hinm::make_matrix(values.data(), hinm::DType::f32, rows, kc),
                      hinm::make_matrix(positions.data(), hinm::DType::u8, rows, kc), pattern,
                      hinm::make_matrix(dense.data(), hinm::DType::f32, rows, cols));
  int kept = 0;
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (dense[i] != 0.0f) {
      ++kept;
      if (dense[i] != w[i]) return 2;
    }
  }
  std::printf("hinm %s consumer: kept %d of %lld\n", hinm::version().c_str(), kept, (long long)(rows * cols));
  return kept <= rows * cols / 2 ? 0 : 1;
}
