// The thread pool behind parallel_for: every chunk runs once whatever the thread count (also with
// helpers that start late, nested loops, and several calling threads at once); exceptions reach
// the caller.
#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "check.hpp"
#include "hinm/parallel.hpp"

using namespace hinm;

TEST(parallel_for_runs_every_chunk_once_across_many_calls) {
  for (int threads : {2, 3, 8}) {
    set_num_threads(threads);
    for (int call = 0; call < 200; ++call) {  // back-to-back calls: helpers from the last call may arrive late
      const int64_t n = 1 + call % 37;
      std::vector<int> hits(size_t(n), 0);
      parallel_for(n, 1 + call % 3, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) ++hits[size_t(i)]; });
      for (int h : hits) CHECK_EQ(h, 1);
    }
  }
  set_num_threads(0);
}

TEST(parallel_for_nested_and_from_several_threads) {
  set_num_threads(2);
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&] {
      for (int call = 0; call < 50; ++call) {
        std::vector<int> hits(64 * 16, 0);
        parallel_for(64, 4, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i)  // nested: runs serially on the thread that owns the chunk
            parallel_for(16, 1, [&](int64_t b2, int64_t e2) { for (int64_t j = b2; j < e2; ++j) ++hits[size_t(i * 16 + j)]; });
        });
        for (int h : hits) wrong += h != 1;
      }
    });
  for (auto& c : callers) c.join();
  CHECK_EQ(wrong.load(), 0);
  std::atomic<int> ran{0};
  CHECK_THROWS(parallel_for(100, 1, [&](int64_t b, int64_t) { ++ran; if (b == 57) throw std::invalid_argument("chunk 57"); }),
               std::invalid_argument);
  CHECK_EQ(ran.load(), 100);  // the other chunks still ran
  set_num_threads(0);
}
