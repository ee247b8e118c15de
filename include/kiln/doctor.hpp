// What `kiln doctor` and `kiln prewarm` report, as plain data: the CLI prints it (text or
// JSON); nothing here prints.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "kiln/runtime.hpp"

namespace kiln {

// A library kiln loads at run time only when it needs it (NVRTC, nvJitLink).
struct LibraryReport {
  bool found = false;
  int major = 0;
  int minor = 0;
  std::string path;            // the shared object that was loaded
  std::optional<Error> error;  // why it was not found or not usable
};

struct CacheReport {
  std::filesystem::path directory;
  bool disabled = false;  // KILN_CACHE_DISABLE
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;
  std::uint64_t max_bytes = 0;
  std::optional<Error> error;  // the directory could not be read (refused, not ours, ...)
};

// What one local GPU would get from a bundle: kiln::select_image's answer, as `kiln select` gives it.
struct GpuSelection {
  int ordinal = 0;
  std::string arch;            // "sm_90"
  std::optional<Selection> selection;
  std::optional<Error> error;  // nothing in the bundle runs there (ErrorKind::NoCompatibleImage)
};

struct DoctorReport {
  bool driver_found = false;
  int driver_version = 0;             // 13000
  std::optional<Error> driver_error;  // missing, too old, no GPU
  std::vector<GpuInfo> gpus;
  LibraryReport nvrtc;      // needed only for source JIT
  LibraryReport nvjitlink;  // not needed by the runtime (PTX goes through the driver); the offline compiler uses it
  CacheReport cache;
  std::vector<GpuSelection> selections;  // one per local GPU when a bundle was given
};

// Never fails: each part that cannot be checked says why in its own error.
[[nodiscard]] DoctorReport doctor(const RuntimeOptions& options = RuntimeOptions::from_environment());
// The same, plus what each local GPU would load from `bundle`; fails only if the bundle does not open.
[[nodiscard]] Result<DoctorReport> doctor(const std::filesystem::path& bundle,
                                          const RuntimeOptions& options = RuntimeOptions::from_environment());

// What kiln prewarm did: each kernel made ready, each JIT image compiled whole.
struct PrewarmReport {
  std::vector<KernelRecord> kernels;
  std::vector<WholeImageRecord> whole_images;
};

// Every kernel of the bundle made ready on every local GPU (Module::prepare_all each), and each
// image those GPUs JIT from compiled whole (Module::compile_whole_images), so later starts find
// the JIT results in the persistent cache.
[[nodiscard]] Result<PrewarmReport> prewarm(const Runtime& runtime, const std::filesystem::path& bundle);
// `bundle` must stay alive until this returns.
[[nodiscard]] Result<PrewarmReport> prewarm(const Runtime& runtime, ByteView bundle, std::string name = "bundle");

}  // namespace kiln
