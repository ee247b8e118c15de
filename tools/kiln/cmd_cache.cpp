// kiln cache and kiln prewarm: the persistent JIT cache from the command line.
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "kiln/cache.hpp"
#include "kiln/compiler.hpp"
#include "kiln/doctor.hpp"
#include "kiln/runtime.hpp"

namespace kiln::cli {

namespace {

// The caches under the cache directory: the runtime's JIT cache and, in its build/, kiln build's
// compile cache. Both are DiskCaches under the same KILN_CACHE_MAX_SIZE, each on its own.
struct NamedCache {
  const char* id;     // in --json output
  const char* title;  // in text output
  DiskCache cache;
};

std::vector<NamedCache> caches(const CachePolicy& policy) {
  return {{"jit", "JIT cache", DiskCache(DiskCache::default_directory(), policy)},
          {"build", "compile cache (kiln build)", compile_cache_at(default_compile_cache_directory(), policy)}};
}

std::string timestamp(std::chrono::system_clock::time_point time) {
  const std::time_t when = std::chrono::system_clock::to_time_t(time);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&when));
  return stamp;
}

}  // namespace

Result<void> run_cache(const std::string& action, const std::string& max_size, bool json) {
  CachePolicy policy = DiskCache::policy_from_environment();
  if (!max_size.empty()) {
    if (action != "prune") return usage_error("--max-size goes with 'kiln cache prune'");
    auto bytes = parse_size(max_size);
    if (!bytes) return bytes.error();
    policy.max_bytes = *bytes;
  }
  std::vector<NamedCache> all = caches(policy);
  nlohmann::ordered_json out;

  if (action == "stats") {
    for (NamedCache& named : all) {
      auto stats = named.cache.stats();
      if (!stats) return stats.error();
      nlohmann::ordered_json fields = {{"directory", stats->directory.string()}, {"entries", stats->entries},
                                       {"bytes", stats->bytes}, {"max_bytes", stats->max_bytes}};
      // The JIT cache's fields stay at the top level, where they were before the compile cache joined.
      if (std::string_view(named.id) == "jit") {
        out = fields;
      } else {
        out[named.id] = fields;
      }
      if (!json) {
        std::printf("%s\n  directory: %s\n  entries:   %llu\n  size:      %llu bytes (limit %llu)\n", named.title,
                    stats->directory.c_str(), static_cast<unsigned long long>(stats->entries),
                    static_cast<unsigned long long>(stats->bytes), static_cast<unsigned long long>(stats->max_bytes));
      }
    }
  } else if (action == "list") {
    out["entries"] = nlohmann::ordered_json::array();
    // Both caches' entries in one order, most recently used first, as the documentation promises.
    std::vector<std::pair<CacheEntryInfo, const char*>> listed;
    for (NamedCache& named : all) {
      auto entries = named.cache.list();
      if (!entries) return entries.error();
      for (CacheEntryInfo& entry : *entries) listed.emplace_back(std::move(entry), named.id);
    }
    std::stable_sort(listed.begin(), listed.end(),
                     [](const auto& a, const auto& b) { return a.first.last_used > b.first.last_used; });
    for (const auto& [entry, cache] : listed) {
      const std::string stamp = timestamp(entry.last_used);
      if (json) {
        out["entries"].push_back({{"key", entry.key}, {"bytes", entry.bytes}, {"last_used", stamp}, {"cache", cache}});
      } else {
        std::printf("%s %10llu  %s  %s\n", entry.key.c_str(), static_cast<unsigned long long>(entry.bytes),
                    stamp.c_str(), cache);
      }
    }
  } else {
    std::uint64_t total = 0;
    nlohmann::ordered_json by_cache;
    std::string detail;
    for (NamedCache& named : all) {
      auto removed = action == "prune" ? named.cache.prune(policy) : named.cache.clear();
      if (!removed) return removed.error();
      total += *removed;
      by_cache[named.id] = *removed;
      detail += (detail.empty() ? "" : ", ") + std::string(named.title) + " " + std::to_string(*removed);
    }
    out = {{"removed", total}, {"by_cache", by_cache}};
    if (!json) std::printf("removed %llu entries (%s)\n", static_cast<unsigned long long>(total), detail.c_str());
  }
  if (json) std::cout << out.dump(2) << "\n";
  return {};
}

Result<void> run_prewarm(const std::filesystem::path& file) {
  auto runtime = Runtime::create();
  if (!runtime) return runtime.error();
  auto report = prewarm(*runtime, file);
  if (!report) return report.error();
  double total_ms = 0;
  for (const KernelRecord& record : report->kernels) {
    std::printf("GPU %d %-7s %-15s %-12s %9.1f ms  %s\n", record.device, record.device_arch.c_str(), path_name(record.path),
                record.image.c_str(), record.milliseconds, record.kernel.c_str());
    total_ms += record.milliseconds;
  }
  for (const WholeImageRecord& image : report->whole_images) {
    std::printf("GPU %d %-7s %-15s %-12s %9.1f ms  the whole image (%zu kernels, one module for prepare_all)\n",
                image.device, image.device_arch.c_str(), path_name(image.path), image.image.c_str(), image.milliseconds,
                image.kernels);
    total_ms += image.milliseconds;
  }
  std::printf("%zu kernels ready and %zu images compiled whole on %zu GPU(s), %.1f ms of load and compile work\n",
              report->kernels.size(), report->whole_images.size(), runtime->gpus().size(), total_ms);
  return {};
}

}  // namespace kiln::cli
