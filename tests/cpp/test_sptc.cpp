// Sparse-tensor-core compression in the C++ core, checked by emulating one warp's
// mma.sp.m16n8k32 (f16, selector 0/1 per m16 tile) on the CPU: the A fragments come from the
// compressed values through the shared fragment functions, the metadata from the lane words through
// the PTX rule (sptc-metadata.md §1.5, written out here independently), and the product must equal
// the dense product exactly (small integers).
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "hinm/hinm.hpp"

using namespace hinm;

namespace {

constexpr int kRows = 64, kCols = 64, kN = 8;

// A 2:4 matrix of small integers with every kind of chunk (2, 1 and 0 nonzeros).
std::vector<uint16_t> make_dense() {
  std::vector<uint16_t> d(kRows * kCols, 0);
  const int combos[6][2] = {{0, 1}, {0, 2}, {1, 2}, {0, 3}, {1, 3}, {2, 3}};
  for (int r = 0; r < kRows; ++r)
    for (int q = 0; q < kCols / 4; ++q) {
      const int h = (r * 7 + q * 13) % 8;
      if (h == 6) continue;                          // empty chunk
      const int* c = combos[h % 6];
      d[r * kCols + q * 4 + c[0]] = f32_to_f16(float((r + 2 * q) % 7 - 3 ? (r + 2 * q) % 7 - 3 : 5));
      if (h != 7) d[r * kCols + q * 4 + c[1]] = f32_to_f16(float((3 * r + q) % 5 + 1));
    }
  return d;
}

}  // namespace

TEST(sptc_warp_emulation_reproduces_dense_product) {
  std::vector<uint16_t> dense = make_dense(), values(kRows * kCols / 2);
  std::vector<uint32_t> meta(sptc_meta_words(DType::f16, kRows, kCols));
  sptc_compress(make_matrix(dense.data(), DType::f16, kRows, kCols), make_matrix(values.data(), DType::f16, kRows, kCols / 2),
                meta.data());
  std::vector<float> b(kCols * kN);
  for (int k = 0; k < kCols; ++k)
    for (int n = 0; n < kN; ++n) b[k * kN + n] = float((3 * k + 5 * n) % 7 - 3);

  for (int tile = 0; tile < kRows / 16; ++tile) {
    const int sel = tile % 2;  // two m16 tiles share one lane word per 32-row block
    float acc[32][4] = {};
    for (int ks = 0; ks < kCols / 32; ++ks) {
      const uint32_t* e = meta.data() + (int64_t(ks) * (kRows / 32) + tile / 2) * 32;  // this block's lane words
      // The hardware's view: row rho of the tile expands its 16 compressed values with the codes
      // supplied by lane 4*(rho%8) + 2*sel + (q/4), bits 16*(rho/8) + 4*(q%4) + [0, 4).
      for (int rho = 0; rho < 16; ++rho) {
        float a_dense[32] = {};
        for (int q = 0; q < 8; ++q) {
          const uint32_t word = e[4 * (rho % 8) + 2 * sel + q / 4];
          const uint32_t code = word >> (16 * (rho / 8) + 4 * (q % 4)) & 0xF;
          CHECK((code & 3) < (code >> 2));
          // value registers: compressed column 2q, 2q+1 of row rho come from the A fragment
          for (int half = 0; half < 2; ++half) {
            const int c = 2 * q + half;
            int found = 0;
            for (int lane = 0; lane < 32; ++lane)
              for (int el = 0; el < 8; ++el)
                if (sptc::frag_a_row(lane, el) == rho && sptc::frag_a_col(lane, el) == c) {
                  a_dense[4 * q + (half ? code >> 2 & 3 : code & 3)] =
                      f16_to_f32(values[(tile * 16 + rho) * (kCols / 2) + ks * 16 + c]);
                  ++found;
                }
            CHECK_EQ(found, 1);  // every compressed element sits in exactly one lane register
          }
        }
        for (int n = 0; n < kN; ++n) {
          float sum = 0;
          for (int k = 0; k < 32; ++k) sum += a_dense[k] * b[(ks * 32 + k) * kN + n];
          // accumulator register that holds (rho, n)
          for (int lane = 0; lane < 32; ++lane)
            for (int el = 0; el < 4; ++el)
              if (sptc::frag_c_row(lane, el) == rho && sptc::frag_c_n(lane, el) == n) acc[lane][el] += sum;
        }
      }
    }
    for (int lane = 0; lane < 32; ++lane)
      for (int el = 0; el < 4; ++el) {
        const int r = tile * 16 + sptc::frag_c_row(lane, el), n = sptc::frag_c_n(lane, el);
        float ref = 0;
        for (int k = 0; k < kCols; ++k) ref += f16_to_f32(dense[r * kCols + k]) * b[k * kN + n];
        CHECK_EQ(acc[lane][el], ref);
      }
  }
}

TEST(sptc_roundtrip_and_errors) {
  std::vector<uint16_t> dense = make_dense(), values(kRows * kCols / 2), back(kRows * kCols);
  std::vector<uint32_t> meta(sptc_meta_words(DType::f16, kRows, kCols));
  auto dm = make_matrix(dense.data(), DType::f16, kRows, kCols);
  auto vm = make_matrix(values.data(), DType::f16, kRows, kCols / 2);
  sptc_compress(dm, vm, meta.data());
  sptc_decompress(vm, meta.data(), make_matrix(back.data(), DType::f16, kRows, kCols));
  CHECK(back == dense);
  CHECK_THROWS(sptc_meta_words(DType::f16, 16, 64), std::invalid_argument);
  CHECK_THROWS(sptc_meta_words(DType::i8, 16, 32), std::invalid_argument);
  CHECK_THROWS(sptc_meta_words(DType::f64, 32, 32), std::invalid_argument);
  dense[3] = dense[0] = dense[1] = f32_to_f16(1.0f);
  CHECK_THROWS(sptc_compress(dm, vm, meta.data()), std::invalid_argument);
  meta[0] = 0;  // repeated indices: illegal code
  CHECK_THROWS(sptc_decompress(vm, meta.data(), make_matrix(back.data(), DType::f16, kRows, kCols)),
               std::invalid_argument);
}
