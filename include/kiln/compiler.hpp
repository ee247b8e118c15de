// The offline compiler: CUDA C++ sources -> images (a cubin per architecture, PTX, source),
// through NVRTC loaded at run time. Also the NVRTC entry points the runtime's source JIT uses.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kiln/bundle.hpp"
#include "kiln/cache.hpp"
#include "kiln/catalog.hpp"
#include "kiln/error.hpp"

namespace kiln {

struct NvrtcInfo {
  int major = 0;
  int minor = 0;
  std::string library_path;                    // the shared object that was loaded
  std::vector<ComputeCapability> supported;    // nvrtcGetSupportedArchs
};

// Loads NVRTC (libnvrtc.so.<major> first) once per process; a clear error if absent or too old.
[[nodiscard]] Result<NvrtcInfo> nvrtc_info();

struct CompileProgress {
  std::size_t done = 0;
  std::size_t total = 0;
  std::string current;  // "ops.cu for sm_90"
  bool cached = false;
};

struct CompileOptions {
  std::vector<Arch> cubin_archs;                  // one cubin each
  std::vector<Arch> ptx_archs;                    // one PTX each (usually zero or one)
  bool embed_source = false;
  std::vector<std::filesystem::path> include_dirs;
  std::vector<std::string> defines;               // "NAME" or "NAME=VALUE"
  bool line_info = false;                         // -lineinfo: source lines for profilers
  // A cubin per kernel rather than per source (needs nvJitLink): a runtime decodes and loads
  // only the kernels it uses, at the price of a module per kernel when it loads them all.
  bool split_kernels = false;
  unsigned jobs = 0;                              // 0: one per hardware thread
  std::optional<std::filesystem::path> cache_dir; // content-hash compile cache; nullopt: none
  // Called after each image is compiled or found in the cache, from worker threads but
  // never two calls at once.
  std::function<void(const CompileProgress&)> on_progress;
};

struct CompileOutput {
  std::vector<Image> images;                       // one per (source, target), kernel names filled
  std::vector<std::filesystem::path> dependencies; // every file read, for depfiles
  // Worth showing, not failures: NVRTC's warnings ("ops.cu: ..."), a compile cache that
  // could not be written.
  std::vector<std::string> warnings;
};

// Where `kiln build` keeps its compile cache: build/ under the cache directory
// (DiskCache::default_directory()), a DiskCache of its own that `kiln cache` also manages.
// Empty where there is no cache directory (no KILN_CACHE_DIR, XDG_CACHE_HOME or HOME).
[[nodiscard]] std::filesystem::path default_compile_cache_directory();
// The compile cache at `directory`; at default_compile_cache_directory() the cache directory
// above it is checked as the directory itself is (DiskCache's checked_ancestor).
[[nodiscard]] DiskCache compile_cache_at(const std::filesystem::path& directory, CachePolicy policy,
                                         CacheFaults faults = {});

// Compiles all sources for all targets in parallel. A compile error carries the NVRTC log
// (file and line) in Error::log. Output order is deterministic: per source, in source order,
// its cubins by architecture, then its PTX, then its source image. The toolkit's headers
// (CCCL: cub, thrust, libcu++) are found without -I, as nvcc finds them.
[[nodiscard]] Result<CompileOutput> compile(const std::vector<std::filesystem::path>& sources,
                                            const CompileOptions& options);

// "_Z5scaleIfEvPT_S0_i" -> "void scale<float>(float*, float, int)"; other names unchanged.
// (Implemented in src/demangle.cpp.)
[[nodiscard]] std::string demangle(std::string_view mangled);

// Run-time JIT of a source image (as written by compile() with embed_source) for one
// architecture: returns the cubin.
[[nodiscard]] Result<Bytes> compile_source_image(ByteView source_image, Arch arch);
// What compile_source_image's output depends on besides its input: the toolchain it loads (NVRTC
// and nvJitLink, their versions and library files), as the offline compiler's cache keys it.
[[nodiscard]] Result<std::string> source_jit_identity();

}  // namespace kiln
