// kiln cache and kiln prewarm: the persistent JIT cache from the command line.
#include <cstdio>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "kiln/cache.hpp"
#include "kiln/doctor.hpp"
#include "kiln/runtime.hpp"

namespace kiln::cli {

Result<void> run_cache(const std::string& action, const std::string& max_size, bool json) {
  CachePolicy policy = DiskCache::policy_from_environment();
  if (!max_size.empty()) {
    if (action != "prune") return usage_error("--max-size goes with 'kiln cache prune'");
    auto bytes = parse_size(max_size);
    if (!bytes) return bytes.error();
    policy.max_bytes = *bytes;
  }
  DiskCache cache(DiskCache::default_directory(), policy);
  nlohmann::ordered_json out;

  if (action == "stats") {
    auto stats = cache.stats();
    if (!stats) return stats.error();
    if (json) {
      out = {{"directory", stats->directory.string()}, {"entries", stats->entries}, {"bytes", stats->bytes},
             {"max_bytes", stats->max_bytes}};
    } else {
      std::printf("directory: %s\nentries:   %llu\nsize:      %llu bytes (limit %llu)\n", stats->directory.c_str(),
                  static_cast<unsigned long long>(stats->entries), static_cast<unsigned long long>(stats->bytes),
                  static_cast<unsigned long long>(stats->max_bytes));
    }
  } else if (action == "list") {
    auto entries = cache.list();
    if (!entries) return entries.error();
    out["entries"] = nlohmann::ordered_json::array();
    for (const CacheEntryInfo& entry : *entries) {
      const std::time_t when = std::chrono::system_clock::to_time_t(entry.last_used);
      char stamp[32];
      std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&when));
      if (json) {
        out["entries"].push_back({{"key", entry.key}, {"bytes", entry.bytes}, {"last_used", stamp}});
      } else {
        std::printf("%s %10llu  %s\n", entry.key.c_str(), static_cast<unsigned long long>(entry.bytes), stamp);
      }
    }
  } else {
    auto removed = action == "prune" ? cache.prune(policy) : cache.clear();
    if (!removed) return removed.error();
    if (json) {
      out = {{"removed", *removed}};
    } else {
      std::printf("removed %llu entries\n", static_cast<unsigned long long>(*removed));
    }
  }
  if (json) std::cout << out.dump(2) << "\n";
  return {};
}

Result<void> run_prewarm(const std::filesystem::path& file) {
  auto runtime = Runtime::create();
  if (!runtime) return runtime.error();
  auto records = prewarm(*runtime, file);
  if (!records) return records.error();
  double total_ms = 0;
  for (const KernelRecord& record : *records) {
    std::printf("GPU %d %-7s %-15s %-12s %9.1f ms  %s\n", record.device, record.device_arch.c_str(), path_name(record.path),
                record.image.c_str(), record.milliseconds, record.kernel.c_str());
    total_ms += record.milliseconds;
  }
  std::printf("%zu kernels ready on %zu GPU(s), %.1f ms of load and compile work\n", records->size(),
              runtime->gpus().size(), total_ms);
  return {};
}

}  // namespace kiln::cli
