// NVRTC and nvJitLink, loaded with dlopen on first use (no link-time dependency), and the
// one operation the offline compiler and the source JIT share: a translation unit in,
// a cubin and/or PTX for one architecture out.
//
// Why nvJitLink as well as NVRTC: NVRTC emits every namespace-scope device variable that a
// header declares (it cannot know what host code will look up), so with CCCL headers a
// 5 KB kernel becomes a 118 KB cubin and 95 KB of PTX (libcu++'s numeric_limits and friends).
// nvcc avoids that because it sees the host code. Compiling to LTO-IR (-dlto) and linking
// with nvJitLink's -optimize-unused-variables drops them: the same kernel is 5.4 KB, smaller
// than nvcc's 8.9 KB, at no extra compile time. Without nvJitLink, NVRTC's own output is used.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kiln/catalog.hpp"
#include "kiln/compiler.hpp"
#include "kiln/error.hpp"
#include "kiln/hash.hpp"

namespace kiln::nvrtc {

// The CUDA major version kiln is built for: the soname tried first and the oldest accepted.
inline constexpr int kRequiredMajor = 13;

struct Toolchain {
  NvrtcInfo nvrtc;
  // "-I<toolkit>/include/cccl", "-I<toolkit>/include": CCCL (cub, thrust, libcu++) and the
  // CUDA headers, found as nvcc finds them. Empty where no toolkit headers were found.
  std::vector<std::string> toolkit_include_options;
  std::filesystem::path toolkit_include_dir;  // empty where none was found
  bool has_linker = false;                    // nvJitLink loaded: outputs are linked from LTO-IR
  // What changes the compiled bytes besides the input: both libraries' versions and files.
  std::string identity;
};

// Loads NVRTC (and, if present, nvJitLink) once per process; thread-safe. An absent or too
// old NVRTC is an Error (Component::Nvrtc); an absent nvJitLink only sets has_linker = false.
[[nodiscard]] Result<const Toolchain*> load_toolchain();

// One translation unit as NVRTC sees it.
struct Unit {
  std::string program_name;  // the source's file name: diagnostics and line info show it
  std::string text;
  // In-memory headers, (name as written in #include, content): the source JIT's only headers.
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<std::string> options;  // -I, -D, -std, ...: everything but the architecture
  bool line_info = false;            // -lineinfo, given to NVRTC and to nvJitLink
};

struct UnitOutputs {
  Bytes cubin;          // when asked for
  std::string ptx;      // when asked for, without a trailing NUL
  std::string warnings; // NVRTC's log of a successful compile (empty when clean)
};

// The arguments besides unit.options that make one output of compile_unit(..., arch,
// want_cubin = job_has_cubin, ...): the cubin (cubin_output) or the PTX. For cache keys.
[[nodiscard]] std::string output_options(const Toolchain& toolchain, Arch arch, bool job_has_cubin, bool cubin_output,
                                         bool line_info);

// Compiles `unit` for `arch`: a cubin for sm_<arch> and/or PTX for compute_<arch>.
// `context` names the job in errors ("ops.cu for sm_90"); a compile error carries NVRTC's log.
[[nodiscard]] Result<UnitOutputs> compile_unit(const Toolchain& toolchain, const Unit& unit, Arch arch,
                                               bool want_cubin, bool want_ptx, std::string_view context);

// PTX -> a cubin for sm_<arch> through nvJitLink (ptxas): how `kiln build --split-kernels`
// makes one cubin per kernel from PTX split per kernel. An Error where nvJitLink is missing.
[[nodiscard]] Result<Bytes> compile_ptx(const Toolchain& toolchain, std::string_view ptx, Arch arch, bool line_info,
                                        const std::string& name, std::string_view context);

}  // namespace kiln::nvrtc
