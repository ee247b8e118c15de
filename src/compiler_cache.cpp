#include "compiler_cache.hpp"

#include "kiln/compiler.hpp"

namespace kiln {
namespace {

Hash128 entry_key(const Hash128& key, std::string_view kind) {
  std::string text = key.hex();
  text += '.';
  text += kind;
  return hash128(as_bytes(text));
}

// The DiskCache's one warning (it turns itself off on a failed write) becomes the build's.
CacheFaults collect_warnings(const std::shared_ptr<CompileCache::Warnings>& warnings) {
  CacheFaults faults;
  faults.warn = [warnings](std::string_view message) {
    std::lock_guard lock(warnings->mutex);
    warnings->messages.push_back("compile cache: " + std::string(message));
  };
  return faults;
}

}  // namespace

std::filesystem::path default_compile_cache_directory() {
  // No cache directory (no KILN_CACHE_DIR, XDG_CACHE_HOME or HOME) must not become ./build.
  const std::filesystem::path root = DiskCache::default_directory();
  return root.empty() ? root : root / "build";
}

DiskCache compile_cache_at(const std::filesystem::path& directory, CachePolicy policy, CacheFaults faults) {
  // In its default place the compile cache is inside the cache directory, which is held to the
  // same checks: a KILN_CACHE_DIR that is a link is refused by both caches, not by one.
  std::filesystem::path ancestor;
  if (!directory.empty() && directory == default_compile_cache_directory()) ancestor = DiskCache::default_directory();
  return DiskCache(directory, policy, std::move(faults), std::move(ancestor));
}

CompileCache::CompileCache(std::filesystem::path directory)
    : warnings_(std::make_shared<Warnings>()),
      cache_(compile_cache_at(directory, DiskCache::policy_from_environment(), collect_warnings(warnings_))) {}

std::optional<Bytes> CompileCache::load(const Hash128& key, std::string_view kind) const {
  return cache_.get(entry_key(key, kind));
}

void CompileCache::store(const Hash128& key, std::string_view kind, ByteView payload) const {
  (void)cache_.put(entry_key(key, kind), payload);  // a failure has warned through warnings_
}

std::vector<std::string> CompileCache::warnings() const {
  std::lock_guard lock(warnings_->mutex);
  return warnings_->messages;
}

}  // namespace kiln
