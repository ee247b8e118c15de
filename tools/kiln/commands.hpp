// The kiln CLI: each command is a function from parsed options to a Result; main.cpp is the
// only place that turns an Error into a message and an exit code.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "kiln/error.hpp"

namespace kiln::cli {

struct BuildArgs {
  std::vector<std::filesystem::path> sources;
  std::filesystem::path output;
  std::string devices;  // empty: KILN_AOT_DEVLIST
  std::string ptx;      // ARCH | newest | none; empty: the oldest listed architecture
  bool embed_source = false;
  bool split_kernels = false;
  std::vector<std::filesystem::path> include_dirs;
  std::vector<std::string> defines;
  unsigned jobs = 0;
  std::string compress = "zstd";  // zstd | lz4 | none
  std::optional<std::filesystem::path> depfile;
  bool no_cache = false;
  bool quiet = false;
  // Internal (a helper process of another kiln build): compile these units, "SOURCE:ARCH"
  // indexes as fill_units() numbers them, into the compile cache, and write nothing else.
  std::string fill_cache_units;
};

Result<void> run_devices(bool json);
Result<void> run_build(const BuildArgs& args);
Result<void> run_inspect(const std::filesystem::path& file, bool json, bool list_kernels);
Result<void> run_select(const std::filesystem::path& file, const std::string& device, bool json);
Result<void> run_doctor(const std::optional<std::filesystem::path>& bundle, bool json);
Result<void> run_cache(const std::string& action, const std::string& max_size, bool json);
Result<void> run_prewarm(const std::filesystem::path& file);

// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half.
Result<void> write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace kiln::cli
