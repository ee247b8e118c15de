#include "nvrtc.hpp"

#include <dlfcn.h>
#include <nvJitLink.h>
#include <nvrtc.h>
#include <sys/stat.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>

namespace kiln::nvrtc {

// The entry points kiln uses, resolved by name. nvJitLink's header maps its names to
// version-suffixed symbols through inline wrappers; the library also exports the plain
// names, which stay valid across 13.x, so those are what kiln resolves.
struct Api {
  decltype(&::nvrtcVersion) version = nullptr;
  decltype(&::nvrtcGetErrorString) error_string = nullptr;
  decltype(&::nvrtcGetNumSupportedArchs) supported_arch_count = nullptr;
  decltype(&::nvrtcGetSupportedArchs) supported_archs = nullptr;
  decltype(&::nvrtcCreateProgram) create_program = nullptr;
  decltype(&::nvrtcDestroyProgram) destroy_program = nullptr;
  decltype(&::nvrtcCompileProgram) compile_program = nullptr;
  decltype(&::nvrtcGetProgramLogSize) log_size = nullptr;
  decltype(&::nvrtcGetProgramLog) log = nullptr;
  decltype(&::nvrtcGetCUBINSize) cubin_size = nullptr;
  decltype(&::nvrtcGetCUBIN) cubin = nullptr;
  decltype(&::nvrtcGetPTXSize) ptx_size = nullptr;
  decltype(&::nvrtcGetPTX) ptx = nullptr;
  decltype(&::nvrtcGetLTOIRSize) lto_ir_size = nullptr;
  decltype(&::nvrtcGetLTOIR) lto_ir = nullptr;

  nvJitLinkResult (*link_create)(nvJitLinkHandle*, std::uint32_t, const char**) = nullptr;
  nvJitLinkResult (*link_destroy)(nvJitLinkHandle*) = nullptr;
  nvJitLinkResult (*link_add_data)(nvJitLinkHandle, nvJitLinkInputType, const void*, std::size_t,
                                   const char*) = nullptr;
  nvJitLinkResult (*link_complete)(nvJitLinkHandle) = nullptr;
  nvJitLinkResult (*linked_cubin_size)(nvJitLinkHandle, std::size_t*) = nullptr;
  nvJitLinkResult (*linked_cubin)(nvJitLinkHandle, void*) = nullptr;
  nvJitLinkResult (*linked_ptx_size)(nvJitLinkHandle, std::size_t*) = nullptr;
  nvJitLinkResult (*linked_ptx)(nvJitLinkHandle, char*) = nullptr;
  nvJitLinkResult (*link_error_log_size)(nvJitLinkHandle, std::size_t*) = nullptr;
  nvJitLinkResult (*link_error_log)(nvJitLinkHandle, char*) = nullptr;
};

namespace {

struct Loaded {
  Api api;
  Toolchain toolchain;
};

template <class Function>
bool resolve(void* library, const char* name, Function& slot) {
  slot = reinterpret_cast<Function>(dlsym(library, name));
  return slot != nullptr;
}

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

// Where a toolkit may live when the dynamic linker's own search finds nothing.
std::vector<std::filesystem::path> toolkit_roots() {
  std::vector<std::filesystem::path> roots;
  for (const char* variable : {"CUDA_HOME", "CUDA_PATH"}) {
    if (std::string root = environment(variable); !root.empty()) roots.emplace_back(root);
  }
  roots.emplace_back("/usr/local/cuda");
  return roots;
}

// The soname first (as the dynamic linker finds it), then the toolkit's library directories.
std::vector<std::string> library_candidates(std::string_view file_name) {
  std::vector<std::string> candidates{std::string(file_name)};
  for (const auto& root : toolkit_roots()) {
    for (const char* directory : {"lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"}) {
      candidates.push_back((root / directory / file_name).string());
    }
  }
  return candidates;
}

// Size and modification time tell patch releases of one major.minor apart (the APIs report
// only major.minor), so that a toolkit update invalidates cached compiles.
std::string file_identity(const std::string& path) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) return path;
  return path + " " + std::to_string(status.st_size) + " " + std::to_string(status.st_mtim.tv_sec);
}

std::string loaded_path(void* symbol) {
  Dl_info info{};
  if (dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return {};
  return info.dli_fname;
}

struct Found {
  void* library = nullptr;
  int major = 0;
  int minor = 0;
};

// Tries every candidate of every file name in order; the first whose version is new enough
// wins. `version_of` reads the version of an opened library (false: not the expected library).
template <class VersionOf>
std::optional<Found> open_library(std::initializer_list<std::string_view> file_names, VersionOf version_of,
                                  std::string& tried, std::optional<std::pair<int, int>>& too_old) {
  for (std::string_view file_name : file_names) {
    for (const std::string& candidate : library_candidates(file_name)) {
      void* library = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (library == nullptr) {
        const char* reason = dlerror();
        tried += "  " + candidate + ": " + (reason == nullptr ? "not found" : reason) + "\n";
        continue;
      }
      Found found{library};
      if (!version_of(library, found.major, found.minor)) {
        tried += "  " + candidate + ": has no version entry point\n";
      } else if (found.major < kRequiredMajor) {
        too_old = std::pair{found.major, found.minor};
        tried += "  " + candidate + ": version " + std::to_string(found.major) + "." + std::to_string(found.minor) +
                 "\n";
      } else {
        return found;
      }
      dlclose(library);
    }
  }
  return std::nullopt;
}

Result<void> load_nvrtc(Loaded& loaded) {
  const std::string soname = "libnvrtc.so." + std::to_string(kRequiredMajor);
  std::string tried;
  std::optional<std::pair<int, int>> too_old;
  auto version_of = [](void* library, int& major, int& minor) {
    decltype(&::nvrtcVersion) version = nullptr;
    return resolve(library, "nvrtcVersion", version) && version(&major, &minor) == NVRTC_SUCCESS;
  };
  std::optional<Found> found = open_library({soname, "libnvrtc.so"}, version_of, tried, too_old);
  if (!found) {
    const std::string need = std::to_string(kRequiredMajor) + ".0";
    Error error = too_old ? make_error(Component::Nvrtc,
                                       "NVRTC too old: have " + std::to_string(too_old->first) + "." +
                                           std::to_string(too_old->second) + ", need " + need,
                                       {}, "install the CUDA " + std::to_string(kRequiredMajor) +
                                               " toolkit's NVRTC or set CUDA_HOME to it")
                          : make_error(Component::Nvrtc,
                                       "NVRTC (" + soname + ") not found: install the CUDA " +
                                           std::to_string(kRequiredMajor) + " toolkit's NVRTC or set CUDA_HOME");
    error.log = "tried:\n" + tried;
    return error;
  }

  Api& api = loaded.api;
  void* library = found->library;
  std::string missing;
  auto need = [&](const char* name, auto& slot) {
    if (!resolve(library, name, slot)) missing += std::string(missing.empty() ? "" : ", ") + name;
  };
  need("nvrtcVersion", api.version);
  need("nvrtcGetErrorString", api.error_string);
  need("nvrtcGetNumSupportedArchs", api.supported_arch_count);
  need("nvrtcGetSupportedArchs", api.supported_archs);
  need("nvrtcCreateProgram", api.create_program);
  need("nvrtcDestroyProgram", api.destroy_program);
  need("nvrtcCompileProgram", api.compile_program);
  need("nvrtcGetProgramLogSize", api.log_size);
  need("nvrtcGetProgramLog", api.log);
  need("nvrtcGetCUBINSize", api.cubin_size);
  need("nvrtcGetCUBIN", api.cubin);
  need("nvrtcGetPTXSize", api.ptx_size);
  need("nvrtcGetPTX", api.ptx);
  need("nvrtcGetLTOIRSize", api.lto_ir_size);
  need("nvrtcGetLTOIR", api.lto_ir);
  NvrtcInfo& info = loaded.toolchain.nvrtc;
  info.library_path = loaded_path(reinterpret_cast<void*>(api.version));
  if (!missing.empty()) {
    dlclose(library);
    return make_error(Component::Nvrtc, "NVRTC lacks entry points kiln needs: " + missing, info.library_path,
                      "install the CUDA " + std::to_string(kRequiredMajor) + " toolkit's NVRTC or set CUDA_HOME");
  }
  info.major = found->major;
  info.minor = found->minor;

  int count = 0;
  if (api.supported_arch_count(&count) != NVRTC_SUCCESS || count < 0) {
    return make_error(Component::Nvrtc, "nvrtcGetNumSupportedArchs failed", info.library_path);
  }
  std::vector<int> archs(static_cast<std::size_t>(count));
  if (count > 0 && api.supported_archs(archs.data()) != NVRTC_SUCCESS) {
    return make_error(Component::Nvrtc, "nvrtcGetSupportedArchs failed", info.library_path);
  }
  for (int arch : archs) info.supported.push_back({arch / 10, arch % 10});
  if (info.supported.empty()) return make_error(Component::Nvrtc, "NVRTC supports no architecture", info.library_path);
  return {};
}

// nvJitLink is optional: without it (or with one older than NVRTC, which could not read
// NVRTC's LTO-IR) outputs come straight from NVRTC.
void load_nvjitlink(Loaded& loaded) {
  const std::string soname = "libnvJitLink.so." + std::to_string(kRequiredMajor);
  std::string tried;
  std::optional<std::pair<int, int>> too_old;
  auto version_of = [](void* library, int& major, int& minor) {
    nvJitLinkResult (*version)(unsigned*, unsigned*) = nullptr;
    unsigned major_number = 0;
    unsigned minor_number = 0;
    if (!resolve(library, "nvJitLinkVersion", version) || version(&major_number, &minor_number) != NVJITLINK_SUCCESS) {
      return false;
    }
    major = static_cast<int>(major_number);
    minor = static_cast<int>(minor_number);
    return true;
  };
  std::optional<Found> found = open_library({soname, "libnvJitLink.so"}, version_of, tried, too_old);
  if (!found) return;
  const NvrtcInfo& nvrtc = loaded.toolchain.nvrtc;
  if (std::pair{found->major, found->minor} < std::pair{nvrtc.major, nvrtc.minor} || found->major != nvrtc.major) {
    dlclose(found->library);
    return;
  }
  Api& api = loaded.api;
  void* library = found->library;
  const bool complete =
      resolve(library, "nvJitLinkCreate", api.link_create) && resolve(library, "nvJitLinkDestroy", api.link_destroy) &&
      resolve(library, "nvJitLinkAddData", api.link_add_data) &&
      resolve(library, "nvJitLinkComplete", api.link_complete) &&
      resolve(library, "nvJitLinkGetLinkedCubinSize", api.linked_cubin_size) &&
      resolve(library, "nvJitLinkGetLinkedCubin", api.linked_cubin) &&
      resolve(library, "nvJitLinkGetLinkedPtxSize", api.linked_ptx_size) &&
      resolve(library, "nvJitLinkGetLinkedPtx", api.linked_ptx) &&
      resolve(library, "nvJitLinkGetErrorLogSize", api.link_error_log_size) &&
      resolve(library, "nvJitLinkGetErrorLog", api.link_error_log);
  if (!complete) {
    dlclose(library);
    return;
  }
  loaded.toolchain.has_linker = true;
  loaded.toolchain.identity += "; nvJitLink " + std::to_string(found->major) + "." + std::to_string(found->minor) +
                               " " + file_identity(loaded_path(reinterpret_cast<void*>(api.link_create)));
}

// The toolkit headers beside the loaded NVRTC (../include, as in a toolkit install), else
// under CUDA_HOME, CUDA_PATH or /usr/local/cuda: the first that holds the CUDA headers.
void find_toolkit_headers(Loaded& loaded) {
  std::vector<std::filesystem::path> candidates;
  std::error_code error;
  const auto library = std::filesystem::canonical(loaded.toolchain.nvrtc.library_path, error);
  if (!error) candidates.push_back(library.parent_path().parent_path() / "include");
  for (const auto& root : toolkit_roots()) candidates.push_back(root / "include");
  for (const auto& candidate : candidates) {
    if (!std::filesystem::exists(candidate / "cuda_fp16.h", error)) continue;
    Toolchain& toolchain = loaded.toolchain;
    toolchain.toolkit_include_dir = std::filesystem::canonical(candidate, error);
    if (error) toolchain.toolkit_include_dir = candidate;
    // CUDA 13 keeps CCCL in include/cccl; nvcc puts it on the search path before include.
    if (std::filesystem::is_directory(toolchain.toolkit_include_dir / "cccl", error)) {
      toolchain.toolkit_include_options.push_back("-I" + (toolchain.toolkit_include_dir / "cccl").string());
    }
    toolchain.toolkit_include_options.push_back("-I" + toolchain.toolkit_include_dir.string());
    return;
  }
}

Result<const Loaded*> load_once() {
  static const Result<std::unique_ptr<Loaded>> loaded = []() -> Result<std::unique_ptr<Loaded>> {
    auto state = std::make_unique<Loaded>();
    if (auto nvrtc = load_nvrtc(*state); !nvrtc) return nvrtc.error();
    const NvrtcInfo& info = state->toolchain.nvrtc;
    state->toolchain.identity = "NVRTC " + std::to_string(info.major) + "." + std::to_string(info.minor) + " " +
                                file_identity(info.library_path);
    load_nvjitlink(*state);
    find_toolkit_headers(*state);
    return state;
  }();
  if (!loaded) return loaded.error();
  return loaded.value().get();
}

std::string program_log(const Api& api, nvrtcProgram program) {
  std::size_t size = 0;
  if (api.log_size(program, &size) != NVRTC_SUCCESS || size == 0) return {};
  std::string log(size, '\0');
  if (api.log(program, log.data()) != NVRTC_SUCCESS) return {};
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  return log;
}

std::string link_log(const Api& api, nvJitLinkHandle handle) {
  std::size_t size = 0;
  if (api.link_error_log_size(handle, &size) != NVJITLINK_SUCCESS || size == 0) return {};
  std::string log(size, '\0');
  if (api.link_error_log(handle, log.data()) != NVJITLINK_SUCCESS) return {};
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  return log;
}

std::vector<std::string> link_options(Arch arch, bool cubin, bool line_info) {
  std::vector<std::string> options{cubin ? "-arch=" + arch.sm_name() : "-arch=" + arch.compute_name(), "-lto",
                                   "-optimize-unused-variables"};
  if (!cubin) options.emplace_back("-ptx");
  if (line_info) options.emplace_back("-lineinfo");
  return options;
}

std::vector<std::string> compile_options(const Toolchain& toolchain, Arch arch, bool want_cubin) {
  if (toolchain.has_linker) return {"-arch=" + arch.compute_name(), "-dlto"};
  // NVRTC alone: sm_XY yields the cubin and the PTX, compute_XY only the PTX.
  return {"-arch=" + (want_cubin ? arch.sm_name() : arch.compute_name())};
}

// One nvJitLink run: `input` (LTO-IR or PTX) in, a cubin or PTX out.
Result<Bytes> link(const Api& api, nvJitLinkInputType input_type, ByteView input, const std::string& input_name,
                   const std::vector<std::string>& options, bool cubin, std::string_view context) {
  std::vector<const char*> arguments;
  for (const auto& option : options) arguments.push_back(option.c_str());
  nvJitLinkHandle handle = nullptr;
  nvJitLinkResult result = api.link_create(&handle, static_cast<std::uint32_t>(arguments.size()), arguments.data());
  if (result != NVJITLINK_SUCCESS) {
    Error error = make_error(Component::NvJitLink, "nvJitLinkCreate failed for " + options.front(),
                             std::string(context));
    error.native_code = result;
    return error;
  }
  struct HandleGuard {
    const Api& api;
    nvJitLinkHandle& handle;
    ~HandleGuard() { api.link_destroy(&handle); }
  } guard{api, handle};
  result = api.link_add_data(handle, input_type, input.data(), input.size(), input_name.c_str());
  if (result == NVJITLINK_SUCCESS) result = api.link_complete(handle);
  if (result != NVJITLINK_SUCCESS) {
    Error error = make_error(Component::NvJitLink,
                             input_type == NVJITLINK_INPUT_PTX ? "compiling the PTX failed" : "linking the LTO-IR failed",
                             std::string(context),
                             "the log says what; an undefined symbol means a function or variable the source "
                             "declares but does not define: kiln compiles each source on its own, so define it in "
                             "the source or a header it includes (inline asm errors show here too)");
    error.native_code = result;
    error.log = link_log(api, handle);
    return error;
  }
  std::size_t size = 0;
  Bytes output;
  if (cubin) {
    result = api.linked_cubin_size(handle, &size);
    output.resize(size);
    if (result == NVJITLINK_SUCCESS) result = api.linked_cubin(handle, output.data());
  } else {
    result = api.linked_ptx_size(handle, &size);
    output.resize(size);
    if (result == NVJITLINK_SUCCESS) result = api.linked_ptx(handle, reinterpret_cast<char*>(output.data()));
  }
  if (result != NVJITLINK_SUCCESS || output.empty()) {
    Error error = make_error(Component::NvJitLink, std::string("nvJitLink returned no ") + (cubin ? "cubin" : "PTX"),
                             std::string(context));
    error.native_code = result;
    return error;
  }
  return output;
}

// Links NVRTC's LTO-IR into a cubin or PTX.
Result<Bytes> link_lto_ir(const Api& api, ByteView lto_ir, Arch arch, bool cubin, const Unit& unit,
                          std::string_view context) {
  return link(api, NVJITLINK_INPUT_LTOIR, lto_ir, unit.program_name, link_options(arch, cubin, unit.line_info), cubin,
              context);
}

std::string without_trailing_nul(ByteView bytes) {
  std::string text(as_text(bytes));
  while (!text.empty() && text.back() == '\0') text.pop_back();
  return text;
}

}  // namespace

Result<const Toolchain*> load_toolchain() {
  auto loaded = load_once();
  if (!loaded) return loaded.error();
  return &loaded.value()->toolchain;
}

std::string output_options(const Toolchain& toolchain, Arch arch, bool job_has_cubin, bool cubin_output,
                           bool line_info) {
  std::string text;
  for (const auto& option : compile_options(toolchain, arch, job_has_cubin)) text += option + ' ';
  if (line_info) text += "-lineinfo ";
  if (toolchain.has_linker) {
    text += "| link";
    for (const auto& option : link_options(arch, cubin_output, line_info)) text += ' ' + option;
  }
  return text;
}

Result<UnitOutputs> compile_unit(const Toolchain& toolchain, const Unit& unit, Arch arch, bool want_cubin,
                                 bool want_ptx, std::string_view context) {
  auto loaded = load_once();
  if (!loaded) return loaded.error();
  const Api& api = loaded.value()->api;

  std::vector<const char*> header_texts;
  std::vector<const char*> header_names;
  for (const auto& [name, text] : unit.headers) {
    header_names.push_back(name.c_str());
    header_texts.push_back(text.c_str());
  }
  nvrtcProgram program = nullptr;
  nvrtcResult result = api.create_program(&program, unit.text.c_str(), unit.program_name.c_str(),
                                          static_cast<int>(header_texts.size()), header_texts.data(),
                                          header_names.data());
  if (result != NVRTC_SUCCESS) {
    Error error = make_error(Component::Nvrtc, std::string("nvrtcCreateProgram failed: ") + api.error_string(result),
                             std::string(context));
    error.native_code = result;
    return error;
  }
  struct ProgramGuard {
    const Api& api;
    nvrtcProgram& program;
    ~ProgramGuard() { api.destroy_program(&program); }
  } guard{api, program};

  std::vector<std::string> options = unit.options;
  for (auto& option : compile_options(toolchain, arch, want_cubin)) options.push_back(std::move(option));
  if (unit.line_info) options.emplace_back("-lineinfo");
  std::vector<const char*> arguments;
  for (const auto& option : options) arguments.push_back(option.c_str());
  result = api.compile_program(program, static_cast<int>(arguments.size()), arguments.data());
  UnitOutputs outputs;
  outputs.warnings = program_log(api, program);
  if (result != NVRTC_SUCCESS) {
    const bool source_error = result == NVRTC_ERROR_COMPILATION;
    Error error = make_error(Component::Nvrtc,
                             source_error ? "compile error" : std::string("compile failed: ") + api.error_string(result),
                             std::string(context),
                             source_error ? "the log names the file and line of each error"
                                          : "NVRTC rejected the options; check -I/-D values and the architecture");
    error.native_code = result;
    error.log = std::move(outputs.warnings);
    return error;
  }

  auto fetch = [&](auto size_of, auto get, const char* what) -> Result<Bytes> {
    std::size_t size = 0;
    Bytes bytes;
    nvrtcResult status = size_of(program, &size);
    if (status == NVRTC_SUCCESS) {
      bytes.resize(size);
      status = get(program, reinterpret_cast<char*>(bytes.data()));
    }
    if (status != NVRTC_SUCCESS || bytes.empty()) {
      Error error = make_error(Component::Nvrtc, std::string("NVRTC returned no ") + what, std::string(context));
      error.native_code = status;
      return error;
    }
    return bytes;
  };

  if (toolchain.has_linker) {
    auto lto_ir = fetch(api.lto_ir_size, api.lto_ir, "LTO-IR");
    if (!lto_ir) return lto_ir.error();
    if (want_cubin) {
      auto cubin = link_lto_ir(api, *lto_ir, arch, true, unit, context);
      if (!cubin) return cubin.error();
      outputs.cubin = std::move(*cubin);
    }
    if (want_ptx) {
      auto ptx = link_lto_ir(api, *lto_ir, arch, false, unit, context);
      if (!ptx) return ptx.error();
      outputs.ptx = without_trailing_nul(*ptx);
    }
    return outputs;
  }
  if (want_cubin) {
    auto cubin = fetch(api.cubin_size, api.cubin, "cubin");
    if (!cubin) return cubin.error();
    outputs.cubin = std::move(*cubin);
  }
  if (want_ptx) {
    auto ptx = fetch(api.ptx_size, api.ptx, "PTX");
    if (!ptx) return ptx.error();
    outputs.ptx = without_trailing_nul(*ptx);
  }
  return outputs;
}

Result<Bytes> compile_ptx(const Toolchain& toolchain, std::string_view ptx, Arch arch, bool line_info,
                          const std::string& name, std::string_view context) {
  if (!toolchain.has_linker) {
    return make_error(Component::NvJitLink, "compiling PTX needs nvJitLink, which was not found", std::string(context),
                      "install the CUDA toolkit's nvJitLink (libnvJitLink.so." + std::to_string(kRequiredMajor) + ")");
  }
  auto loaded = load_once();
  if (!loaded) return loaded.error();
  std::vector<std::string> options{"-arch=" + arch.sm_name()};
  if (line_info) options.emplace_back("-lineinfo");
  // nvJitLink reads PTX as a C string: the terminating NUL goes in too.
  std::string text(ptx);
  return link(loaded.value()->api, NVJITLINK_INPUT_PTX, ByteView(reinterpret_cast<const std::uint8_t*>(text.c_str()), text.size() + 1),
              name, options, true, context);
}

}  // namespace kiln::nvrtc
