// A tiny seeded PRNG (splitmix64) for the permutation search. Every random draw comes from a
// stream derived from (seed, stage, iteration, item), never from a thread, so results do not
// depend on the thread count.
#pragma once

#include <cstdint>

namespace hinm {

struct SplitMix64 {
  uint64_t state;

  explicit SplitMix64(uint64_t seed) : state(seed) {}

  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform integer in [0, n) (n > 0); the modulo bias is negligible for the sizes used here.
  int64_t below(int64_t n) { return int64_t(next() % uint64_t(n)); }

  // A stream for one (seed, a, b, c) tuple.
  static SplitMix64 stream(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0) {
    SplitMix64 g(seed);
    g.state ^= SplitMix64(a * 0x632BE59BD9B4E019ull + 1).next();
    g.state ^= SplitMix64(b * 0x85EBCA77C2B2AE63ull + 2).next() * 3;
    g.state ^= SplitMix64(c * 0xC2B2AE3D27D4EB4Full + 3).next() * 5;
    return g;
  }
};

}  // namespace hinm
