// The offline compiler's content-hash cache: one file per compiled output, named
// "<32 hex key>.<kind>" (kind: "cubin", "ptx"), kept apart from the runtime's JIT cache.
//
// An entry is "KILNBLD1", the payload's size (u64 LE), its XXH3-64 (u64 LE), the payload.
// Entries are written to a unique temporary file in the same directory and renamed into
// place, so readers need no lock and never see half an entry; two builds racing on one key
// both compile and the last rename wins with identical bytes. A damaged entry is deleted and
// compiled again. The directory is created private (0700) on first store; links are not followed.
#pragma once

#include <filesystem>
#include <optional>
#include <string_view>

#include "kiln/error.hpp"
#include "kiln/hash.hpp"

namespace kiln {

class CompileCache {
 public:
  explicit CompileCache(std::filesystem::path directory) : directory_(std::move(directory)) {}

  // The payload if the entry exists and is intact; nullopt otherwise.
  [[nodiscard]] std::optional<Bytes> load(const Hash128& key, std::string_view kind) const;
  Result<void> store(const Hash128& key, std::string_view kind, ByteView payload) const;

  [[nodiscard]] const std::filesystem::path& directory() const noexcept { return directory_; }

 private:
  [[nodiscard]] std::filesystem::path entry_path(const Hash128& key, std::string_view kind) const;
  std::filesystem::path directory_;
};

}  // namespace kiln
