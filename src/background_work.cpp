#include "background_work.hpp"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <list>
#include <mutex>
#include <thread>
#include <utility>

namespace kiln::background {
namespace {

class Registry {
 public:
  void start(const void* owner, std::function<void()> work) {
    std::lock_guard lock(mutex_);
    reap_finished();
    Piece& piece = pieces_.emplace_back();
    piece.owner = owner;
    piece.thread = std::thread([this, &piece, work = std::move(work)]() mutable {
      // Linux nice values are per thread: a whole-image compile yields to the application.
      (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 10);
      std::exchange(work, nullptr)();  // what it holds is released before its owner is told
      std::lock_guard done_lock(mutex_);
      piece.finished = true;
      finished_.notify_all();
    });
  }

  void wait(const void* owner) {
    std::unique_lock lock(mutex_);
    finished_.wait(lock, [&] {
      return std::none_of(pieces_.begin(), pieces_.end(),
                          [&](const Piece& piece) { return !piece.finished && (owner == nullptr || piece.owner == owner); });
    });
    reap_finished();
  }

  // At exit: the static is made on first use, after cuInit registered the driver's exit
  // handlers, so it is destroyed, and waits, before they run.
  ~Registry() {
    wait(nullptr);
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
  std::condition_variable finished_;
  std::list<Piece> pieces_;  // a list: a running thread holds a reference to its own piece
};

Registry& registry() {
  static Registry instance;
  return instance;
}

}  // namespace

void start(const void* owner, std::function<void()> work) { registry().start(owner, std::move(work)); }

void wait(const void* owner) { registry().wait(owner); }

}  // namespace kiln::background
