// The disk cache under processes and threads racing: every key computed exactly once across
// all of them, every value right, and a lock holder killed with SIGKILL blocks nobody, nor does
// a child it forked while it computed.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kiln/cache.hpp"
#include "unit/child_process.hpp"
#include "unit/temp_directory.hpp"

namespace fs = std::filesystem;
using namespace kiln;
using namespace std::chrono_literals;

namespace {


Hash128 key_for(std::uint64_t index) {
  CacheKeyInputs inputs;
  inputs.input_hash = index;
  inputs.input_kind = "ptx";
  inputs.target_arch = "sm_90";
  return make_cache_key(inputs);
}

// Large enough that a torn read (a reader seeing half a write) could not pass unnoticed.
Bytes value_for(std::uint64_t index) {
  Bytes value(256 * 1024);
  std::uint64_t state = index * 0x9e3779b97f4a7c15ull + 1;
  for (std::uint8_t& byte : value) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    byte = static_cast<std::uint8_t>(state);
  }
  return value;
}

// The test double for a compiler: records each call as one O_APPEND line ("<index>\n", one
// write, so lines from many processes never interleave), sleeps to widen the race, returns the
// key's value.
std::function<Result<Bytes>()> recorded_compute(const fs::path& log, std::uint64_t index,
                                                std::chrono::milliseconds delay = 20ms) {
  return [log, index, delay]() -> Result<Bytes> {
    const int fd = ::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return make_error(Component::Io, "cannot open the compute log");
    const std::string line = std::to_string(index) + "\n";
    const bool recorded = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::close(fd);
    if (!recorded) return make_error(Component::Io, "cannot write the compute log");
    std::this_thread::sleep_for(delay);
    return value_for(index);
  };
}

std::map<std::uint64_t, int> compute_counts(const fs::path& log) {
  std::map<std::uint64_t, int> counts;
  std::ifstream in(log);
  for (std::uint64_t index = 0; in >> index;) ++counts[index];
  return counts;
}


std::vector<std::string> kiln_leftovers(const fs::path& directory) {
  std::vector<std::string> names;
  for (const auto& item : fs::directory_iterator(directory)) {
    const std::string name = item.path().filename().string();
    if (!name.ends_with(".bin")) names.push_back(name);
  }
  return names;
}

TEST(CacheConcurrency, EightProcessesOfFourThreadsComputeEachKeyOnce) {
  constexpr int kProcesses = 8;
  constexpr int kThreads = 4;
  constexpr std::uint64_t kKeys = 6;
  std::vector<Bytes> expected;
  for (std::uint64_t index = 0; index < kKeys; ++index) expected.push_back(value_for(index));
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    TempDirectory temp;
    // Children wait on this pipe and all start when the parent closes it.
    int start[2];
    ASSERT_EQ(::pipe(start), 0);
    std::vector<pid_t> children;
    for (int process = 0; process < kProcesses; ++process) {
      children.push_back(spawn([&, process]() {
        ::close(start[1]);
        char ignored;
        if (::read(start[0], &ignored, 1) != 0) return 90;
        DiskCache cache(temp.cache(), {});
        std::atomic<int> failures{0};
        std::vector<std::thread> threads;
        for (int thread = 0; thread < kThreads; ++thread) {
          threads.emplace_back([&, thread]() {
            // Each thread walks the keys from a different starting point, so every key is contended.
            for (std::uint64_t step = 0; step < kKeys; ++step) {
              const std::uint64_t index = (step + static_cast<std::uint64_t>(process * kThreads + thread)) % kKeys;
              Result<Bytes> value = cache.get_or_compute(key_for(index), recorded_compute(temp.log(), index));
              if (!value.ok() || *value != expected[index]) ++failures;
            }
          });
        }
        for (std::thread& thread : threads) thread.join();
        return failures.load();
      }));
    }
    ::close(start[0]);
    ::close(start[1]);
    for (const pid_t child : children) EXPECT_EQ(wait_bounded(child, 60s), 0) << "child " << child;

    const std::map<std::uint64_t, int> counts = compute_counts(temp.log());
    EXPECT_EQ(counts.size(), kKeys);
    for (const auto& [index, count] : counts) EXPECT_EQ(count, 1) << "key " << index << " computed " << count << " times";
    DiskCache cache(temp.cache(), {});
    for (std::uint64_t index = 0; index < kKeys; ++index) EXPECT_EQ(cache.get(key_for(index)), value_for(index));
    EXPECT_EQ(kiln_leftovers(temp.cache()), std::vector<std::string>{});  // no temp or lock files
  }
}

// A child takes the key's lock inside get_or_compute and reports, through `ready`, that it is
// computing; it never finishes.
pid_t spawn_lock_holder(const fs::path& directory, std::uint64_t index, int ready_fd) {
  return spawn([=]() {
    DiskCache cache(directory, {});
    Result<Bytes> never = cache.get_or_compute(key_for(index), [ready_fd]() -> Result<Bytes> {
      const char signal = '!';
      if (::write(ready_fd, &signal, 1) != 1) return make_error(Component::Io, "cannot signal");
      std::this_thread::sleep_for(1h);
      return Bytes{};
    });
    return never.ok() ? 50 : 51;
  });
}

// The next caller after the holder dies: computes the value itself within `limit`.
pid_t spawn_next_caller(const TempDirectory& temp, std::uint64_t index) {
  return spawn([&temp, index]() {
    DiskCache cache(temp.cache(), {});
    bool hit = true;
    Result<Bytes> value = cache.get_or_compute(key_for(index), recorded_compute(temp.log(), index, 0ms), &hit);
    if (!value.ok()) return 10;
    if (*value != value_for(index)) return 11;
    return hit ? 12 : 0;
  });
}

TEST(CacheConcurrency, LockHolderKilledBeforeTheNextCallerArrives) {
  TempDirectory temp;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t holder = spawn_lock_holder(temp.cache(), 1, ready[1]);
  char signal = 0;
  ASSERT_EQ(::read(ready[0], &signal, 1), 1);
  ASSERT_EQ(::kill(holder, SIGKILL), 0);
  EXPECT_EQ(wait_bounded(holder, 10s), 128 + SIGKILL);
  // The dead holder's lock file is still there; its lock died with it.
  EXPECT_TRUE(fs::exists(temp.cache() / ("kiln-" + key_for(1).hex() + ".lock")));

  EXPECT_EQ(wait_bounded(spawn_next_caller(temp, 1), 10s), 0);
  EXPECT_EQ(compute_counts(temp.log()), (std::map<std::uint64_t, int>{{1, 1}}));
  EXPECT_EQ(DiskCache(temp.cache(), {}).get(key_for(1)), value_for(1));
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(CacheConcurrency, LockHolderKilledWhileOthersWait) {
  TempDirectory temp;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t holder = spawn_lock_holder(temp.cache(), 2, ready[1]);
  char signal = 0;
  ASSERT_EQ(::read(ready[0], &signal, 1), 1);
  std::vector<pid_t> waiters;
  for (int i = 0; i < 3; ++i) waiters.push_back(spawn_next_caller(temp, 2));
  std::this_thread::sleep_for(200ms);  // let them block on the lock
  EXPECT_TRUE(compute_counts(temp.log()).empty()) << "a waiter computed while the holder was alive";
  ASSERT_EQ(::kill(holder, SIGKILL), 0);
  EXPECT_EQ(wait_bounded(holder, 10s), 128 + SIGKILL);
  // One waiter computes; the others find its entry (they report hit, so exit 12).
  int computed = 0;
  for (const pid_t waiter : waiters) {
    const int status = wait_bounded(waiter, 10s);
    EXPECT_TRUE(status == 0 || status == 12) << "waiter status " << status;
    computed += status == 0 ? 1 : 0;
  }
  EXPECT_EQ(computed, 1);
  EXPECT_EQ(compute_counts(temp.log()), (std::map<std::uint64_t, int>{{2, 1}}));
  EXPECT_EQ(kiln_leftovers(temp.cache()), std::vector<std::string>{});
  ::close(ready[0]);
  ::close(ready[1]);
}

// Whether some process waits on the OFD lock of `lock` (a "->" line of /proc/locks naming its
// inode), polled up to `limit`. nullopt where /proc/locks cannot be read.
std::optional<bool> someone_waits_on(const fs::path& lock, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    std::ifstream locks("/proc/locks");
    if (!locks) return std::nullopt;
    struct stat status {};
    if (::stat(lock.c_str(), &status) == 0) {
      const std::string inode = ":" + std::to_string(status.st_ino) + " ";
      for (std::string line; std::getline(locks, line);) {
        if (line.find("->") != std::string::npos && line.find(inode) != std::string::npos) return true;
      }
    }
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
}

// Lets the waiter block on the key's lock before the holder goes on: through /proc/locks where
// it can be read, else by giving it a moment.
void let_a_waiter_block(const fs::path& lock) {
  if (const std::optional<bool> waits = someone_waits_on(lock, 10s)) {
    EXPECT_TRUE(*waits) << "no process waited on " << lock;
  } else {
    std::this_thread::sleep_for(200ms);
  }
}

bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const std::size_t close = line.rfind(')');
  return close == std::string::npos || line.size() < close + 3 || line[close + 2] != 'Z';
}

// A child takes the key's lock inside get_or_compute; its compute forks a grandchild that sleeps
// 20 s (a data-loader worker, say), sends the grandchild's pid through `ready`, then waits for a
// byte on `finish` (or forever, when `finish` is -1) and returns the key's value.
pid_t spawn_holder_that_forks(const fs::path& directory, std::uint64_t index, int ready_fd, int finish_fd) {
  return spawn([=]() {
    DiskCache cache(directory, {});
    Result<Bytes> value = cache.get_or_compute(key_for(index), [=]() -> Result<Bytes> {
      const pid_t grandchild = ::fork();
      if (grandchild == 0) {
        for (int second = 0; second < 20; ++second) ::sleep(1);
        ::_exit(0);
      }
      if (grandchild < 0) return make_error(Component::Io, "cannot fork");
      if (::write(ready_fd, &grandchild, sizeof grandchild) != sizeof grandchild) {
        return make_error(Component::Io, "cannot signal");
      }
      if (finish_fd < 0) std::this_thread::sleep_for(1h);
      char go = 0;
      if (::read(finish_fd, &go, 1) != 1) return make_error(Component::Io, "no word to finish");
      return value_for(index);
    });
    return value.ok() && *value == value_for(index) ? 0 : 30;
  });
}

TEST(CacheConcurrency, ForkedChildDoesNotKeepTheLockAfterItsParentStores) {
  TempDirectory temp;
  int ready[2];
  int finish[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(finish), 0);
  const pid_t holder = spawn_holder_that_forks(temp.cache(), 4, ready[1], finish[0]);
  pid_t grandchild = 0;
  ASSERT_EQ(::read(ready[0], &grandchild, sizeof grandchild), static_cast<ssize_t>(sizeof grandchild));
  ASSERT_GT(grandchild, 0);
  const pid_t waiter = spawn_next_caller(temp, 4);
  let_a_waiter_block(temp.cache() / ("kiln-" + key_for(4).hex() + ".lock"));
  ASSERT_EQ(::write(finish[1], "!", 1), 1);
  EXPECT_EQ(wait_bounded(holder, 10s), 0);
  // The waiter finds the holder's entry as soon as the holder lets go; the grandchild, which
  // sleeps 20 s, must not hold the lock in its place (10 s only bounds a hang).
  EXPECT_EQ(wait_bounded(waiter, 10s), 12) << "0: the waiter computed; -1: it was still waiting after 10 s";
  EXPECT_TRUE(alive(grandchild)) << "the grandchild is gone, so the test proves nothing";
  EXPECT_TRUE(compute_counts(temp.log()).empty());
  EXPECT_EQ(DiskCache(temp.cache(), {}).get(key_for(4)), value_for(4));
  EXPECT_EQ(kiln_leftovers(temp.cache()), std::vector<std::string>{});
  ::kill(grandchild, SIGKILL);
  for (const int fd : {ready[0], ready[1], finish[0], finish[1]}) ::close(fd);
}

TEST(CacheConcurrency, ForkedChildDoesNotKeepTheLockOfAParentKilledWhileComputing) {
  TempDirectory temp;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t holder = spawn_holder_that_forks(temp.cache(), 5, ready[1], -1);
  pid_t grandchild = 0;
  ASSERT_EQ(::read(ready[0], &grandchild, sizeof grandchild), static_cast<ssize_t>(sizeof grandchild));
  ASSERT_GT(grandchild, 0);
  const pid_t waiter = spawn_next_caller(temp, 5);
  let_a_waiter_block(temp.cache() / ("kiln-" + key_for(5).hex() + ".lock"));
  EXPECT_TRUE(compute_counts(temp.log()).empty()) << "a waiter computed while the holder was alive";
  ASSERT_EQ(::kill(holder, SIGKILL), 0);
  EXPECT_EQ(wait_bounded(holder, 10s), 128 + SIGKILL);
  // The lock died with the holder although its grandchild lives on: the waiter computes.
  EXPECT_EQ(wait_bounded(waiter, 10s), 0) << "12: it found an entry nobody wrote; -1: still waiting after 10 s";
  EXPECT_TRUE(alive(grandchild)) << "the grandchild is gone, so the test proves nothing";
  EXPECT_EQ(compute_counts(temp.log()), (std::map<std::uint64_t, int>{{5, 1}}));
  EXPECT_EQ(DiskCache(temp.cache(), {}).get(key_for(5)), value_for(5));
  ::kill(grandchild, SIGKILL);
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(CacheConcurrency, PruneAndClearLeaveHeldLockFilesAlone) {
  TempDirectory temp;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t holder = spawn_lock_holder(temp.cache(), 3, ready[1]);
  char signal = 0;
  ASSERT_EQ(::read(ready[0], &signal, 1), 1);
  const fs::path lock = temp.cache() / ("kiln-" + key_for(3).hex() + ".lock");
  DiskCache cache(temp.cache(), {});
  ASSERT_TRUE(cache.prune({}).ok());
  ASSERT_TRUE(cache.clear().ok());
  EXPECT_TRUE(fs::exists(lock)) << "removed while its holder computes";
  ASSERT_EQ(::kill(holder, SIGKILL), 0);
  EXPECT_EQ(wait_bounded(holder, 10s), 128 + SIGKILL);
  ASSERT_TRUE(cache.prune({}).ok());
  EXPECT_FALSE(fs::exists(lock)) << "left by a dead holder, so prune removes it";
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(CacheConcurrency, PruneRacingWithWritersNeverYieldsAWrongValue) {
  // Writers and a pruner at a tiny limit: entries vanish under readers all the time; every value
  // returned must still be right (a miss is fine, a wrong value never).
  TempDirectory temp;
  constexpr std::uint64_t kKeys = 8;
  const CachePolicy tiny{3 * (kCacheEntryHeaderBytes + value_for(0).size())};
  std::vector<pid_t> children;
  for (int process = 0; process < 4; ++process) {
    children.push_back(spawn([&, process]() {
      DiskCache cache(temp.cache(), tiny);
      int failures = 0;
      for (int round = 0; round < 20; ++round) {
        const std::uint64_t index = static_cast<std::uint64_t>(round * 3 + process) % kKeys;
        Result<Bytes> value = cache.get_or_compute(key_for(index), recorded_compute(temp.log(), index, 0ms));
        if (!value.ok() || *value != value_for(index)) ++failures;
        if (process == 0 && !cache.prune(CachePolicy{kCacheEntryHeaderBytes}).ok()) ++failures;
      }
      return failures;
    }));
  }
  for (const pid_t child : children) EXPECT_EQ(wait_bounded(child, 60s), 0);
  DiskCache cache(temp.cache(), tiny);
  for (std::uint64_t index = 0; index < kKeys; ++index) {
    const std::optional<Bytes> value = cache.get(key_for(index));
    if (value) {
      EXPECT_EQ(*value, value_for(index));
    }
  }
}

}  // namespace
