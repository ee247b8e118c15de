#include "background_work.hpp"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace kiln::background {
namespace {

class Registry {
 public:
  bool start(const void* owner, std::function<void()> work) {
    std::lock_guard lock(mutex_);
    reap_finished();
    Piece& piece = pieces_.emplace_back();
    piece.owner = owner;
    try {
      piece.thread = std::thread([this, &piece, work = std::move(work)]() mutable {
        // Linux nice values are per thread: a whole-image compile yields to the application.
        (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 10);
        std::exchange(work, nullptr)();  // what it holds is released before its owner is told
        std::lock_guard done_lock(mutex_);
        piece.finished = true;
        finished_->notify_all();
      });
    } catch (const std::system_error&) {  // no thread to be had (RLIMIT_NPROC, memory)
      pieces_.pop_back();
      return false;
    }
    return true;
  }

  void wait(const void* owner) {
    std::unique_lock lock(mutex_);
    finished_->wait(lock, [&] {
      return std::none_of(pieces_.begin(), pieces_.end(),
                          [&](const Piece& piece) { return !piece.finished && (owner == nullptr || piece.owner == owner); });
    });
    reap_finished();
  }

  // fork() copies the registry but none of its threads: the child must neither wait for the
  // parent's work (it would wait forever, at exit) nor destroy its std::threads (which would
  // terminate). So the registry's lock is held across fork, and the child starts afresh.
  void before_fork() { mutex_.lock(); }
  void after_fork_in_parent() { mutex_.unlock(); }
  void after_fork_in_child() {
    forked_off_.splice(forked_off_.end(), pieces_);
    retired_.push_back(std::exchange(finished_, std::make_unique<std::condition_variable>()));
    mutex_.unlock();
  }

 private:
  struct Piece {
    const void* owner = nullptr;
    bool finished = false;
    std::thread thread;
  };

  void reap_finished() {
    for (auto piece = pieces_.begin(); piece != pieces_.end();) {
      if (!piece->finished) {
        ++piece;
        continue;
      }
      piece->thread.join();  // it has only the unlock left to do
      piece = pieces_.erase(piece);
    }
  }

  std::mutex mutex_;
  std::unique_ptr<std::condition_variable> finished_ = std::make_unique<std::condition_variable>();
  std::list<Piece> pieces_;  // a list: a running thread holds a reference to its own piece
  // After fork, in the child: the parent's pieces, whose threads it does not have (never joined
  // nor destroyed, as the registry itself), and the condition variables the parent's waiters used.
  std::list<Piece> forked_off_;
  std::vector<std::unique_ptr<std::condition_variable>> retired_;
};

// Never destroyed (a forked child would otherwise destroy the threads it copied): the process
// waits for the work at exit through atexit instead. That handler is registered on first use,
// after cuInit registered the driver's own, so it runs before them: no thread is inside the
// driver while it is torn down.
Registry& registry() {
  static Registry* const instance = [] {
    auto* made = new Registry;
    std::atexit([] { registry().wait(nullptr); });
    ::pthread_atfork([] { registry().before_fork(); }, [] { registry().after_fork_in_parent(); },
                     [] { registry().after_fork_in_child(); });
    return made;
  }();
  return *instance;
}

}  // namespace

bool start(const void* owner, std::function<void()> work) { return registry().start(owner, std::move(work)); }

void wait(const void* owner) { registry().wait(owner); }

}  // namespace kiln::background
