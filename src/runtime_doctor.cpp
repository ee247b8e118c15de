// kiln doctor and kiln prewarm, as library functions returning data.
#include <dlfcn.h>

#include "kiln/compiler.hpp"
#include "kiln/doctor.hpp"

namespace kiln {
namespace {

// nvJitLink's major version is in its soname; nvJitLinkVersion gives major and minor.
LibraryReport nvjitlink_report() {
  LibraryReport report;
  constexpr const char* kLibrary = "libnvJitLink.so.13";
  void* handle = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* reason = dlerror();
    report.error = make_error(Component::NvJitLink, std::string(kLibrary) + " was not found", {},
                              "only the offline compiler needs it; install the CUDA 13 toolkit's nvJitLink");
    report.error->log = reason == nullptr ? "" : reason;
    return report;
  }
  using Version = int (*)(unsigned*, unsigned*);
  auto version = reinterpret_cast<Version>(dlsym(handle, "nvJitLinkVersion"));
  unsigned major = 0;
  unsigned minor = 0;
  if (version == nullptr || version(&major, &minor) != 0) {
    report.error = make_error(Component::NvJitLink, std::string(kLibrary) + " does not answer nvJitLinkVersion");
  } else {
    report.found = true;
    report.major = static_cast<int>(major);
    report.minor = static_cast<int>(minor);
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(version), &info) != 0 && info.dli_fname != nullptr) report.path = info.dli_fname;
  }
  dlclose(handle);
  return report;
}

LibraryReport nvrtc_report() {
  LibraryReport report;
  Result<NvrtcInfo> info = nvrtc_info();
  if (!info) {
    report.error = info.error();
    return report;
  }
  report.found = true;
  report.major = info->major;
  report.minor = info->minor;
  report.path = info->library_path;
  return report;
}

CacheReport cache_report(const RuntimeOptions& options) {
  CacheReport report;
  report.directory = options.cache_dir;
  report.disabled = options.cache_disabled;
  report.max_bytes = options.cache_policy.max_bytes;
  Result<CacheStats> stats = DiskCache(options.cache_dir, options.cache_policy).stats();
  if (!stats) {
    report.error = stats.error();
    return report;
  }
  report.entries = stats->entries;
  report.bytes = stats->bytes;
  return report;
}

}  // namespace

DoctorReport doctor(const RuntimeOptions& options) {
  DoctorReport report;
  Result<std::shared_ptr<Driver>> driver = load_cuda_driver();
  if (driver) {
    report.driver_found = true;
    report.driver_version = (*driver)->version();
    report.gpus = (*driver)->gpus();
  } else {
    report.driver_error = driver.error();
  }
  report.nvrtc = nvrtc_report();
  report.nvjitlink = nvjitlink_report();
  report.cache = cache_report(options);
  return report;
}

Result<DoctorReport> doctor(const std::filesystem::path& bundle, const RuntimeOptions& options) {
  Result<Bundle> opened = Bundle::open_file(bundle);
  if (!opened) return opened.error();
  DoctorReport report = doctor(options);
  const std::vector<ImageTarget> targets = opened->targets();
  for (const GpuInfo& gpu : report.gpus) {
    GpuSelection selection;
    selection.ordinal = gpu.ordinal;
    selection.arch = Arch{gpu.cc}.sm_name();
    Result<Selection> chosen =
        select_image(targets, gpu.cc, selection.arch, SelectOptions{options.force_jit, options.disable_jit});
    if (chosen) {
      selection.selection = std::move(*chosen);
    } else {
      selection.error = chosen.error();
    }
    report.selections.push_back(std::move(selection));
  }
  return report;
}

namespace {

Result<PrewarmReport> prepare_everywhere(const Runtime& runtime, Result<Module> module) {
  if (!module) return module.error();
  PrewarmReport report;
  for (const GpuInfo& gpu : runtime.gpus()) {
    if (Result<void> ready = module->prepare_all(gpu.ordinal); !ready) return ready.error();
    // Install time can afford whole-image compiles: later starts that ready every kernel then
    // load a module per image, not one per kernel.
    Result<std::vector<WholeImageRecord>> whole = module->compile_whole_images(gpu.ordinal);
    if (!whole) return whole.error();
    report.whole_images.insert(report.whole_images.end(), whole->begin(), whole->end());
  }
  report.kernels = module->records();
  return report;
}

}  // namespace

Result<PrewarmReport> prewarm(const Runtime& runtime, const std::filesystem::path& bundle) {
  return prepare_everywhere(runtime, runtime.load_file(bundle));
}

Result<PrewarmReport> prewarm(const Runtime& runtime, ByteView bundle, std::string name) {
  return prepare_everywhere(runtime, runtime.load(bundle, std::move(name)));
}

}  // namespace kiln
