// ParallelFor over XLA's intra-op thread pool, for the FFI custom calls of this folder.
//
// Work is cut into chunks handed out through an atomic counter. The calling thread works too, and waits only
// for chunks that a helper has already claimed (and is running), never for a helper to start: a call cannot
// deadlock on a busy pool. A helper that starts late finds nothing left and returns without touching the
// call's buffers; the shared state outlives the call through the shared_ptr.

#ifndef MSP_JAX_KERNELS_PARALLEL_FOR_H_
#define MSP_JAX_KERNELS_PARALLEL_FOR_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace msp_jax {

// Calls body(begin, end) on disjoint ranges covering [0, items), on the pool's threads and the caller's.
// About four chunks per thread even out threads that start late; a chunk holds at least one item.
inline void ParallelFor(xla::ffi::ThreadPool& pool, int64_t items,
                        std::function<void(int64_t, int64_t)> body) {
  if (items <= 0) return;
  struct Work {
    std::function<void(int64_t, int64_t)> body;
    int64_t items, chunk, chunks;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> finished{0};

    void Run() {
      for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) {
        body(c * chunk, std::min(items, (c + 1) * chunk));
        finished.fetch_add(1, std::memory_order_release);
      }
    }
  };
  auto work = std::make_shared<Work>();
  work->body = std::move(body);
  work->items = items;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  work->chunk = std::max<int64_t>(1, items / (4 * (threads + 1)));
  work->chunks = (items + work->chunk - 1) / work->chunk;
  // The caller is one of the workers: with as many helpers as pool threads, a compute-bound call would run
  // one thread more than the machine has cores (XLA's pool has one thread per core).
  const int64_t helpers = std::min<int64_t>(threads - 1, work->chunks - 1);
  for (int64_t i = 0; i < helpers; ++i) {
    pool.Schedule([work] { work->Run(); });
  }
  work->Run();
  while (work->finished.load(std::memory_order_acquire) < work->chunks) {
    std::this_thread::yield();
  }
}

}  // namespace msp_jax

#endif  // MSP_JAX_KERNELS_PARALLEL_FOR_H_
