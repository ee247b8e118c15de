// The offline compiler's content-hash cache: a DiskCache of its own under <cache>/build, so it
// has what the JIT cache has (atomic writes, checksummed entries with their key inside,
// KILN_CACHE_MAX_SIZE with least-recently-used eviction, a private directory, links not followed)
// and `kiln cache` manages both. Each compiled output is one entry, keyed by its compile key and
// its kind ("cubin", "ptx").
#pragma once

#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/cache.hpp"
#include "kiln/error.hpp"
#include "kiln/hash.hpp"

namespace kiln {

class CompileCache {
 public:
  explicit CompileCache(std::filesystem::path directory);

  // The payload if the entry exists and is intact; nullopt otherwise (a damaged one is deleted).
  [[nodiscard]] std::optional<Bytes> load(const Hash128& key, std::string_view kind) const;
  // Best effort: a failed write turns the cache off for writes and leaves one warning.
  void store(const Hash128& key, std::string_view kind, ByteView payload) const;
  // What went wrong with the cache during the build: at most one warning.
  [[nodiscard]] std::vector<std::string> warnings() const;

  struct Warnings {
    std::mutex mutex;
    std::vector<std::string> messages;
  };

 private:
  std::shared_ptr<Warnings> warnings_;
  mutable DiskCache cache_;  // a handle: its state is shared and guarded inside
};

}  // namespace kiln
