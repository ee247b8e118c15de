// POSIX file primitives under the disk cache: checked reads and writes that go through the
// fault seam, a private mkdir -p, and the per-key lock file. Internal to src/cache*.cpp.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <string_view>

#include "kiln/hash.hpp"

namespace kiln::cache_files {

using FaultHook = std::function<int(std::string_view operation)>;

// The errno the test seam asks `operation` to fail with, 0 to go ahead.
[[nodiscard]] int injected_error(const FaultHook& inject, std::string_view operation);

// Owns a file descriptor; closes it (result ignored) when destroyed. Use close_checked() where
// the close result matters (after writing: NFS and quotas report errors there).
class FileDescriptor {
 public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileDescriptor& operator=(FileDescriptor&& other) noexcept;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor();

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  // 0 or the errno close reported; the descriptor is released either way.
  [[nodiscard]] int close_checked() noexcept;

 private:
  int fd_ = -1;
};

// Each returns 0 or an errno. Short writes continue and EINTR (real or injected) is retried.
[[nodiscard]] int write_all(int fd, ByteView bytes, const FaultHook& inject);
// Reads exactly `size` bytes; ENODATA where the file ends before them.
[[nodiscard]] int read_exactly(int fd, std::uint8_t* out, std::size_t size, const FaultHook& inject);
// mkdir -p; every directory it creates gets mode 0700.
[[nodiscard]] int make_private_directories(const std::filesystem::path& directory, const FaultHook& inject);

[[nodiscard]] bool same_file(const struct stat& a, const struct stat& b) noexcept;

// The descriptor of a lock file, which a fork()ed child does not keep. An OFD lock belongs to the
// open file description, and a child shares those: a child that lives on (a data-loader worker
// forked while a kernel compiles) would hold the key's lock after its parent let go of it, or
// after its parent was killed, and every other process asking for the key would wait for the
// child to exit. So each such descriptor is closed in the child as it is forked.
class LockFileDescriptor {
 public:
  LockFileDescriptor() = default;
  // open(path, flags, 0600); valid() tells whether it opened (errno then says why not).
  LockFileDescriptor(const std::filesystem::path& path, int flags);
  LockFileDescriptor(LockFileDescriptor&& other) noexcept : fd_(other.fd_), opener_(other.opener_) { other.fd_ = -1; }
  LockFileDescriptor& operator=(LockFileDescriptor&& other) noexcept;
  LockFileDescriptor(const LockFileDescriptor&) = delete;
  LockFileDescriptor& operator=(const LockFileDescriptor&) = delete;
  ~LockFileDescriptor();

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  // False in a forked child, whose copy was closed at the fork (its number may be another file's now).
  [[nodiscard]] bool opened_by_this_process() const noexcept;

 private:
  void close() noexcept;
  int fd_ = -1;
  pid_t opener_ = 0;
};

// An exclusive lock on "kiln-<key>.lock" (an OFD lock: the kernel drops it when the holder's
// descriptor closes, including when the holder is killed). Destroying the holder unlinks the
// file and then releases the lock, so lock files exist only while someone computes.
class EntryLock {
 public:
  // Blocks until this process holds the lock; 0 or an errno.
  [[nodiscard]] int acquire(const std::filesystem::path& lock_path, const FaultHook& inject);
  EntryLock() = default;
  EntryLock(const EntryLock&) = delete;
  EntryLock& operator=(const EntryLock&) = delete;
  ~EntryLock();

 private:
  std::filesystem::path path_;
  LockFileDescriptor descriptor_;
};

// Removes a lock file nobody holds (left by a killed process); true when removed.
bool remove_unheld_lock_file(const std::filesystem::path& lock_path);

}  // namespace kiln::cache_files
