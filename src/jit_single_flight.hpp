// A value computed once however many threads ask for it at the same time: the first caller
// computes while the others wait for its result. Each instance guards one thing (one kernel on
// one device, one image), so compiles of different things never wait on each other.
#pragma once

#include <atomic>
#include <mutex>
#include <optional>

#include "kiln/error.hpp"

namespace kiln {

template <class T>
class SingleFlight {
 public:
  // Failures are kept as well: a compile that failed fails the same way when asked again.
  template <class Compute>
  const Result<T>& get(Compute&& compute) {
    if (ready_.load(std::memory_order_acquire)) return *value_;
    std::lock_guard lock(mutex_);
    if (!value_) {
      value_.emplace(compute());
      ready_.store(true, std::memory_order_release);
    }
    return *value_;
  }

  // The value, if one has been computed; never waits.
  [[nodiscard]] const Result<T>* peek() const {
    return ready_.load(std::memory_order_acquire) ? &*value_ : nullptr;
  }

 private:
  std::mutex mutex_;
  std::optional<Result<T>> value_;
  std::atomic<bool> ready_{false};
};

}  // namespace kiln
