// DiskCache: the persistent JIT cache. docs/cache.md describes the layout, the locking protocol
// and how the cache degrades; this file follows it.
#include "kiln/cache.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <system_error>
#include <unordered_map>

#include "cache_files.hpp"

namespace kiln {
namespace {

using cache_files::FileDescriptor;

// A writer that has not renamed its temp file after an hour has died (a compile result is
// written in milliseconds); its temp file is removed by the next prune.
constexpr std::time_t kStaleTempSeconds = 60 * 60;
// Other processes write to the directory too, so our running total drifts; a full scan every
// this many puts bounds the drift at the price of one readdir per that many compiles.
constexpr unsigned kPutsBetweenScans = 64;
// A prune started by put() goes this far below the cap, so the next puts do not each scan again.
constexpr std::uint64_t kAutoPruneHeadroomDivisor = 8;
constexpr int kTempNameAttempts = 8;

enum class FileKind { Entry, Lock, Temp, Foreign };

bool is_lower_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Only names kiln itself makes are ever touched: "kiln-<32 hex>.bin", "kiln-<32 hex>.lock", "kiln-tmp-*".
FileKind classify(std::string_view name) {
  constexpr std::string_view kPrefix = "kiln-";
  constexpr std::size_t kHexDigits = 32;
  if (name.starts_with("kiln-tmp-")) return FileKind::Temp;
  if (!name.starts_with(kPrefix)) return FileKind::Foreign;
  const std::string_view rest = name.substr(kPrefix.size());
  if (rest.size() < kHexDigits || !is_lower_hex(rest.substr(0, kHexDigits))) return FileKind::Foreign;
  const std::string_view suffix = rest.substr(kHexDigits);
  if (suffix == ".bin") return FileKind::Entry;
  if (suffix == ".lock") return FileKind::Lock;
  return FileKind::Foreign;
}

struct DirectoryItem {
  FileKind kind = FileKind::Foreign;
  std::string name;
  std::uint64_t bytes = 0;
  timespec modified{};
};

bool modified_before(const timespec& a, const timespec& b) {
  return a.tv_sec != b.tv_sec ? a.tv_sec < b.tv_sec : a.tv_nsec < b.tv_nsec;
}

std::chrono::system_clock::time_point to_time_point(const timespec& time) {
  return std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
      std::chrono::seconds(time.tv_sec) + std::chrono::nanoseconds(time.tv_nsec)));
}

std::string describe_errno(int error) { return std::generic_category().message(error); }

// Whether users other than this one may create files in a directory of ours. Group write counts
// only for a group not the process's own: with a group per user (Debian's and Ubuntu's default,
// where umask 002 makes directories group-writable) that group holds no one else.
bool writable_by_others(const struct stat& status) {
  if ((status.st_mode & S_IWOTH) != 0) return true;
  return (status.st_mode & S_IWGRP) != 0 && status.st_gid != ::getegid();
}

// Why a directory of the cache (from lstat) is not this user's own, or nullopt: followed links,
// foreign owners and directories others may write to would let someone else choose the cubins we load.
std::optional<std::string> not_private_because(const struct stat& status) {
  if (S_ISLNK(status.st_mode)) {
    return "is a symbolic link, which kiln does not follow (point KILN_CACHE_DIR at the real directory)";
  }
  if (!S_ISDIR(status.st_mode)) return "is not a directory";
  if (status.st_uid != ::geteuid()) {
    return "is owned by uid " + std::to_string(status.st_uid) + ", not by this user (uid " +
           std::to_string(::geteuid()) + ")";
  }
  if (writable_by_others(status)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(status.st_mode & 07777));
    return std::string("may be written by other users (mode ") + mode +
           "; chmod go-w it, or point KILN_CACHE_DIR at a private directory)";
  }
  return std::nullopt;
}

// "/x/link/" and "/x/link/." name the link's target: lstat and O_NOFOLLOW would follow the link
// through them, and the symbolic-link check would pass. The path without them names the link.
std::filesystem::path without_trailing_separators(std::filesystem::path path) {
  while ((!path.has_filename() || path.filename() == ".") && path.has_relative_path()) {
    std::filesystem::path parent = path.parent_path();
    if (parent.empty()) break;  // "." and "./" name the current directory: keep ".", not ""
    path = std::move(parent);
  }
  return path;
}

// "cache /home/me/.cache/kiln", or "cache directory" when there is none.
std::string name_of(const std::filesystem::path& directory) {
  return "cache " + (directory.empty() ? std::string("directory") : directory.string());
}

Error cache_error(const std::filesystem::path& directory, std::string message, int native_code = 0) {
  Error error = make_error(Component::Cache, std::move(message), directory.string());
  error.native_code = native_code;
  return error;
}

// Kiln's own regular files in the directory; anything else is invisible to the cache.
Result<std::vector<DirectoryItem>> scan_directory(const std::filesystem::path& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return cache_error(directory, "cannot open the directory: " + describe_errno(errno), errno);
  DIR* stream = ::fdopendir(fd);
  if (stream == nullptr) {
    const int error = errno;
    ::close(fd);
    return cache_error(directory, "cannot read the directory: " + describe_errno(error), error);
  }
  std::vector<DirectoryItem> items;
  // readdir reports failure only through errno, which the fstatat below may have set when a
  // file vanished; so clear it before every call.
  for (errno = 0; const dirent* record = ::readdir(stream); errno = 0) {
    DirectoryItem item;
    item.name = record->d_name;
    item.kind = classify(item.name);
    if (item.kind == FileKind::Foreign) continue;
    struct stat status {};
    // Gone since readdir (another process pruned it) or not a regular file: not ours to count.
    if (::fstatat(fd, record->d_name, &status, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(status.st_mode)) continue;
    item.bytes = static_cast<std::uint64_t>(status.st_size);
    item.modified = status.st_mtim;
    items.push_back(std::move(item));
  }
  const int read_error = errno;
  ::closedir(stream);
  if (read_error != 0) {
    return cache_error(directory, "cannot list the directory: " + describe_errno(read_error), read_error);
  }
  return items;
}

struct Outcome {
  Result<Bytes> value;
  bool hit = false;
};

enum class Presence { Missing, Ready, Refused };
enum class DirectoryState { Unseen, Ready, Refused };

}  // namespace

struct DiskCache::State {
  State(std::filesystem::path directory_in, CachePolicy policy_in, CacheFaults faults_in,
        std::filesystem::path checked_ancestor_in)
      : directory(without_trailing_separators(std::move(directory_in))),
        checked_ancestor(without_trailing_separators(std::move(checked_ancestor_in))),
        policy(policy_in),
        faults(std::move(faults_in)) {}

  const std::filesystem::path directory;
  const std::filesystem::path checked_ancestor;  // empty, or held to the directory's checks too
  const CachePolicy policy;
  const CacheFaults faults;

  std::mutex mutex;  // guards the members down to temp_name_random
  DirectoryState directory_state = DirectoryState::Unseen;
  std::string refusal;                              // why the directory was refused
  std::optional<std::uint64_t> approximate_bytes;  // entries' total at the last scan plus our puts since
  unsigned puts_since_scan = 0;
  std::optional<std::mt19937_64> temp_name_random;  // seeded on the first write: a start that only reads pays nothing

  std::atomic<bool> writes_enabled{true};
  std::atomic<bool> warned{false};
  std::atomic<std::uint64_t> hits{0};
  std::atomic<std::uint64_t> misses{0};
  std::atomic<std::uint64_t> writes{0};
  std::atomic<std::uint64_t> corrupt_removed{0};

  // In-process single flight: one computation per key however many threads ask.
  std::mutex flights_mutex;
  std::unordered_map<std::string, std::shared_future<Outcome>> flights;

  [[nodiscard]] std::filesystem::path entry_path(const Hash128& key) const {
    return directory / cache_entry_file_name(key);
  }
  [[nodiscard]] std::filesystem::path lock_path(const Hash128& key) const {
    return directory / ("kiln-" + key.hex() + ".lock");
  }
  [[nodiscard]] int injected_error(std::string_view operation) const {
    return cache_files::injected_error(faults.inject, operation);
  }

  void warn_once(const std::string& message) {
    if (warned.exchange(true)) return;
    if (faults.warn) {
      faults.warn(message);
    } else {
      std::fprintf(stderr, "kiln: warning: %s\n", message.c_str());
    }
  }

  void turn_off_writes(const Error& why) {
    writes_enabled = false;
    warn_once(name_of(directory) + ": " + why.message +
              "; the cache is off for writes in this process (kernels are still compiled, not kept)");
  }

  void warn_refused() {
    std::string reason;
    {
      std::lock_guard lock(mutex);
      reason = refusal;
    }
    warn_once(name_of(directory) + " " + reason + "; the disk cache is off");
  }

  // Called with `mutex` held. Validates the directory once it exists; a refusal is final.
  Presence check_directory() {
    if (directory_state == DirectoryState::Ready) return Presence::Ready;
    if (directory_state == DirectoryState::Refused) return Presence::Refused;
    const auto refuse = [this](std::string reason) {
      directory_state = DirectoryState::Refused;
      refusal = std::move(reason);
      writes_enabled = false;
      return Presence::Refused;
    };
    if (directory.empty()) return refuse("is not set (neither KILN_CACHE_DIR, XDG_CACHE_HOME nor HOME is)");
    for (const std::filesystem::path* checked : {&checked_ancestor, &directory}) {
      if (checked->empty()) continue;
      // Said of the cache directory in the warning; an ancestor names itself.
      const std::string subject = checked == &directory ? "" : "is inside " + checked->string() + ", which ";
      struct stat status {};
      if (::lstat(checked->c_str(), &status) != 0) return Presence::Missing;
      if (std::optional<std::string> why = not_private_because(status)) return refuse(subject + *why);
    }
    directory_state = DirectoryState::Ready;
    return Presence::Ready;
  }

  // Whether entries may be read now; warns once when the directory is refused.
  bool readable() {
    Presence presence;
    {
      std::lock_guard lock(mutex);
      presence = check_directory();
    }
    if (presence == Presence::Refused) warn_refused();
    return presence == Presence::Ready;
  }

  // Creates the directory if needed; a failure turns writes off (with the one warning).
  Result<void> prepare_for_writing() {
    Presence presence;
    int mkdir_error = 0;
    {
      std::lock_guard lock(mutex);
      presence = check_directory();
      if (presence == Presence::Missing) {
        mkdir_error = cache_files::make_private_directories(directory, faults.inject);
        if (mkdir_error == 0) presence = check_directory();
      }
    }
    if (presence == Presence::Ready) return {};
    if (presence == Presence::Refused) {
      warn_refused();
      return cache_error(directory, "the directory " + refusal);
    }
    Error error = mkdir_error != 0
                      ? cache_error(directory, "cannot create the directory: " + describe_errno(mkdir_error), mkdir_error)
                      : cache_error(directory, "the directory vanished as it was created");
    turn_off_writes(error);
    return error;
  }

  // For stats/list/prune/clear: whether there is a directory to look at; a refused one is an error.
  Result<bool> present_for_management() {
    std::lock_guard lock(mutex);
    switch (check_directory()) {
      case Presence::Ready: return true;
      case Presence::Missing: return false;
      case Presence::Refused: break;
    }
    Error error = cache_error(directory, "the directory " + refusal);
    error.hint = "set KILN_CACHE_DIR to a private directory of this user";
    return error;
  }

  // Deletes an entry that failed to read or verify, unless it was replaced since we opened it.
  void discard(const std::filesystem::path& path, const struct stat* opened) {
    if (opened != nullptr) {
      struct stat now {};
      if (::lstat(path.c_str(), &now) != 0 || !cache_files::same_file(now, *opened)) return;
    }
    if (::unlink(path.c_str()) == 0) ++corrupt_removed;
  }

  std::optional<Bytes> read_entry(const Hash128& key) {
    if (!readable()) return std::nullopt;
    const std::filesystem::path path = entry_path(key);
    // O_NONBLOCK: a FIFO planted under an entry's name must not hang the reader.
    FileDescriptor file(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
    if (!file.valid()) {
      // A link (ELOOP) or an unreadable file under an entry's name is not an entry; running out of
      // descriptors or memory says nothing about the entry, which other processes still use.
      if (errno == ELOOP || errno == EACCES) discard(path, nullptr);
      return std::nullopt;
    }
    struct stat status {};
    if (::fstat(file.get(), &status) != 0) return std::nullopt;
    const auto reject = [&] {
      discard(path, &status);
      return std::nullopt;
    };
    // The header first, then the payload straight into the buffer that is returned, then one
    // byte more: a file that grew since fstat is caught rather than read in part.
    std::uint8_t header_bytes[kCacheEntryHeaderBytes];
    // An entry of another user's (the directory was refused if others could write to it, but it
    // may have been handed over with files in it) could hold anything: this user wrote none of it.
    if (!S_ISREG(status.st_mode) || status.st_uid != ::geteuid() ||
        cache_files::read_exactly(file.get(), header_bytes, sizeof header_bytes, faults.inject) != 0) {
      return reject();
    }
    Result<CacheEntryHeader> header = parse_cache_entry_header(ByteView(header_bytes, sizeof header_bytes), key,
                                                               static_cast<std::uint64_t>(status.st_size));
    if (!header) return reject();
    Bytes payload(static_cast<std::size_t>(header->payload_size));
    std::uint8_t beyond = 0;
    if (cache_files::read_exactly(file.get(), payload.data(), payload.size(), faults.inject) != 0 ||
        cache_files::read_exactly(file.get(), &beyond, 1, faults.inject) != ENODATA ||
        !check_cache_entry_payload(*header, payload)) {
      return reject();
    }
    // The mtime is the entry's last use for LRU pruning: atime is unreliable (noatime, relatime).
    // A failure (read-only file system) only makes the LRU order less exact.
    const timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
    (void)::futimens(file.get(), times);
    return payload;
  }

  std::string temp_file_name() {
    std::lock_guard lock(mutex);
    if (!temp_name_random) temp_name_random.emplace(std::random_device{}());
    char name[64];
    std::snprintf(name, sizeof name, "kiln-tmp-%ld-%016llx", static_cast<long>(::getpid()),
                  static_cast<unsigned long long>((*temp_name_random)()));
    return name;
  }

  // Removes the temp file of a failed write and describes the failure.
  Error abandon_temp(const std::filesystem::path& temp, std::string_view step, int error) {
    // Nobody can see the temp file under an entry's name; if even unlink fails, prune removes it later.
    (void)::unlink(temp.c_str());
    return cache_error(directory, std::string(step) + " failed: " + describe_errno(error), error);
  }

  // Temp file in the same directory (so rename is atomic), every write checked, then rename.
  // No fsync: an entry is verified on every read, so one torn by a crash is a miss and is
  // rebuilt; an fsync per compiled kernel would cost more than the rare rebuild.
  Result<void> write_entry(const Hash128& key, ByteView value) {
    const Bytes file = encode_cache_entry(key, value);
    std::filesystem::path temp;
    FileDescriptor descriptor;
    for (int attempt = 0; !descriptor.valid(); ++attempt) {
      temp = directory / temp_file_name();
      int error = injected_error("open-temp");
      if (error == 0) {
        descriptor = FileDescriptor(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!descriptor.valid()) error = errno;
      }
      if (error == EEXIST && attempt + 1 < kTempNameAttempts) continue;
      if (error != 0) return cache_error(directory, "creating a temp file failed: " + describe_errno(error), error);
    }
    if (const int error = cache_files::write_all(descriptor.get(), file, faults.inject)) {
      return abandon_temp(temp, "write", error);
    }
    int close_error = injected_error("close");
    if (close_error == 0) close_error = descriptor.close_checked();
    if (close_error != 0) return abandon_temp(temp, "close", close_error);
    int rename_error = injected_error("rename");
    if (rename_error == 0 && ::rename(temp.c_str(), entry_path(key).c_str()) != 0) rename_error = errno;
    if (rename_error != 0) return abandon_temp(temp, "rename", rename_error);
    return {};
  }

  Result<void> store(const Hash128& key, ByteView value) {
    if (!writes_enabled) {
      return cache_error(directory, "writes are off (the directory was refused or an earlier write failed)");
    }
    const std::uint64_t entry_bytes = kCacheEntryHeaderBytes + value.size();
    if (entry_bytes > policy.max_bytes) {
      Error error = cache_error(directory, "an entry of " + std::to_string(entry_bytes) +
                                               " bytes does not fit the size limit of " +
                                               std::to_string(policy.max_bytes) + " bytes");
      error.hint = "raise KILN_CACHE_MAX_SIZE";
      return error;
    }
    if (Result<void> prepared = prepare_for_writing(); !prepared) return prepared;
    Result<void> written = write_entry(key, value);
    if (!written && written.error().native_code == ENOENT) {
      // The directory was removed under us (`rm -rf` of the cache): make it again, once.
      {
        std::lock_guard lock(mutex);
        directory_state = DirectoryState::Unseen;
      }
      if (Result<void> prepared = prepare_for_writing(); !prepared) return prepared;
      written = write_entry(key, value);
    }
    if (!written) {
      turn_off_writes(written.error());
      return written;
    }
    ++writes;
    account_for_write(key, entry_bytes);
    return {};
  }

  // Keeps the size check cheap: a running total, rescanned now and then; prunes when over the cap.
  void account_for_write(const Hash128& written, std::uint64_t entry_bytes) {
    std::optional<std::uint64_t> total;
    {
      std::lock_guard lock(mutex);
      if (approximate_bytes && puts_since_scan < kPutsBetweenScans) {
        *approximate_bytes += entry_bytes;
        ++puts_since_scan;
        total = approximate_bytes;
      }
    }
    if (!total) {
      Result<std::vector<DirectoryItem>> items = scan_directory(directory);
      if (!items) return;  // the next put tries again; the write itself succeeded
      std::uint64_t scanned = 0;
      for (const DirectoryItem& item : *items) {
        if (item.kind == FileKind::Entry) scanned += item.bytes;
      }
      std::lock_guard lock(mutex);
      approximate_bytes = scanned;
      puts_since_scan = 0;
      total = scanned;
    }
    if (*total > policy.max_bytes) {
      // Best effort: an entry the pruner could not remove stays until the next prune.
      // Never the entry just written, which its waiters are about to read: it fits the cap
      // (store checked), though maybe not the headroom below it.
      (void)prune_to(policy.max_bytes - policy.max_bytes / kAutoPruneHeadroomDivisor, cache_entry_file_name(written));
    }
  }

  // Temp files of dead writers and lock files nobody holds.
  void remove_leftovers(const std::vector<DirectoryItem>& items) {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    for (const DirectoryItem& item : items) {
      const std::filesystem::path path = directory / item.name;
      if (item.kind == FileKind::Temp && item.modified.tv_sec + kStaleTempSeconds < now.tv_sec) {
        (void)::unlink(path.c_str());  // a failure leaves it for the next prune
      } else if (item.kind == FileKind::Lock) {
        (void)cache_files::remove_unheld_lock_file(path);
      }
    }
  }

  Result<std::uint64_t> prune_to(std::uint64_t target_bytes, std::string_view keep = {}) {
    Result<std::vector<DirectoryItem>> items = scan_directory(directory);
    if (!items) return std::move(items).error();
    remove_leftovers(*items);
    std::vector<DirectoryItem> entries;
    std::uint64_t total = 0;
    for (DirectoryItem& item : *items) {
      if (item.kind != FileKind::Entry) continue;
      total += item.bytes;
      entries.push_back(std::move(item));
    }
    std::sort(entries.begin(), entries.end(), [](const DirectoryItem& a, const DirectoryItem& b) {
      if (a.modified.tv_sec != b.modified.tv_sec || a.modified.tv_nsec != b.modified.tv_nsec) {
        return modified_before(a.modified, b.modified);
      }
      return a.name < b.name;
    });
    std::uint64_t removed = 0;
    for (const DirectoryItem& entry : entries) {
      if (total <= target_bytes) break;
      if (entry.name == keep) continue;
      if (::unlink((directory / entry.name).c_str()) == 0) {
        ++removed;
        total -= entry.bytes;
      } else if (errno == ENOENT) {
        total -= entry.bytes;  // another process pruned it first
      }
    }
    std::lock_guard lock(mutex);
    approximate_bytes = total;
    puts_since_scan = 0;
    return removed;
  }

  Outcome load_or_compute(const Hash128& key, const std::function<Result<Bytes>()>& compute) {
    if (std::optional<Bytes> cached = read_entry(key)) {
      ++hits;
      return {std::move(*cached), true};
    }
    if (!writes_enabled || !prepare_for_writing()) {
      ++misses;
      return {compute(), false};
    }
    cache_files::EntryLock lock;
    if (lock.acquire(lock_path(key), faults.inject) == 0) {
      // Whoever held the lock before us may have written the entry while we waited.
      if (std::optional<Bytes> cached = read_entry(key)) {
        ++hits;
        return {std::move(*cached), true};
      }
    }
    ++misses;
    // Without the lock (it could not be taken) two processes may compute the same value; both
    // results are right and the second rename replaces the first.
    Outcome outcome{compute(), false};
    // A failed store has warned and turned writes off; the computed value is good regardless.
    if (outcome.value) (void)store(key, *outcome.value);
    return outcome;  // `lock` is released after the store, so waiters find the entry
  }
};

DiskCache::DiskCache(std::filesystem::path directory, CachePolicy policy, CacheFaults faults,
                     std::filesystem::path checked_ancestor)
    : state_(std::make_shared<State>(std::move(directory), policy, std::move(faults), std::move(checked_ancestor))) {}

Result<std::filesystem::path> DiskCache::private_subdirectory(std::string_view name) {
  if (Result<void> ready = state_->prepare_for_writing(); !ready) return ready.error();
  const std::filesystem::path path = state_->directory / name;
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    const int error = errno;
    return cache_error(path, "cannot create the directory: " + describe_errno(error), error);
  }
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) {
    const int error = errno;
    return cache_error(path, "cannot check the directory: " + describe_errno(error), error);
  }
  if (std::optional<std::string> why = not_private_because(status)) {
    return cache_error(path, "is not a private directory of this user: it " + *why + "; remove it and kiln makes it again");
  }
  return path;
}

std::optional<Bytes> DiskCache::get(const Hash128& key) {
  std::optional<Bytes> value = state_->read_entry(key);
  ++(value ? state_->hits : state_->misses);
  return value;
}

Result<void> DiskCache::put(const Hash128& key, ByteView value) { return state_->store(key, value); }

void DiskCache::discard(const Hash128& key) {
  if (!state_->readable()) return;
  state_->discard(state_->entry_path(key), nullptr);
}

Result<Bytes> DiskCache::get_or_compute(const Hash128& key, const std::function<Result<Bytes>()>& compute,
                                        bool* hit) {
  State& state = *state_;
  const std::string flight_key = key.hex();
  std::promise<Outcome> promise;
  {
    std::unique_lock lock(state.flights_mutex);
    if (auto found = state.flights.find(flight_key); found != state.flights.end()) {
      const std::shared_future<Outcome> flight = found->second;
      lock.unlock();
      const Outcome& outcome = flight.get();  // rethrows whatever the leader's compute threw
      if (hit != nullptr) *hit = outcome.hit;
      return outcome.value;
    }
    state.flights.emplace(flight_key, promise.get_future().share());
  }
  // However this call ends, later callers must not join a flight that nobody will finish.
  struct FlightLanding {
    State& state;
    const std::string& key;
    ~FlightLanding() {
      std::lock_guard lock(state.flights_mutex);
      state.flights.erase(key);
    }
  } landing{state, flight_key};

  std::optional<Outcome> outcome;
  try {
    outcome.emplace(state.load_or_compute(key, compute));
  } catch (...) {
    promise.set_exception(std::current_exception());
    throw;
  }
  promise.set_value(*outcome);
  if (hit != nullptr) *hit = outcome->hit;
  return std::move(outcome->value);
}

Result<CacheStats> DiskCache::stats() const {
  CacheStats stats;
  stats.directory = state_->directory;
  stats.max_bytes = state_->policy.max_bytes;
  Result<bool> present = state_->present_for_management();
  if (!present) return std::move(present).error();
  if (*present) {
    Result<std::vector<DirectoryItem>> items = scan_directory(state_->directory);
    if (!items) return std::move(items).error();
    for (const DirectoryItem& item : *items) {
      if (item.kind != FileKind::Entry) continue;
      ++stats.entries;
      stats.bytes += item.bytes;
    }
  }
  stats.hits = state_->hits;
  stats.misses = state_->misses;
  stats.writes = state_->writes;
  stats.corrupt_removed = state_->corrupt_removed;
  stats.writable = state_->writes_enabled;
  return stats;
}

Result<std::vector<CacheEntryInfo>> DiskCache::list() const {
  Result<bool> present = state_->present_for_management();
  if (!present) return std::move(present).error();
  if (!*present) return std::vector<CacheEntryInfo>{};
  Result<std::vector<DirectoryItem>> items = scan_directory(state_->directory);
  if (!items) return std::move(items).error();
  std::vector<DirectoryItem> entries;
  for (DirectoryItem& item : *items) {
    if (item.kind == FileKind::Entry) entries.push_back(std::move(item));
  }
  std::sort(entries.begin(), entries.end(), [](const DirectoryItem& a, const DirectoryItem& b) {
    if (a.modified.tv_sec != b.modified.tv_sec || a.modified.tv_nsec != b.modified.tv_nsec) {
      return modified_before(b.modified, a.modified);
    }
    return a.name < b.name;
  });
  std::vector<CacheEntryInfo> infos;
  infos.reserve(entries.size());
  constexpr std::size_t kHexStart = 5;  // after "kiln-"
  constexpr std::size_t kHexDigits = 32;
  for (const DirectoryItem& entry : entries) {
    infos.push_back({entry.name.substr(kHexStart, kHexDigits), entry.bytes, to_time_point(entry.modified)});
  }
  return infos;
}

Result<std::uint64_t> DiskCache::prune(const CachePolicy& policy) {
  Result<bool> present = state_->present_for_management();
  if (!present) return std::move(present).error();
  if (!*present) return std::uint64_t{0};
  return state_->prune_to(policy.max_bytes);
}

Result<std::uint64_t> DiskCache::clear() {
  Result<bool> present = state_->present_for_management();
  if (!present) return std::move(present).error();
  if (!*present) return std::uint64_t{0};
  // Pruning to nothing removes every entry and the same leftovers as prune(), and nothing else.
  return state_->prune_to(0);
}

bool DiskCache::writable() const noexcept { return state_->writes_enabled; }

const std::filesystem::path& DiskCache::directory() const noexcept { return state_->directory; }

}  // namespace kiln
