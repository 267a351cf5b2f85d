// N:M patterns: n kept out of every m consecutive elements along the reduction (K) axis.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace hinm {

struct NMPattern {
  int n = 2;
  int m = 4;

  // Throws std::invalid_argument unless 1 <= n < m <= 256 (positions are stored in one byte).
  void validate() const {
    if (m < 2 || m > 256)
      throw std::invalid_argument("N:M pattern: m must be in [2, 256], got m=" + std::to_string(m));
    if (n < 1 || n >= m)
      throw std::invalid_argument("N:M pattern: need 1 <= n < m, got " + std::to_string(n) + ":" +
                                  std::to_string(m));
  }
  // Throws unless k is a multiple of m.
  void check_k(int64_t k, const char* what = "K") const {
    if (k % m != 0)
      throw std::invalid_argument(std::string(what) + "=" + std::to_string(k) + " is not a multiple of m=" +
                                  std::to_string(m) + " for the " + std::to_string(n) + ":" +
                                  std::to_string(m) + " pattern");
  }
  int64_t compressed_cols(int64_t k) const { return k / m * n; }
};

}  // namespace hinm
