// The library's thread pool. The calling thread always works on the loop itself and never waits
// for a helper that has not started: chunks are claimed from a shared counter, so a helper that
// wakes late (descheduled on a busy machine) finds nothing left and the call costs at most the
// serial time. (An OpenMP team instead waits at its barrier for every thread it woke: on a loaded
// machine that was a scheduler time slice, 4-12 ms, for a 20 us product.)
#include "hinm/parallel.hpp"

#include <omp.h>
#if defined(__linux__)
#include <sched.h>
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <thread>
#include <vector>

namespace hinm {

namespace {

std::atomic<int> g_num_threads{0};  // 0 = default (OMP_NUM_THREADS, else the machine's cores)
thread_local bool t_inside = false;  // this thread is running a chunk: nested loops run serially

// One parallel_for call. Shared with helpers through a shared_ptr, so a helper that arrives after
// the call returned still touches valid memory (and finds no chunk left to claim).
struct Job {
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0, grain = 1, chunks = 0;
  int helpers = 0;                  // how many pool threads may join
  int caller_cpu = -1;              // the CPU the calling thread ran on when it posted the job
  std::atomic<int> joined{0};
  std::atomic<int64_t> next{0};     // next chunk to claim
  std::atomic<int64_t> finished{0}; // chunks run to the end
  std::mutex error_mutex;
  std::exception_ptr error;

  // Claims and runs chunks until none is left.
  void work() {
    const bool outer = t_inside;
    t_inside = true;
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      try {
        (*fn)(c * grain, std::min(n, (c + 1) * grain));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
      finished.fetch_add(1, std::memory_order_acq_rel);
    }
    t_inside = outer;
  }
};

#if defined(__linux__)
inline int current_cpu() { return sched_getcpu(); }

// Moves the calling helper off `cpu` when it runs there, by excluding that CPU from its affinity
// for a moment (the kernel migrates it at once) and restoring the mask. On a virtual machine the
// scheduler sometimes wakes a helper on the caller's CPU, when the other vCPU looks preempted
// by the host, and keeps both there for many milliseconds: every call then ran at one thread's
// speed or worse (3072x768 2:4 batch 1: half of 20 ms samples at ~100 us instead of ~55 us).
void leave_cpu(int cpu) {
  if (cpu < 0 || sched_getcpu() != cpu) return;
  cpu_set_t allowed, others;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || !CPU_ISSET(cpu, &allowed)) return;
  others = allowed;
  CPU_CLR(cpu, &others);
  if (CPU_COUNT(&others) == 0) return;
  if (sched_setaffinity(0, sizeof(others), &others) == 0) sched_setaffinity(0, sizeof(allowed), &allowed);
}
#else
inline int current_cpu() { return -1; }
inline void leave_cpu(int) {}
#endif

inline void pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void run(const std::shared_ptr<Job>& job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (int(workers_.size()) < job->helpers) workers_.emplace_back([this] { loop(); });
      job_ = job;
      ++generation_;
    }
    if (job->helpers == 1) wake_.notify_one();
    else wake_.notify_all();
    job->work();
    // Only chunks already claimed by running helpers are outstanding: a short spin, then yield.
    for (int spin = 0; job->finished.load(std::memory_order_acquire) < job->chunks; ++spin)
      if (spin > 256) std::this_thread::yield();
    std::lock_guard<std::mutex> lock(mutex_);
    if (job_ == job) job_.reset();
  }

 private:
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      // Back-to-back calls (a model's layers) find the helper awake: spin before sleeping (20000
      // pauses: ~0.5 ms on AMD EPYC). The spin yields now and then, so a helper sharing the
      // caller's CPU (see leave_cpu) does not take half of it: a pure spin made such calls twice
      // as slow as on one thread.
      for (int spin = 0; spin < 20000 && generation_.load(std::memory_order_relaxed) == seen; ++spin) {
        pause();
        if ((spin & 63) == 63) std::this_thread::yield();
      }
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || (generation_.load() != seen && job_); });
        if (stop_) return;
        seen = generation_.load();
        job = job_;
      }
      if (job->joined.fetch_add(1) < job->helpers) {
        leave_cpu(job->caller_cpu);
        job->work();
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  std::shared_ptr<Job> job_;
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: helpers may outlive static destruction order
  return *p;
}

}  // namespace

void set_num_threads(int n) { g_num_threads.store(n > 0 ? n : 0); }

int get_num_threads() {
  int n = g_num_threads.load();
  return n > 0 ? n : omp_get_max_threads();
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<int64_t>(get_num_threads(), chunks));
  if (threads <= 1 || t_inside) {
    for (int64_t c = 0; c < chunks; ++c) fn(c * grain, std::min(n, (c + 1) * grain));
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  job->grain = grain;
  job->chunks = chunks;
  job->helpers = threads - 1;
  job->caller_cpu = current_cpu();
  pool().run(job);
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace hinm
