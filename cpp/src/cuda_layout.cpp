// Canonical HiNM container -> the CUDA kernel's device-ready layout (see hinm/cuda_layout.hpp).
#include "hinm/cuda_layout.hpp"

#include <stdexcept>
#include <string>

#include "hinm/parallel.hpp"

namespace hinm {

namespace {

void check_inputs(const HiNMView& w, const Matrix& frag_values, const Matrix& lane_words) {
  if (w.pattern.n != 2 || w.pattern.m != 4)
    throw std::invalid_argument("pack_cuda_layout: the CUDA kernel runs 2:4 only, got " +
                                std::to_string(w.pattern.n) + ":" + std::to_string(w.pattern.m));
  if (w.values.dtype != DType::f16 && w.values.dtype != DType::bf16)
    throw std::invalid_argument(std::string("pack_cuda_layout: values must be float16 or bfloat16, got ") +
                                dtype_name(w.values.dtype));
  if (w.v < 1 || w.rows < 0 || w.kept < 0 || w.kept % 4 != 0)
    throw std::invalid_argument("pack_cuda_layout: bad geometry (v=" + std::to_string(w.v) +
                                ", kept=" + std::to_string(w.kept) + ")");
  const int64_t slots = w.slots(), kc = w.compressed_cols();
  require(w.values, "values", w.values.dtype, slots, kc);
  require(w.positions, "positions", DType::u8, slots, kc);
  const int64_t sp = cuda_layout::slots_padded(slots), kp = cuda_layout::kept_padded(w.kept);
  require(frag_values, "frag_values", w.values.dtype, sp, kp / 2);
  require(lane_words, "lane_words", DType::u32, sp / 32, kp);
  if (frag_values.stride != frag_values.cols || lane_words.stride != lane_words.cols)
    throw std::invalid_argument("pack_cuda_layout: frag_values and lane_words must be contiguous");
}

}  // namespace

void pack_cuda_layout(const HiNMView& w, const Matrix& frag_values, const Matrix& lane_words) {
  check_inputs(w, frag_values, lane_words);
  const int64_t kc = w.compressed_cols(), ks = cuda_layout::kslices(w.kept);
  const int64_t sp = cuda_layout::slots_padded(w.slots());
  auto* frag = static_cast<uint16_t*>(frag_values.data);
  auto* words = static_cast<uint32_t*>(lane_words.data);
  // One chunk = 32 slot rows: the rows sharing lane words, so no two threads touch the same word.
  // Padding rows (s >= R, whatever their stored positions) and columns: zero values, code (0, 1).
  parallel_for(sp / 32, 4, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      for (int64_t mtile = 2 * blk; mtile < 2 * blk + 2; ++mtile)
        for (int64_t kk = 0; kk < ks; ++kk)
          for (int lane = 0; lane < 32; ++lane)
            for (int e = 0; e < 8; ++e) {
              const int64_t s = 16 * mtile + sptc::a_frag_row(lane, e / 2);
              const int64_t c = 16 * kk + sptc::a_frag_ccol(lane, e / 2, e % 2);
              const bool real = s < w.rows && c < kc;
              frag[cuda_layout::frag_block_index(mtile, kk, lane, e, ks)] =
                  real ? w.values.row<const uint16_t>(s)[c] : uint16_t(0);
            }
      for (int64_t s = blk * 32; s < blk * 32 + 32; ++s) {
        const bool real = s < w.rows;
        const auto* pos = real ? w.positions.row<const uint8_t>(s) : nullptr;
        for (int64_t q = 0; q < ks * 8; ++q) {
          uint32_t code = sptc::code_of(0, 1);
          if (real && q < kc / 2) {
            const int p0 = pos[2 * q], p1 = pos[2 * q + 1];
            if (!(p0 < p1 && p1 < 4))
              throw std::invalid_argument("pack_cuda_layout: positions of slot " + std::to_string(s) + ", group " +
                                          std::to_string(q) + " are not strictly increasing in [0, 4)");
            code = sptc::code_of(p0, p1);
          }
          uint32_t& word = words[cuda_layout::lane_word_index(s, q, ks)];
          const int sh = cuda_layout::lane_word_shift(s, q);
          word = (word & ~(0xfu << sh)) | (code << sh);
        }
      }
    }
  });
}

}  // namespace hinm
