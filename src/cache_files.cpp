#include "cache_files.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <vector>

namespace kiln::cache_files {
namespace {

struct flock whole_file_write_lock() {
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = 0;
  lock.l_len = 0;  // to the end of the file, however long
  return lock;
}

// The lock files this process has open. The mutex is held across fork() (prepare/parent/child
// handlers), and across each open and close, so no descriptor can be copied into a child
// unlisted; the child then closes every listed one.
struct OpenLockFiles {
  std::mutex mutex;
  std::vector<int> descriptors;
};

OpenLockFiles& open_lock_files() {
  static OpenLockFiles* const files = [] {
    auto* made = new OpenLockFiles;  // never destroyed: a fork during static destruction still finds it
    ::pthread_atfork([] { open_lock_files().mutex.lock(); }, [] { open_lock_files().mutex.unlock(); },
                     [] {
                       OpenLockFiles& inherited = open_lock_files();
                       for (const int fd : inherited.descriptors) ::close(fd);
                       inherited.descriptors.clear();
                       inherited.mutex.unlock();
                     });
    return made;
  }();
  return *files;
}

}  // namespace

LockFileDescriptor::LockFileDescriptor(const std::filesystem::path& path, int flags) {
  OpenLockFiles& files = open_lock_files();
  std::lock_guard lock(files.mutex);
  fd_ = ::open(path.c_str(), flags, 0600);
  if (fd_ >= 0) files.descriptors.push_back(fd_);
  opener_ = ::getpid();
}

bool LockFileDescriptor::opened_by_this_process() const noexcept { return opener_ == ::getpid(); }

LockFileDescriptor& LockFileDescriptor::operator=(LockFileDescriptor&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.fd_;
    opener_ = other.opener_;
    other.fd_ = -1;
  }
  return *this;
}

LockFileDescriptor::~LockFileDescriptor() { close(); }

void LockFileDescriptor::close() noexcept {
  if (fd_ < 0) return;
  if (!opened_by_this_process()) {
    fd_ = -1;
    return;
  }
  OpenLockFiles& files = open_lock_files();
  std::lock_guard lock(files.mutex);
  std::erase(files.descriptors, fd_);
  ::close(fd_);  // under the mutex: a fork now cannot copy a descriptor that is no longer listed
  fd_ = -1;
}

int injected_error(const FaultHook& inject, std::string_view operation) {
  return inject ? inject(operation) : 0;
}

FileDescriptor& FileDescriptor::operator=(FileDescriptor&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

FileDescriptor::~FileDescriptor() {
  // Descriptors closed here were only read or locked: nothing to lose if close fails.
  if (fd_ >= 0) ::close(fd_);
}

int FileDescriptor::close_checked() noexcept {
  if (fd_ < 0) return 0;
  const int result = ::close(fd_);
  fd_ = -1;  // Linux releases the descriptor even when close fails; retrying could close another's
  return result == 0 ? 0 : errno;
}

int write_all(int fd, ByteView bytes, const FaultHook& inject) {
  std::size_t written = 0;
  while (written < bytes.size()) {
    if (const int error = injected_error(inject, "write")) {
      if (error == EINTR) continue;
      return error;
    }
    const ssize_t count = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (count < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (count == 0) return EIO;  // a regular file that accepts nothing would loop forever
    written += static_cast<std::size_t>(count);
  }
  return 0;
}

int read_exactly(int fd, std::uint8_t* out, std::size_t size, const FaultHook& inject) {
  for (std::size_t done = 0; done < size;) {
    if (const int error = injected_error(inject, "read")) {
      if (error == EINTR) continue;
      return error;
    }
    const ssize_t count = ::read(fd, out + done, size - done);
    if (count < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (count == 0) return ENODATA;
    done += static_cast<std::size_t>(count);
  }
  return 0;
}

int make_private_directories(const std::filesystem::path& directory, const FaultHook& inject) {
  std::filesystem::path prefix;
  for (const std::filesystem::path& component : directory) {
    prefix /= component;
    struct stat existing {};
    if (::stat(prefix.c_str(), &existing) == 0 && S_ISDIR(existing.st_mode)) continue;
    if (const int error = injected_error(inject, "mkdir")) return error;
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) return errno;
  }
  return 0;
}

bool same_file(const struct stat& a, const struct stat& b) noexcept {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int EntryLock::acquire(const std::filesystem::path& lock_path, const FaultHook& inject) {
  path_ = lock_path;
  for (;;) {
    if (const int error = injected_error(inject, "lock")) return error;
    LockFileDescriptor descriptor(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC);
    if (!descriptor.valid()) return errno;
    struct flock lock = whole_file_write_lock();
    while (::fcntl(descriptor.get(), F_OFD_SETLKW, &lock) != 0) {
      if (errno != EINTR) return errno;
    }
    // The previous holder (or a pruner) may have unlinked the file we waited on; a lock on an
    // unlinked file excludes nobody, so lock whatever the name points to now.
    struct stat held {};
    struct stat named {};
    if (::fstat(descriptor.get(), &held) != 0) return errno;
    if (::lstat(lock_path.c_str(), &named) == 0 && same_file(held, named)) {
      descriptor_ = std::move(descriptor);
      return 0;
    }
  }
}

EntryLock::~EntryLock() {
  // A forked child that unwinds this far neither holds the lock nor may take its file away.
  if (!descriptor_.valid() || !descriptor_.opened_by_this_process()) return;
  // Unlink while still holding the lock, so nobody else can be relying on this inode. Failure
  // (someone removed it by hand) leaves at most an empty file that prune() removes later.
  (void)::unlink(path_.c_str());
}

bool remove_unheld_lock_file(const std::filesystem::path& lock_path) {
  const LockFileDescriptor descriptor(lock_path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (!descriptor.valid()) return false;
  struct flock lock = whole_file_write_lock();
  if (::fcntl(descriptor.get(), F_OFD_SETLK, &lock) != 0) return false;  // held: someone is computing
  struct stat held {};
  struct stat named {};
  if (::fstat(descriptor.get(), &held) != 0 || ::lstat(lock_path.c_str(), &named) != 0 || !same_file(held, named)) {
    return false;
  }
  return ::unlink(lock_path.c_str()) == 0;
}

}  // namespace kiln::cache_files
