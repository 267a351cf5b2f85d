// Thread control. Every parallel loop in the library splits work into chunks whose results do
// not depend on how many threads run them, so outputs are identical for any thread count.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>

namespace hinm {

// 0 or less restores the default (OMP_NUM_THREADS, else the machine's cores).
void set_num_threads(int n);
int get_num_threads();

// Runs fn(begin, end) over [0, n) in chunks of `grain` items on the library's threads. Each chunk
// runs on exactly one thread; the chunk boundaries depend only on n and grain. The first exception
// thrown by any chunk is rethrown on the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace hinm
