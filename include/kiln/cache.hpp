// The persistent JIT cache: content-addressed entries on disk, written atomically,
// checksummed, LRU-pruned by bytes, safe across processes and threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/hash.hpp"

namespace kiln {

// Bump when the entry layout or anything feeding the key changes meaning.
inline constexpr std::uint32_t kCacheFormatVersion = 1;

// Everything that changes the compiled output. Serialized canonically into the key.
struct CacheKeyInputs {
  std::uint64_t input_hash = 0;   // content hash of the PTX or source image
  std::string input_kind;         // "ptx" | "source"
  std::string kernel;             // the entry compiled ("" = whole image)
  std::string target_arch;        // "sm_90"
  std::string compiler;           // the JIT's identity: "cuda-driver 13000 <libcuda file, size, mtime>" / "nvrtc <toolchain>"
  std::string options;            // compile options, canonical
};
[[nodiscard]] Hash128 make_cache_key(const CacheKeyInputs& inputs);

struct CachePolicy {
  std::uint64_t max_bytes = std::uint64_t{1} << 30;  // KILN_CACHE_MAX_SIZE
};

// Parses "1G", "512M", "100k", "12345" (bytes); Usage error otherwise.
// Units are binary (k = 1024) and case-insensitive, an optional "B" / "iB" may follow ("1GiB");
// a fraction is allowed with a unit ("1.5G", rounded down to whole bytes), not without one.
[[nodiscard]] Result<std::uint64_t> parse_size(std::string_view text);

// The entry file (docs/cache.md): "kiln-<32 hex>.bin" holding a 48-byte little-endian header
// (magic, format version, header size, the full key, payload size, XXH3-64 of the payload)
// and the payload. parse_cache_entry reads untrusted bytes: every field is checked, and the
// error names the check that failed. A reader of the file itself checks the header first
// (parse_cache_entry_header, given the file's size), reads the payload straight into its own
// buffer, then checks that (check_cache_entry_payload): the same checks, without holding the
// whole file and a copy of its payload.
inline constexpr std::size_t kCacheEntryHeaderBytes = 48;
struct CacheEntryHeader {
  std::uint64_t payload_size = 0;
  std::uint64_t payload_checksum = 0;
};
[[nodiscard]] std::string cache_entry_file_name(const Hash128& key);
[[nodiscard]] Bytes encode_cache_entry(const Hash128& key, ByteView payload);
[[nodiscard]] Result<Bytes> parse_cache_entry(ByteView file, const Hash128& expected_key);
[[nodiscard]] Result<CacheEntryHeader> parse_cache_entry_header(ByteView header, const Hash128& expected_key,
                                                                std::uint64_t file_size);
[[nodiscard]] Result<void> check_cache_entry_payload(const CacheEntryHeader& header, ByteView payload);

struct CacheEntryInfo {
  std::string key;  // hex
  std::uint64_t bytes = 0;
  std::chrono::system_clock::time_point last_used;
};

struct CacheStats {
  std::filesystem::path directory;
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;
  std::uint64_t max_bytes = 0;
  // What this DiskCache object saw since it was made (not the other processes sharing the directory).
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t writes = 0;
  std::uint64_t corrupt_removed = 0;  // unreadable, corrupt, wrong-version or wrong-key entries deleted
  bool writable = true;
};

// How the cache meets the outside world: the fault seam for tests and the warning sink.
struct CacheFaults {
  // Called before each system call that can fail with the operation's name ("mkdir", "open-temp",
  // "write", "close", "rename", "lock", "read"); returns an errno to fail with (EINTR is retried
  // like a real interruption), 0 to proceed. Tests inject ENOSPC / EROFS here.
  std::function<int(std::string_view operation)> inject;
  // Receives the cache's warnings (at most one per DiskCache: when it turns itself off), one
  // sentence without a trailing newline; may be called from any thread. Empty: "kiln: warning: ..."
  // on stderr. The runtime plugs its KILN_LOG logger in here.
  std::function<void(std::string_view message)> warn;
};

class DiskCache {
 public:
  // Does not touch the disk: the directory is created (0700) on first write. `checked_ancestor`,
  // where given, is held to the same checks as the directory (not a link, this user's, written by
  // nobody else): the cache directory above the compile cache's build/.
  DiskCache(std::filesystem::path directory, CachePolicy policy, CacheFaults faults = {},
            std::filesystem::path checked_ancestor = {});

  // KILN_CACHE_DIR / XDG_CACHE_HOME / ~/.cache + /kiln, KILN_CACHE_MAX_SIZE.
  [[nodiscard]] static std::filesystem::path default_directory();
  [[nodiscard]] static CachePolicy policy_from_environment();
  // The same; an invalid KILN_CACHE_MAX_SIZE goes to `warn` (stderr when empty) and the default is used.
  [[nodiscard]] static CachePolicy policy_from_environment(const std::function<void(std::string_view)>& warn);

  // A verified entry, or nullopt (absent, unreadable, corrupt: a corrupt one is deleted).
  [[nodiscard]] std::optional<Bytes> get(const Hash128& key);
  // Atomic (temp file + rename). Failures leave no partial entry; the cache degrades to off.
  Result<void> put(const Hash128& key, ByteView value);
  // Removes an entry that verified but proved unusable (the driver refused the cubin), so that
  // the next get_or_compute computes it again; counted in corrupt_removed.
  void discard(const Hash128& key);

  // Single-flight across threads and processes: the first caller computes (under a per-key
  // lock that dies with its holder), the rest wait and read. `hit` tells which happened: true
  // when the value came from disk (also when another process computed it while we waited);
  // threads that waited on another thread of this DiskCache get that thread's answer and flag.
  // With the cache refused or unwritable the value is computed and returned, not kept.
  [[nodiscard]] Result<Bytes> get_or_compute(const Hash128& key, const std::function<Result<Bytes>()>& compute,
                                             bool* hit = nullptr);

  // A directory not made yet holds nothing; a refused one (symlink, another owner) is an error.
  [[nodiscard]] Result<CacheStats> stats() const;
  // Entries sorted by last use, most recent first.
  [[nodiscard]] Result<std::vector<CacheEntryInfo>> list() const;
  // Evicts least recently used entries until the total is within max_bytes; returns how many.
  // Also removes temp files left by writers that died (older than an hour) and unheld lock files.
  Result<std::uint64_t> prune(const CachePolicy& policy);
  // Removes every entry (returns how many), unheld lock files and stale temp files; nothing else.
  Result<std::uint64_t> clear();

  // A directory `name` inside the cache directory for the caller's own files (kiln build's compile
  // slots), made like the cache's own: the cache directory is checked (and created) first, and
  // the subdirectory is made 0700 and refused if it is a link, another user's or writable by others.
  [[nodiscard]] Result<std::filesystem::path> private_subdirectory(std::string_view name);

  // False once a write failed (read-only dir, full disk): one warning was logged then.
  [[nodiscard]] bool writable() const noexcept;
  [[nodiscard]] const std::filesystem::path& directory() const noexcept;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace kiln
