// Cold start: how long from a process's first CUDA work to (a) the first kernel's result and
// (b) every kernel ready, for kiln (AOT, JIT with an empty cache, JIT with a warm cache) against
// the raw driver (cuModuleLoadData of the same cubin; the driver's own whole-module PTX JIT,
// without and with its JIT cache). docs/performance.md explains the method.
//
//   kiln_bench_coldstart --bundle ops.kiln [--runs 7] [--out DIR]
//
// The bundle is the example op library built with `kiln build examples/ops/kernels/*.cu
// --devices h100 --ptx compute_80`. Every measurement is a fresh process (this program again,
// with --child): a process's second load is warm in ways the first is not.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "cuda_api.hpp"
#include "kiln/bundle.hpp"
#include "kiln/catalog.hpp"
#include "kiln/doctor.hpp"
#include "kiln/runtime.hpp"
#include "kiln/select.hpp"
#include "support.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using namespace kiln_bench;
using Clock = std::chrono::steady_clock;

// One million floats: large enough that the add is a real kernel, small enough that the launch
// and load costs, not the arithmetic, decide the time.
constexpr long long kAddElements = 1 << 20;

enum class Variant {
  RawCubin,
  RawCubinSplit,
  DriverPtxJit,
  DriverPtxWarm,
  KilnAot,
  KilnAotSplit,
  KilnAotLz4,
  KilnAotSplitLz4,
  KilnJitCold,
  KilnJitWarm,
  KilnJitPrewarmed
};
enum class Measure { FirstKernel, AllKernels };

struct VariantInfo {
  Variant variant;
  const char* id;     // command line and JSON
  const char* label;  // the table
};
constexpr VariantInfo kVariants[] = {
    {Variant::RawCubin, "raw-cubin", "raw cuModuleLoadData, cubin"},
    {Variant::RawCubinSplit, "raw-cubin-split", "raw cuModuleLoadData, the --split-kernels bundle's per-kernel cubins"},
    {Variant::DriverPtxJit, "driver-ptx-jit", "driver PTX JIT, CUDA_CACHE_DISABLE=1"},
    {Variant::DriverPtxWarm, "driver-ptx-warm", "driver PTX JIT, warm driver cache"},
    {Variant::KilnAot, "kiln-aot", "kiln AOT"},
    {Variant::KilnAotSplit, "kiln-aot-split", "kiln AOT, bundle built with --split-kernels"},
    {Variant::KilnAotLz4, "kiln-aot-lz4", "kiln AOT, bundle built with --compress lz4"},
    {Variant::KilnAotSplitLz4, "kiln-aot-split-lz4", "kiln AOT, bundle built with --split-kernels --compress lz4"},
    {Variant::KilnJitCold, "kiln-jit-cold", "kiln JIT, empty cache"},
    {Variant::KilnJitWarm, "kiln-jit-warm", "kiln JIT, warm cache"},
    {Variant::KilnJitPrewarmed, "kiln-jit-prewarmed", "kiln JIT, cache filled by kiln prewarm"},
};
constexpr Measure kMeasures[] = {Measure::FirstKernel, Measure::AllKernels};

const VariantInfo& info(Variant variant) {
  for (const VariantInfo& candidate : kVariants) {
    if (candidate.variant == variant) return candidate;
  }
  throw std::logic_error("variant without a description");
}
const char* measure_id(Measure measure) { return measure == Measure::FirstKernel ? "first" : "all"; }

bool is_kiln(Variant variant) {
  return variant == Variant::KilnAot || variant == Variant::KilnAotSplit || variant == Variant::KilnAotLz4 ||
         variant == Variant::KilnAotSplitLz4 || variant == Variant::KilnJitCold ||
         variant == Variant::KilnJitWarm || variant == Variant::KilnJitPrewarmed;
}

std::string fixed(double value, int decimals) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

// ---------------------------------------------------------------------------------------------
// Which images of the bundle the raw baselines use: the cubin kiln's AOT path picks (the device's
// exact architecture) and the PTX kiln's JIT path picks (the newest the device can compile).
// Several .cu files give several images per target; "first" uses the one holding add<float>.

struct ChosenImages {
  std::string cubin_target;         // "sm_90"
  std::string ptx_target;           // "compute_80"
  std::vector<std::size_t> cubins;  // every cubin of cubin_target
  std::vector<std::size_t> ptxs;    // every PTX of ptx_target
  std::size_t first_cubin = 0;      // the ones holding kAddFloat.mangled
  std::size_t first_ptx = 0;
  std::size_t kernel_count = 0;  // kernels over all cubins
};

ChosenImages choose_images(const kiln::Bundle& bundle, kiln::ComputeCapability device) {
  const std::vector<kiln::ImageInfo>& images = bundle.images();
  const kiln::Arch device_arch{device, kiln::ArchVariant::Plain};
  std::optional<kiln::Arch> newest_ptx;
  for (const kiln::ImageInfo& image : images) {
    if (image.target.kind == kiln::ImageKind::Ptx && kiln::can_run(image.target, device) &&
        (!newest_ptx || image.target.arch > *newest_ptx)) {
      newest_ptx = image.target.arch;
    }
  }
  if (!newest_ptx) {
    throw std::runtime_error("the bundle holds no PTX that " + device_arch.sm_name() +
                             " can JIT; build it with --ptx compute_80 (or older than the device)");
  }

  ChosenImages chosen;
  chosen.cubin_target = device_arch.sm_name();
  chosen.ptx_target = newest_ptx->compute_name();
  std::optional<std::size_t> first_cubin, first_ptx;
  for (std::size_t index = 0; index < images.size(); ++index) {
    const kiln::ImageInfo& image = images[index];
    const bool holds_add =
        std::find(image.kernels.begin(), image.kernels.end(), kAddFloat.mangled) != image.kernels.end();
    if (image.target == kiln::ImageTarget{kiln::ImageKind::Cubin, device_arch}) {
      chosen.cubins.push_back(index);
      chosen.kernel_count += image.kernels.size();
      if (holds_add) first_cubin = index;
    } else if (image.target == kiln::ImageTarget{kiln::ImageKind::Ptx, *newest_ptx}) {
      chosen.ptxs.push_back(index);
      if (holds_add) first_ptx = index;
    }
  }
  if (chosen.cubins.empty()) {
    throw std::runtime_error("the bundle holds no " + chosen.cubin_target +
                             " cubin for this GPU; build it with --devices " + chosen.cubin_target);
  }
  if (!first_cubin || !first_ptx) {
    throw std::runtime_error(std::string("the bundle lacks ") + kAddFloat.mangled +
                             " (ops::add<float>): build it from examples/ops/kernels/*.cu");
  }
  chosen.first_cubin = *first_cubin;
  chosen.first_ptx = *first_ptx;
  return chosen;
}

// ---------------------------------------------------------------------------------------------
// The child: one measurement in a fresh process. Prints "coldstart-ms <milliseconds>".

struct DriverImage {
  kiln::Bytes bytes;  // a cubin, or PTX text with its terminating NUL (cuModuleLoadData needs one)
  std::vector<std::string> kernels;
};

DriverImage extract_for_driver(const kiln::Bundle& bundle, std::size_t index) {
  DriverImage image{unwrap(bundle.extract(index), "extracting image " + std::to_string(index)),
                    bundle.images()[index].mangled_kernels()};
  if (bundle.images()[index].target.kind == kiln::ImageKind::Ptx && (image.bytes.empty() || image.bytes.back() != 0)) {
    image.bytes.push_back(0);
  }
  return image;
}

// The driver alone: cuModuleLoadData of cubins or PTX (the driver JITs PTX modules whole).
double time_driver(const CudaApi& api, Measure measure, const std::vector<DriverImage>& images,
                   const DriverImage& first, const ElementwiseProblem<float>* problem) {
  const Clock::time_point t0 = Clock::now();
  if (measure == Measure::FirstKernel) {
    CUmodule module = nullptr;
    api.check(api.cuModuleLoadData_fn(&module, first.bytes.data()), "cuModuleLoadData");
    CUfunction function = nullptr;
    api.check(api.cuModuleGetFunction_fn(&function, module, kAddFloat.mangled), "cuModuleGetFunction");
    problem->launch_raw(function, nullptr);
    api.check(api.cuCtxSynchronize_fn(), "cuCtxSynchronize");
  } else {
    for (const DriverImage& image : images) {
      CUmodule module = nullptr;
      api.check(api.cuModuleLoadData_fn(&module, image.bytes.data()), "cuModuleLoadData");
      for (const std::string& kernel : image.kernels) {
        CUfunction function = nullptr;
        api.check(api.cuModuleGetFunction_fn(&function, module, kernel.c_str()),
                  ("cuModuleGetFunction(" + kernel + ")").c_str());
      }
    }
  }
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// kiln: Runtime::create and load are inside the timing (an application pays for both); the
// bundle's bytes are in memory before it, as an embedded bundle is.
double time_kiln(const CudaApi& api, Measure measure, const kiln::Bytes& bundle_bytes,
                 const ElementwiseProblem<float>* problem, kiln::Path expected_path) {
  const Clock::time_point t0 = Clock::now();
  const kiln::Runtime runtime = unwrap(kiln::Runtime::create(), "kiln::Runtime::create");
  const kiln::Module module = unwrap(runtime.load(bundle_bytes, "ops.kiln"), "kiln::Runtime::load");
  if (measure == Measure::FirstKernel) {
    const kiln::Kernel kernel = unwrap(module.kernel(kAddFloat.mangled), "kiln::Module::kernel(add<float>)");
    unwrap(problem->launch(kernel, nullptr), "kiln::Kernel::launch(add<float>)");
    api.check(api.cuCtxSynchronize_fn(), "cuCtxSynchronize");
  } else {
    unwrap(module.prepare_all(), "kiln::Module::prepare_all");
  }
  const double milliseconds = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();

  // The path each kernel took, so that a number is never reported for the wrong path (a JIT
  // time that was really an AOT load, a "warm" run that compiled).
  const std::vector<kiln::KernelRecord> records = module.records();
  if (records.empty()) throw std::runtime_error("kiln recorded no kernel");
  for (const kiln::KernelRecord& record : records) {
    if (record.path != expected_path) {
      throw std::runtime_error("kiln took path " + std::string(kiln::path_name(record.path)) + " for " + record.kernel +
                               ", the measurement expects " + kiln::path_name(expected_path));
    }
  }
  return milliseconds;
}

int run_child(Variant variant, Measure measure, const fs::path& bundle_path, std::optional<kiln::Path> expected_path,
              bool prewarm_first) {
  const CudaApi api = load_cuda_api();
  // Before t0 in every variant: driver initialized, primary context created and current.
  make_primary_context_current(api, 0);
  const DeviceDescription device = describe_device(api, 0);
  const kiln::Bytes bundle_bytes = read_file(bundle_path);
  if (prewarm_first) {  // what an installer runs once: `kiln prewarm`, into this run's cache
    const kiln::Runtime runtime = unwrap(kiln::Runtime::create(), "kiln::Runtime::create");
    (void)unwrap(kiln::prewarm(runtime, bundle_bytes, "ops.kiln"), "kiln::prewarm");
  }
  std::optional<ElementwiseProblem<float>> problem;
  if (measure == Measure::FirstKernel) problem.emplace(api, kAddFloat.op, kAddElements);

  double milliseconds = 0;
  if (is_kiln(variant)) {
    if (!expected_path) throw std::runtime_error("a kiln variant needs --expect");
    milliseconds = time_kiln(api, measure, bundle_bytes, problem ? &*problem : nullptr, *expected_path);
  } else {
    const kiln::Bundle bundle =
        unwrap(kiln::Bundle::open(bundle_bytes, bundle_path.filename().string()), "opening the bundle");
    const ChosenImages chosen = choose_images(bundle, {device.major, device.minor});
    const bool cubin = variant == Variant::RawCubin || variant == Variant::RawCubinSplit;
    std::vector<DriverImage> images;
    for (std::size_t index : cubin ? chosen.cubins : chosen.ptxs) images.push_back(extract_for_driver(bundle, index));
    const DriverImage first = extract_for_driver(bundle, cubin ? chosen.first_cubin : chosen.first_ptx);
    milliseconds = time_driver(api, measure, images, first, problem ? &*problem : nullptr);
  }
  if (problem) problem->verify(info(variant).id);
  std::printf("coldstart-ms %.6f\n", milliseconds);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The parent: runs every variant in fresh processes and reports.

// Runs this program with `arguments` and `environment`; returns what it printed as its time.
double spawn_measurement(const std::vector<std::string>& arguments, const std::vector<std::string>& environment) {
  int pipe_ends[2];
  if (pipe(pipe_ends) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_ends[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_ends[0]);
  posix_spawn_file_actions_addclose(&actions, pipe_ends[1]);

  std::vector<char*> argv, envp;
  for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  for (const std::string& variable : environment) envp.push_back(const_cast<char*>(variable.c_str()));
  envp.push_back(nullptr);

  pid_t child = 0;
  const int spawn_error = posix_spawn(&child, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_ends[1]);
  if (spawn_error != 0) {
    close(pipe_ends[0]);
    throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(spawn_error));
  }
  std::string output;
  char buffer[4096];
  for (;;) {
    const ssize_t got = read(pipe_ends[0], buffer, sizeof buffer);
    if (got > 0) {
      output.append(buffer, static_cast<std::size_t>(got));
    } else if (got == 0 || errno != EINTR) {
      break;
    }
  }
  close(pipe_ends[0]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
  }
  std::string command;
  for (std::size_t i = 1; i < arguments.size(); ++i) command += " " + arguments[i];
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("the measurement" + command + " failed (" +
                             (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                                : "signal " + std::to_string(WTERMSIG(status))) +
                             "); its stderr is above");
  }
  const std::size_t at = output.rfind("coldstart-ms ");
  if (at == std::string::npos) throw std::runtime_error("the measurement" + command + " printed no time");
  return std::strtod(output.c_str() + at + std::strlen("coldstart-ms "), nullptr);
}

// This process's environment without anything that steers kiln's or the driver's caches, so
// that each variant sets exactly what it means.
std::vector<std::string> neutral_environment() {
  std::vector<std::string> environment;
  for (char** variable = environ; *variable != nullptr; ++variable) {
    const std::string_view text(*variable);
    if (text.starts_with("KILN_") || text.starts_with("CUDA_CACHE_")) continue;
    environment.emplace_back(text);
  }
  return environment;
}

struct Series {
  std::vector<double> milliseconds;
  [[nodiscard]] double median() const {
    std::vector<double> sorted = milliseconds;
    std::sort(sorted.begin(), sorted.end());
    const std::size_t middle = sorted.size() / 2;
    return sorted.size() % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  }
  [[nodiscard]] double min() const { return *std::min_element(milliseconds.begin(), milliseconds.end()); }
  [[nodiscard]] double max() const { return *std::max_element(milliseconds.begin(), milliseconds.end()); }
};

struct Target {
  std::string name;
  Variant variant;
  Measure measure;
  Variant baseline;
  double limit;  // variant median / baseline median must not exceed it
};
const std::vector<Target> kTargets = {
    {"kiln AOT, first kernel <= 1.1x raw cubin load", Variant::KilnAot, Measure::FirstKernel, Variant::RawCubin, 1.1},
    {"kiln AOT, all kernels <= 1.1x raw cubin load", Variant::KilnAot, Measure::AllKernels, Variant::RawCubin, 1.1},
    {"kiln AOT (--split-kernels), first kernel <= 1.1x raw cubin load", Variant::KilnAotSplit, Measure::FirstKernel,
     Variant::RawCubin, 1.1},
    {"kiln AOT (--split-kernels), all kernels <= 1.1x raw cubin load", Variant::KilnAotSplit, Measure::AllKernels,
     Variant::RawCubin, 1.1},
    {"kiln AOT (--split-kernels), first kernel <= 1.1x raw load of the same per-kernel cubin", Variant::KilnAotSplit,
     Measure::FirstKernel, Variant::RawCubinSplit, 1.1},
    {"kiln AOT (--split-kernels), all kernels <= 1.1x raw load of the same per-kernel cubins", Variant::KilnAotSplit,
     Measure::AllKernels, Variant::RawCubinSplit, 1.1},
    {"kiln AOT (--compress lz4), first kernel <= 1.1x raw cubin load", Variant::KilnAotLz4, Measure::FirstKernel,
     Variant::RawCubin, 1.1},
    {"kiln AOT (--compress lz4), all kernels <= 1.1x raw cubin load", Variant::KilnAotLz4, Measure::AllKernels,
     Variant::RawCubin, 1.1},
    {"kiln AOT (--split-kernels --compress lz4), first kernel <= 1.1x raw cubin load", Variant::KilnAotSplitLz4,
     Measure::FirstKernel, Variant::RawCubin, 1.1},
    {"kiln AOT (--split-kernels --compress lz4), first kernel <= 1.1x raw load of the same per-kernel cubin",
     Variant::KilnAotSplitLz4, Measure::FirstKernel, Variant::RawCubinSplit, 1.1},
    {"kiln warm cache, first kernel <= 1.2x raw cubin load", Variant::KilnJitWarm, Measure::FirstKernel,
     Variant::RawCubin, 1.2},
    {"kiln warm cache, all kernels <= 1.2x raw cubin load", Variant::KilnJitWarm, Measure::AllKernels,
     Variant::RawCubin, 1.2},
    {"kiln cache filled by kiln prewarm, first kernel <= 1.2x raw cubin load", Variant::KilnJitPrewarmed,
     Measure::FirstKernel, Variant::RawCubin, 1.2},
    {"kiln cache filled by kiln prewarm, all kernels <= 1.2x raw cubin load", Variant::KilnJitPrewarmed,
     Measure::AllKernels, Variant::RawCubin, 1.2},
    {"kiln JIT, first kernel <= 0.05x driver whole-module PTX JIT", Variant::KilnJitCold, Measure::FirstKernel,
     Variant::DriverPtxJit, 0.05},
    {"kiln JIT, all kernels <= 0.2x driver whole-module PTX JIT", Variant::KilnJitCold, Measure::AllKernels,
     Variant::DriverPtxJit, 0.2},
};

struct Options {
  fs::path bundle;
  fs::path split_bundle;      // the same library built with --split-kernels
  fs::path lz4_bundle;        // ... with --compress lz4
  fs::path split_lz4_bundle;  // ... with --split-kernels --compress lz4
  int runs = 7;
  std::optional<fs::path> out;
};

bool directory_has_files(const fs::path& directory) {
  std::error_code error;
  for (fs::recursive_directory_iterator it(directory, error), end; !error && it != end; it.increment(error)) {
    if (it->is_regular_file()) return true;
  }
  return false;
}


int run_parent(const Options& options) {
  const CudaApi api = load_cuda_api();
  const DeviceDescription device = describe_device(api, 0);
  int driver_version = 0;
  api.check(api.cuDriverGetVersion_fn(&driver_version), "cuDriverGetVersion");
  const kiln::Bytes bundle_bytes = read_file(options.bundle);
  const kiln::Bundle bundle =
      unwrap(kiln::Bundle::open(bundle_bytes, options.bundle.filename().string()), "opening the bundle");
  const ChosenImages chosen = choose_images(bundle, {device.major, device.minor});
  const char* module_loading = std::getenv("CUDA_MODULE_LOADING");
  const std::string module_loading_text = module_loading != nullptr ? module_loading : "(unset: the driver's default)";

  std::fprintf(stderr,
               "coldstart: %s (%s), driver %d; bundle %s: %zu %s cubins, %zu %s PTX images, %zu kernels; "
               "%d runs per variant; CUDA_MODULE_LOADING %s\n",
               device.name.c_str(), chosen.cubin_target.c_str(), driver_version, options.bundle.c_str(),
               chosen.cubins.size(), chosen.cubin_target.c_str(), chosen.ptxs.size(), chosen.ptx_target.c_str(),
               chosen.kernel_count, options.runs, module_loading_text.c_str());

  const ScratchDirectory scratch("kiln-coldstart");
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const std::string bundle_path = fs::absolute(options.bundle).string();
  auto bundle_of = [&](Variant variant) {
    switch (variant) {
      case Variant::KilnAotSplit:
      case Variant::RawCubinSplit: return fs::absolute(options.split_bundle).string();
      case Variant::KilnAotLz4: return fs::absolute(options.lz4_bundle).string();
      case Variant::KilnAotSplitLz4: return fs::absolute(options.split_lz4_bundle).string();
      default: return bundle_path;
    }
  };
  const std::vector<std::string> base_environment = neutral_environment();
  std::map<std::pair<Variant, Measure>, Series> results;

  // Round 0 is not counted: it brings the libraries and the bundle into the page cache and
  // populates the warm caches (each measure its own, by a run of that measure).
  for (int round = 0; round <= options.runs; ++round) {
    for (Measure measure : kMeasures) {
      for (const VariantInfo& variant : kVariants) {
        const std::string tag = std::string(variant.id) + "-" + measure_id(measure);
        std::vector<std::string> environment = base_environment;
        std::vector<std::string> arguments = {self, "--child", variant.id, measure_id(measure), "--bundle",
                                              bundle_of(variant.variant)};
        const fs::path cache = scratch.path() / (variant.variant == Variant::KilnJitCold
                                                     ? tag + "-" + std::to_string(round)  // empty every run
                                                     : tag);
        switch (variant.variant) {
          case Variant::RawCubin:
          case Variant::RawCubinSplit:
          case Variant::DriverPtxJit: environment.push_back("CUDA_CACHE_DISABLE=1"); break;
          case Variant::DriverPtxWarm:
            environment.push_back("CUDA_CACHE_PATH=" + cache.string());
            environment.push_back("CUDA_CACHE_MAXSIZE=4294967296");  // the driver's maximum: nothing evicted
            break;
          case Variant::KilnAot:
          case Variant::KilnAotSplit:
          case Variant::KilnAotLz4:
          case Variant::KilnAotSplitLz4:
          case Variant::KilnJitCold:
          case Variant::KilnJitWarm:
          case Variant::KilnJitPrewarmed: {
            // The driver's cache off: kiln's own cache is what the kiln variants measure.
            environment.push_back("CUDA_CACHE_DISABLE=1");
            environment.push_back("KILN_CACHE_DIR=" + cache.string());
            kiln::Path expected = kiln::Path::AotExact;
            if (variant.variant == Variant::KilnJitCold || variant.variant == Variant::KilnJitWarm) {
              environment.push_back("KILN_FORCE_JIT=1");
              const bool warm = variant.variant == Variant::KilnJitWarm && round > 0;
              expected = warm ? kiln::Path::CacheHit : kiln::Path::JitPtx;
            }
            if (variant.variant == Variant::KilnJitPrewarmed) {
              environment.push_back("KILN_FORCE_JIT=1");
              expected = kiln::Path::CacheHit;
              if (round == 0) arguments.push_back("--prewarm-first");
            }
            arguments.insert(arguments.end(), {"--expect", kiln::path_name(expected)});
            break;
          }
        }
        const double milliseconds = spawn_measurement(arguments, environment);
        const std::string which =
            round == 0 ? "warm-up" : "run " + std::to_string(round) + "/" + std::to_string(options.runs);
        std::fprintf(stderr, "  %-9s %-16s %-6s %10.2f ms\n", which.c_str(), variant.id, measure_id(measure),
                     milliseconds);
        if (round > 0) results[{variant.variant, measure}].milliseconds.push_back(milliseconds);
        const bool populates = variant.variant == Variant::DriverPtxWarm || variant.variant == Variant::KilnJitWarm ||
                               variant.variant == Variant::KilnJitPrewarmed;
        if (round == 0 && populates && !directory_has_files(cache)) {
          throw std::runtime_error(std::string(variant.id) + ": the populating run left " + cache.string() +
                                   " empty, so the warm runs would not be warm");
        }
      }
    }
  }

  // The report: one markdown table (also printed), one JSON document.
  auto ratio = [&](Variant variant, Measure measure, Variant baseline) {
    return results.at({variant, measure}).median() / results.at({baseline, measure}).median();
  };
  std::ostringstream markdown;
  markdown << "Device: " << device.name << " (" << chosen.cubin_target << "), CUDA driver " << driver_version
           << ". Bundle: " << options.bundle.filename().string() << " (" << chosen.cubins.size() << " "
           << chosen.cubin_target << " cubins, " << chosen.ptxs.size() << " " << chosen.ptx_target << " PTX images, "
           << chosen.kernel_count << " kernels). " << options.runs
           << " fresh processes per cell; median (min-max) ms from after driver init and context creation. "
           << "CUDA_MODULE_LOADING: " << module_loading_text << ".\n\n";
  markdown << "| variant | first kernel's result, ms | x raw cubin | x driver JIT | all kernels ready, ms | x raw "
              "cubin | x driver JIT |\n"
           << "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  nlohmann::json json_results = nlohmann::json::array();
  for (const VariantInfo& variant : kVariants) {
    markdown << "| " << variant.label << " |";
    for (Measure measure : kMeasures) {
      const Series& series = results.at({variant.variant, measure});
      const double to_raw = ratio(variant.variant, measure, Variant::RawCubin);
      const double to_jit = ratio(variant.variant, measure, Variant::DriverPtxJit);
      markdown << " " << fixed(series.median(), 2) << " (" << fixed(series.min(), 2) << "-" << fixed(series.max(), 2)
               << ") | " << fixed(to_raw, 3) << " | " << fixed(to_jit, 3) << " |";
      json_results.push_back({{"variant", variant.id},
                              {"label", variant.label},
                              {"measure", measure_id(measure)},
                              {"runs_ms", series.milliseconds},
                              {"median_ms", series.median()},
                              {"min_ms", series.min()},
                              {"max_ms", series.max()},
                              {"ratio_to_raw_cubin", to_raw},
                              {"ratio_to_driver_ptx_jit", to_jit}});
    }
    markdown << "\n";
  }
  markdown << "\n| target | measured | met |\n| --- | ---: | --- |\n";
  nlohmann::json json_targets = nlohmann::json::array();
  bool all_met = true;
  for (const Target& target : kTargets) {
    const double measured = ratio(target.variant, target.measure, target.baseline);
    const bool met = measured <= target.limit;
    all_met = all_met && met;
    markdown << "| " << target.name << " | " << fixed(measured, 3) << "x | " << (met ? "yes" : "**no**") << " |\n";
    json_targets.push_back({{"target", target.name}, {"limit", target.limit}, {"measured", measured}, {"met", met}});
  }
  std::cout << "\n" << markdown.str();

  if (options.out) {
    fs::create_directories(*options.out);
    const nlohmann::json document = {{"benchmark", "coldstart"},
                                     {"device", device.name},
                                     {"device_arch", chosen.cubin_target},
                                     {"driver_version", driver_version},
                                     {"bundle", bundle_path},
                                     {"cubin_images", chosen.cubins.size()},
                                     {"ptx_target", chosen.ptx_target},
                                     {"ptx_images", chosen.ptxs.size()},
                                     {"kernels", chosen.kernel_count},
                                     {"runs", options.runs},
                                     {"cuda_module_loading", module_loading_text},
                                     {"results", json_results},
                                     {"targets", json_targets},
                                     {"all_targets_met", all_met}};
    write_file(*options.out / "coldstart.json", document.dump(2) + "\n");
    write_file(*options.out / "coldstart.md", markdown.str());
    std::fprintf(stderr, "coldstart: wrote %s/coldstart.{json,md}\n", options.out->c_str());
  }
  return 0;
}

constexpr const char* kUsage =
    "usage: kiln_bench_coldstart --bundle OPS.kiln --split-bundle OPS-SPLIT.kiln --lz4-bundle OPS-LZ4.kiln\n"
    "                            --split-lz4-bundle OPS-SPLIT-LZ4.kiln [--runs N] [--out DIR]\n"
    "  OPS.kiln: kiln build examples/ops/kernels/*.cu -o ops.kiln --devices h100 --ptx compute_80\n"
    "  OPS-SPLIT.kiln: the same with --split-kernels\n"
    "  OPS-LZ4.kiln, OPS-SPLIT-LZ4.kiln: the two with --compress lz4\n"
    "  --runs N  fresh processes per variant and measure (default 7)\n"
    "  --out DIR also write DIR/coldstart.json and DIR/coldstart.md\n";

std::optional<Variant> parse_variant(std::string_view id) {
  for (const VariantInfo& variant : kVariants) {
    if (id == variant.id) return variant.variant;
  }
  return std::nullopt;
}

std::optional<kiln::Path> parse_path(std::string_view name) {
  for (kiln::Path path : {kiln::Path::AotExact, kiln::Path::AotCompatible, kiln::Path::JitPtx, kiln::Path::JitSource,
                          kiln::Path::CacheHit}) {
    if (name == kiln::path_name(path)) return path;
  }
  return std::nullopt;
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "kiln_bench_coldstart: %s\n%s", message.c_str(), kUsage);
  return 2;
}

int main_checked(int argc, char** argv) {
  const std::vector<std::string_view> arguments(argv + 1, argv + argc);
  Options options;
  std::optional<Variant> child_variant;
  std::optional<Measure> child_measure;
  std::optional<kiln::Path> expected_path;
  bool prewarm_first = false;
  for (std::size_t i = 0; i < arguments.size(); ++i) {
    const std::string_view argument = arguments[i];
    const bool has_value = i + 1 < arguments.size();
    if (argument == "--help" || argument == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (argument == "--bundle" && has_value) {
      options.bundle = arguments[++i];
    } else if (argument == "--split-bundle" && has_value) {
      options.split_bundle = arguments[++i];
    } else if (argument == "--lz4-bundle" && has_value) {
      options.lz4_bundle = arguments[++i];
    } else if (argument == "--split-lz4-bundle" && has_value) {
      options.split_lz4_bundle = arguments[++i];
    } else if (argument == "--runs" && has_value) {
      options.runs = std::atoi(std::string(arguments[++i]).c_str());
      if (options.runs < 1) return usage_error("--runs takes a positive number");
    } else if (argument == "--out" && has_value) {
      options.out = fs::path(arguments[++i]);
    } else if (argument == "--child" && i + 2 < arguments.size()) {
      child_variant = parse_variant(arguments[++i]);
      const std::string_view measure = arguments[++i];
      if (!child_variant || (measure != "first" && measure != "all")) return usage_error("bad --child arguments");
      child_measure = measure == "first" ? Measure::FirstKernel : Measure::AllKernels;
    } else if (argument == "--expect" && has_value) {
      expected_path = parse_path(arguments[++i]);
      if (!expected_path) return usage_error("unknown path for --expect");
    } else if (argument == "--prewarm-first") {
      prewarm_first = true;
    } else {
      return usage_error("unexpected argument '" + std::string(argument) + "'");
    }
  }
  if (options.bundle.empty()) return usage_error("--bundle is required");
  if (child_variant) return run_child(*child_variant, *child_measure, options.bundle, expected_path, prewarm_first);
  if (options.split_bundle.empty()) return usage_error("--split-bundle is required");
  if (options.lz4_bundle.empty() || options.split_lz4_bundle.empty()) {
    return usage_error("--lz4-bundle and --split-lz4-bundle are required");
  }
  return run_parent(options);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return main_checked(argc, argv);
  } catch (const NoGpu& no_gpu) {
    std::fprintf(stderr, "kiln_bench_coldstart: no GPU: %s; nothing measured\n", no_gpu.what());
    return kExitNoGpu;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kiln_bench_coldstart: %s\n", error.what());
    return 1;
  }
}
