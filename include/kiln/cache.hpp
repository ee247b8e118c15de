// The persistent JIT cache: content-addressed entries on disk, written atomically,
// checksummed, LRU-pruned by bytes, safe across processes and threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
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
  std::string compiler;           // "driver 13000" / "nvrtc 13.0"
  std::string options;            // compile options, canonical
};
[[nodiscard]] Hash128 make_cache_key(const CacheKeyInputs& inputs);

struct CachePolicy {
  std::uint64_t max_bytes = std::uint64_t{1} << 30;  // KILN_CACHE_MAX_SIZE
};

// Parses "1G", "512M", "100k", "12345" (bytes); Usage error otherwise.
[[nodiscard]] Result<std::uint64_t> parse_size(std::string_view text);

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
};

// Where cache writes go wrong; tests inject ENOSPC / EROFS here.
struct CacheFaults {
  std::function<int(std::string_view operation)> inject;  // returns an errno to fail with, 0 to proceed
};

class DiskCache {
 public:
  // Does not touch the disk: the directory is created (0700) on first write.
  DiskCache(std::filesystem::path directory, CachePolicy policy, CacheFaults faults = {});

  // KILN_CACHE_DIR / XDG_CACHE_HOME / ~/.cache + /kiln, KILN_CACHE_MAX_SIZE.
  [[nodiscard]] static std::filesystem::path default_directory();
  [[nodiscard]] static CachePolicy policy_from_environment();

  // A verified entry, or nullopt (absent, unreadable, corrupt: a corrupt one is deleted).
  [[nodiscard]] std::optional<Bytes> get(const Hash128& key);
  // Atomic (temp file + rename). Failures leave no partial entry; the cache degrades to off.
  Result<void> put(const Hash128& key, ByteView value);

  // Single-flight across threads and processes: the first caller computes (under a per-key
  // lock that dies with its holder), the rest wait and read. `hit` tells which happened.
  [[nodiscard]] Result<Bytes> get_or_compute(const Hash128& key, const std::function<Result<Bytes>()>& compute,
                                             bool* hit = nullptr);

  [[nodiscard]] Result<CacheStats> stats() const;
  [[nodiscard]] Result<std::vector<CacheEntryInfo>> list() const;
  // Evicts least recently used entries until the total is within max_bytes.
  Result<std::uint64_t> prune(const CachePolicy& policy);
  Result<std::uint64_t> clear();

  // False once a write failed (read-only dir, full disk): one warning was logged then.
  [[nodiscard]] bool writable() const noexcept;
  [[nodiscard]] const std::filesystem::path& directory() const noexcept;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace kiln
