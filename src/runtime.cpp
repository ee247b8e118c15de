// The runtime (SPEC part 5): per device and per kernel, select an image, then load it (AOT) or
// compile it (JIT: PTX split per kernel, or a whole source image) through the persistent cache,
// once however many threads ask; record and log the path taken; launch with argument checks.
#include "kiln/runtime.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <thread>
#include <unordered_map>

#include "background_work.hpp"
#include "elf.hpp"
#include "jit_single_flight.hpp"
#include "kiln/compiler.hpp"
#include "log.hpp"
#include "ptx_split.hpp"

namespace kiln {
namespace {

using Clock = std::chrono::steady_clock;

double milliseconds_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// "void ns::add<float>(float const*, int)" -> "ns::add<float>": without the return type and the
// parameter list (the last balanced parenthesis group; "(anonymous namespace)" stays).
std::string short_name(const std::string& demangled) {
  std::string_view name = demangled;
  if (!name.empty() && name.back() == ')') {
    int depth = 0;
    for (std::size_t i = name.size(); i-- > 0;) {
      if (name[i] == ')') ++depth;
      if (name[i] == '(' && --depth == 0) {
        name = name.substr(0, i);
        break;
      }
    }
  }
  int nesting = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<' || name[i] == '(') ++nesting;
    if (name[i] == '>' || name[i] == ')') --nesting;
    if (name[i] == ' ' && nesting == 0) start = i + 1;  // what precedes the last top-level space is the return type
  }
  return std::string(name.substr(start));
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
};

// The function's own identifier in a readable or demangled kernel name: "add" in
// "void ops::add<float>(float const*, long long)" and in "ops::add<float>" (kernels return void, so
// the first top-level '<' or '(' ends the qualified name; "(anonymous namespace)" is a scope).
// Empty where no identifier precedes it.
std::string_view function_identifier(std::string_view name) {
  constexpr std::string_view kAnonymous = "(anonymous namespace)";
  std::size_t end = 0;
  while (end < name.size() && name[end] != '<' && name[end] != '(') ++end;
  while (end < name.size() && name.substr(end).starts_with(kAnonymous)) {
    end += kAnonymous.size();
    while (end < name.size() && name[end] != '<' && name[end] != '(') ++end;
  }
  std::size_t start = end;
  auto is_identifier = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  while (start > 0 && is_identifier(name[start - 1])) --start;
  return name.substr(start, end - start);
}

// The bundle's kernels, numbered as its kernel index sorts them, and the images that hold each.
// Lookups by mangled name need nothing more; readable spellings are made on need, because
// demangling every name costs more than loading the one kernel that a start needs (and a library
// of many kernels would pay that at every start).
class KernelNames {
 public:
  struct Spelling {
    std::string demangled;  // "void add<float>(float const*, int)"; the mangled name for extern "C"
    std::string readable;   // "add<float>", or the demangled name where two kernels share that

    // Demangled, and readable as the short name (before overloads are told apart).
    static Spelling of(std::string_view mangled) {
      Spelling spelling{demangle(mangled), {}};
      spelling.readable = short_name(spelling.demangled);
      return spelling;
    }
  };
  struct Spellings {
    std::vector<Spelling> by_index;
    std::unordered_map<std::string, std::size_t> by_demangled;
    std::unordered_map<std::string, std::vector<std::size_t>> by_short;
  };
  // What a readable or demangled name resolves to: one kernel, or several that share the name.
  struct ReadableMatch {
    std::vector<std::size_t> kernels;     // one: found; several: ambiguous; none: no such kernel
    std::vector<std::string> demangled;   // of each, for the message that lists them
  };

  // Keeps `bundle` (its state is shared, not copied): the names are views of its strings, and a
  // kernel's number is its place in the bundle's kernel index (sorted by mangled name).
  explicit KernelNames(const Bundle& bundle) : bundle_(bundle), index_(bundle_.kernel_index()), mangled_(index_.names) {}

  [[nodiscard]] std::size_t size() const noexcept { return mangled_.size(); }
  [[nodiscard]] std::string_view mangled(std::size_t index) const { return mangled_[index]; }
  [[nodiscard]] std::optional<std::size_t> find_mangled(std::string_view name) const { return index_.find(name); }
  // The images that may hold this kernel (those that list it and those that list none), in bundle order.
  [[nodiscard]] std::span<const std::uint32_t> candidate_images(std::size_t index) const {
    return index_.candidates_of(index);
  }
  // Its candidate images' set in the index: the kernels of one source file share one.
  [[nodiscard]] std::size_t candidate_set(std::size_t index) const { return index_.set_of[index]; }
  [[nodiscard]] const Spellings& spellings() const {
    std::call_once(spelled_, [this] {
      spellings_ = spell();
      spelled_all_.store(true, std::memory_order_release);
    });
    return spellings_;
  }
  // One kernel's readable name, as spellings() gives it: its short name, or its demangled one
  // where another kernel shares the short name. Worked out from the kernels that spell the same
  // function identifier (see find_readable), so that a record or a log line does not demangle
  // the whole bundle.
  [[nodiscard]] std::string readable(std::size_t index) const {
    if (spelled_all_.load(std::memory_order_acquire)) return spellings_.by_index[index].readable;
    Spelling own = Spelling::of(mangled_[index]);
    std::optional<Scan> scan = scan_for(function_identifier(own.readable));
    if (!scan) return spellings().by_index[index].readable;
    for (std::size_t i = 0; i < scan->kernels.size(); ++i) {
      if (scan->kernels[i] != index && scan->spelled[i].readable == own.readable) return own.demangled;  // an overload
    }
    return own.readable;
  }

  // A kernel by its demangled name, or by its readable one, as spellings() would resolve it. Only
  // the kernels whose mangled name holds the same function identifier ("add") are demangled, since
  // no other can match; once this has scanned many names, spelling all of them is cheaper.
  [[nodiscard]] ReadableMatch find_readable(std::string_view name) const {
    {
      std::shared_lock lock(scan_mutex_);  // shared: an application may look a kernel up at every launch
      if (auto known = found_by_scan_.find(name); known != found_by_scan_.end()) return {{known->second}, {}};
    }
    std::optional<Scan> scan = scan_for(function_identifier(name));
    if (!scan) return match_spelled(name);
    ReadableMatch found = match_scanned(name, scan->spelled, scan->kernels);
    // Not found among them: the answer (usually "no such kernel") comes from every name, so that
    // a name the identifier rule misreads is never reported missing.
    if (found.kernels.empty()) return match_spelled(name);
    if (found.kernels.size() == 1) {
      std::unique_lock lock(scan_mutex_);
      found_by_scan_.emplace(std::string(name), found.kernels.front());
    }
    return found;
  }

 private:
  static constexpr unsigned kScansBeforeSpellingAll = 32;

  // The kernels whose name holds `identifier`, demangled: every kernel whose readable name has that
  // identifier is among them. A mangled name spells each source name in it ("3add"); a name that
  // is not mangled is its own demangled name, and any string may be listed as a kernel.
  struct Scan {
    std::vector<std::size_t> kernels;
    std::vector<Spelling> spelled;
  };
  // nullopt where that cannot answer: no identifier, every name already spelled, or past the
  // budget of scans (each reads every name; spelling all once is cheaper from then on).
  std::optional<Scan> scan_for(std::string_view identifier) const {
    if (identifier.empty() || spelled_all_.load(std::memory_order_acquire)) return std::nullopt;
    if (scans_.fetch_add(1, std::memory_order_relaxed) >= kScansBeforeSpellingAll) return std::nullopt;
    Scan scan;
    for (std::size_t index = 0; index < mangled_.size(); ++index) {
      if (mangled_[index].find(identifier) == std::string_view::npos) continue;
      scan.kernels.push_back(index);
      scan.spelled.push_back(Spelling::of(mangled_[index]));
    }
    return scan;
  }

  ReadableMatch match_spelled(std::string_view name) const {
    const Spellings& all = spellings();
    const std::string key(name);
    if (auto found = all.by_demangled.find(key); found != all.by_demangled.end()) {
      return {{found->second}, {all.by_index[found->second].demangled}};
    }
    ReadableMatch found;
    if (auto shared = all.by_short.find(key); shared != all.by_short.end()) {
      for (std::size_t index : shared->second) {
        found.kernels.push_back(index);
        found.demangled.push_back(all.by_index[index].demangled);
      }
    }
    return found;
  }

  // The same over the scanned kernels `candidates`, spelled in `spelled`.
  static ReadableMatch match_scanned(std::string_view name, const std::vector<Spelling>& spelled,
                                     const std::vector<std::size_t>& candidates) {
    for (std::size_t i = 0; i < spelled.size(); ++i) {
      if (spelled[i].demangled == name) return {{candidates[i]}, {spelled[i].demangled}};
    }
    ReadableMatch found;
    for (std::size_t i = 0; i < spelled.size(); ++i) {
      if (spelled[i].readable != name) continue;
      found.kernels.push_back(candidates[i]);
      found.demangled.push_back(spelled[i].demangled);
    }
    return found;
  }

  Spellings spell() const {
    Spellings result;
    result.by_index.reserve(mangled_.size());
    std::unordered_map<std::string, int> uses;
    for (std::string_view mangled : mangled_) {
      Spelling spelling = Spelling::of(mangled);
      ++uses[spelling.readable];
      result.by_index.push_back(std::move(spelling));
    }
    for (std::size_t index = 0; index < result.by_index.size(); ++index) {
      Spelling& spelling = result.by_index[index];
      result.by_demangled.emplace(spelling.demangled, index);
      result.by_short[spelling.readable].push_back(index);
      // Overloads: the signature tells them apart.
      if (uses[spelling.readable] > 1) spelling.readable = spelling.demangled;
    }
    return result;
  }

  Bundle bundle_;
  const KernelIndex& index_;                      // bundle_'s
  const std::vector<std::string_view>& mangled_;  // index_.names: views of bundle_'s string table
  mutable std::once_flag spelled_;
  mutable Spellings spellings_;
  mutable std::atomic<bool> spelled_all_{false};  // spellings_ is made
  mutable std::shared_mutex scan_mutex_;  // guards found_by_scan_
  mutable std::atomic<unsigned> scans_{0};
  mutable std::unordered_map<std::string, std::size_t, StringHash, std::equal_to<>> found_by_scan_;
};

// Calls `work(i)` for every i below `count`, on as many threads as there is work worth one
// (`parallel_work`), up to RuntimeOptions::jit_threads (0: one per hardware thread), the calling
// thread among them; each thread takes the next i until none is left.
void for_each_on_threads(std::size_t count, std::size_t parallel_work, const RuntimeOptions& options,
                         const std::function<void(std::size_t)>& work) {
  unsigned limit = options.jit_threads;
  if (limit == 0) limit = std::max(1u, std::thread::hardware_concurrency());
  const auto threads = static_cast<unsigned>(std::clamp<std::size_t>(parallel_work, 1, limit));
  std::atomic<std::size_t> next{0};
  auto take = [&] {
    for (std::size_t i = next++; i < count; i = next++) work(i);
  };
  std::vector<std::jthread> workers;
  for (unsigned i = 1; i < threads; ++i) workers.emplace_back(take);
  take();
}

// Every CUmodule a Module loaded. Kernels keep this alive rather than the Module's state, so a
// Kernel handle may outlive its Module without the state owning itself through its kernels.
struct LoadedModules {
  explicit LoadedModules(std::shared_ptr<Driver> driver) : driver(std::move(driver)) {}
  ~LoadedModules() {
    for (const auto& [device, module] : modules) driver->unload_module(device, module);
  }
  LoadedModules(const LoadedModules&) = delete;
  LoadedModules& operator=(const LoadedModules&) = delete;

  void add(int device, CUmodule module) {
    std::lock_guard lock(mutex);
    modules.emplace_back(device, module);
  }

  std::shared_ptr<Driver> driver;
  std::mutex mutex;
  std::vector<std::pair<int, CUmodule>> modules;
};

// One image's bytes, extracted (and for PTX parsed) once, shared by every device.
struct ImageData {
  // The image as extracted; for PTX too, as the dictionary of another image (the parsed text has
  // lost any trailing NUL that those bytes hold). Shared with the kernels of a cubin, which read
  // their parameter tables from it on first launch.
  std::shared_ptr<const Bytes> bytes;
  std::shared_ptr<const PtxModule> ptx;
};

// A cubin loaded on one device: a bundle's, one compiled from PTX or source, or one from the cache.
struct LoadedImage {
  CUmodule module = nullptr;
  Path path = Path::AotExact;
  // The cubin's bytes, kept for its kernels' parameter tables, which each reads on its first
  // launch: a start that readies every kernel and launches one reads one table.
  std::shared_ptr<const Bytes> cubin;
};

// The module of a cubin, loaded on `device` and kept until the Module's kernels are all gone.
Result<LoadedImage> load_cubin(Driver& driver, LoadedModules& modules, int device, std::shared_ptr<const Bytes> cubin,
                               Path path) {
  Result<CUmodule> module = driver.load_module(device, *cubin);
  if (!module) return module.error();
  modules.add(device, *module);
  return LoadedImage{*module, path, std::move(cubin)};
}
Result<LoadedImage> load_cubin(Driver& driver, LoadedModules& modules, int device, Bytes cubin, Path path) {
  return load_cubin(driver, modules, device, std::make_shared<const Bytes>(std::move(cubin)), path);
}

}  // namespace

struct Runtime::State {
  State(RuntimeOptions options_in, std::shared_ptr<Driver> driver_in, std::shared_ptr<JitCompiler> jit_in)
      : options(std::move(options_in)),
        driver(std::move(driver_in)),
        jit(std::move(jit_in)),
        logger(options.log_level, options.log_sink) {
    if (!options.cache_disabled) {
      CacheFaults hooks;
      hooks.warn = [logger = logger](std::string_view message) { logger.write(LogLevel::Warn, message); };
      cache.emplace(options.cache_dir, options.cache_policy, std::move(hooks));
    }
  }

  RuntimeOptions options;
  std::shared_ptr<Driver> driver;
  std::shared_ptr<JitCompiler> jit;
  Logger logger;
  std::optional<DiskCache> cache;  // none with KILN_CACHE_DISABLE
};

struct Kernel::State {
  std::shared_ptr<LoadedModules> modules;  // keeps `function` loaded
  Driver* driver = nullptr;                // modules->driver, without the indirection on each launch
  CUcontext context = nullptr;
  CUfunction function = nullptr;
  mutable std::atomic<bool> arguments_checked{false};
  // The cubin the kernel's module was loaded from, for its parameter table; let go once read.
  mutable std::shared_ptr<const Bytes> cubin;
  // The parameter sizes (inner nullopt: the driver cannot tell), worked out on the first launch.
  mutable std::optional<Result<std::optional<std::vector<std::size_t>>>> parameter_sizes_known;
  std::shared_ptr<const KernelNames> names;
  std::size_t name_index = 0;

  Result<void> check_arguments(const std::size_t* sizes, std::size_t count) const;
  // The record with its readable name, spelled on first call: a start that never asks pays no demangling.
  const KernelRecord& named_record() const {
    std::call_once(named, [this] { record.kernel = names->readable(name_index); });
    return record;
  }

  mutable KernelRecord record;  // `kernel` is empty until named_record()

 private:
  // The kernel's parameter sizes, on the first launch rather than when the kernel is made ready,
  // so that a kernel prepared and never launched costs nothing: the cubin's own table where it
  // has one, else asked of the driver (a query per parameter).
  const Result<std::optional<std::vector<std::size_t>>>& parameter_sizes() const {
    std::call_once(sized, [this] {
      if (cubin) {
        if (auto sizes = elf::parameter_sizes(*cubin, record.mangled)) parameter_sizes_known.emplace(std::move(sizes));
        cubin.reset();
      }
      if (!parameter_sizes_known) parameter_sizes_known.emplace(driver->parameter_sizes(function));
    });
    return *parameter_sizes_known;
  }

  mutable std::once_flag named;
  mutable std::once_flag sized;
};

struct Module::State {
  // What one device has of this module. The mutex guards the maps only; compiles and loads run
  // under each entry's own SingleFlight, so different kernels never wait on each other.
  struct Device {
    using Selected = Result<std::pair<std::size_t, Selection>>;  // the image index and why

    // The slot for `key` in `slots`, made on first use.
    template <class Flight>
    Flight& slot(std::unordered_map<std::size_t, std::unique_ptr<Flight>>& slots, std::size_t key) {
      std::lock_guard lock(mutex);
      std::unique_ptr<Flight>& found = slots[key];
      if (!found) found = std::make_unique<Flight>();
      return *found;
    }

    std::mutex mutex;
    std::unordered_map<std::size_t, std::unique_ptr<SingleFlight<LoadedImage>>> images;  // by image index
    std::unordered_map<std::size_t, std::unique_ptr<SingleFlight<Kernel>>> kernels;      // by kernel index
    // By candidate set (KernelIndex): the kernels of one source file share their images, and so
    // their selection, which is then made once for all of them.
    std::unordered_map<std::size_t, std::unique_ptr<SingleFlight<std::pair<std::size_t, Selection>>>> selections;
    // Whole-image compiles into the cache (compile_whole_images, or prepare_all in the background), by image index.
    std::unordered_map<std::size_t, std::unique_ptr<SingleFlight<WholeImageRecord>>> whole_compiles;
  };

  State(std::shared_ptr<Runtime::State> runtime_in, Bundle bundle_in)
      : runtime(std::move(runtime_in)),
        bundle(std::move(bundle_in)),
        names(std::make_shared<const KernelNames>(bundle)),
        image_data(std::make_unique<SingleFlight<ImageData>[]>(bundle.images().size())),
        devices(runtime->driver->gpu_count()),
        modules(std::make_shared<LoadedModules>(runtime->driver)) {}
  // Background compiles use this state (and the bundle's bytes) until they finish.
  ~State() { background::wait(this); }
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  [[nodiscard]] Result<int> resolve_device(int device) const;
  [[nodiscard]] Result<std::size_t> resolve_kernel(std::string_view name) const;
  [[nodiscard]] Result<Kernel> kernel(std::size_t index, int device);
  // The image `index` takes on `device` (an index into the bundle's images) and why: chosen once
  // per device for every kernel with the same candidate images (one source file's kernels), and
  // kept, since prepare_all and the kernel itself both ask.
  [[nodiscard]] const Device::Selected& select(std::size_t index, int device);
  // The PTX images that selection has `device` JIT kernels from, each with the architecture it is
  // compiled for: the images that kiln prewarm also compiles whole.
  [[nodiscard]] std::vector<std::pair<std::size_t, Arch>> jit_ptx_images(int device);
  // Loads `image` as one module on `device` if the persistent cache holds it compiled whole
  // (kiln prewarm put it there); its kernels then take that module rather than one each.
  void load_cached_whole_image(int device, std::size_t image, Arch target);
  // Compiles `image` whole into the persistent cache for `target` without loading it, once per
  // device however many threads ask (prepare_all's background work and compile_whole_images).
  const Result<WholeImageRecord>& cache_whole_image(int device, std::size_t image, Arch target);
  // Starts cache_whole_image on a background thread for each image that `device` compiled
  // kernels from one by one and that is not loaded whole.
  void compile_whole_images_in_background(int device);
  // The module of `image` compiled whole, if one is loaded on `device` (from the cache, or
  // because the image is compiled whole anyway).
  const LoadedImage* cached_whole_image(int device, std::size_t image);

 private:
  Result<Kernel> make_kernel(std::size_t index, int device);
  Result<WholeImageRecord> compile_whole_image(int device, std::size_t image, Arch target);
  const Result<ImageData>& data(std::size_t image);
  const Result<LoadedImage>& whole_image(int device, std::size_t image, Path aot_path);
  // The persistent cache's key for `kernel` ("" = the whole image) of `image` compiled for
  // `target`: built from the bundle table's content hash, so a warm start needs neither to
  // decompress nor to split the PTX before it finds the cubin.
  Result<Hash128> cache_key(std::size_t image, const std::string& kernel, Arch target) const;
  // jit(), then the cubin loaded on `device`.
  Result<LoadedImage> jit_and_load(std::size_t image, ByteView input, const std::string& kernel, Arch target, int device,
                                   const std::string& label);
  // A cubin from the persistent cache that the driver refused: removed, so that it is compiled again.
  void discard_refused(const Hash128& key, const std::string& label, const Error& refusal);
  // The cubin under `key` in the persistent cache, loaded on `device`; nullopt where there is none,
  // or where the driver refuses it (it is then discarded). `label` is spelled only for the warning.
  std::optional<LoadedImage> load_from_cache(const Hash128& key, int device, const std::function<std::string()>& label);
  Result<std::pair<Bytes, Path>> jit(std::size_t image, ByteView input, const std::string& kernel, Arch target,
                                     int device, const std::string& label);
  [[nodiscard]] std::string where(int device) const;

 public:
  std::shared_ptr<Runtime::State> runtime;
  Bundle bundle;
  std::shared_ptr<const KernelNames> names;
  std::unique_ptr<SingleFlight<ImageData>[]> image_data;  // by image index
  std::vector<Device> devices;                             // by ordinal
  std::shared_ptr<LoadedModules> modules;
};

// ---- Kernel ---------------------------------------------------------------------------------

Result<void> Kernel::State::check_arguments(const std::size_t* sizes, std::size_t count) const {
  const Result<std::optional<std::vector<std::size_t>>>& known = parameter_sizes();
  if (!known) {
    Error error = known.error();
    error.context = "kernel " + named_record().kernel + (error.context.empty() ? "" : ", " + error.context);
    return error;
  }
  if (!*known) return {};
  const std::vector<std::size_t>& expected = **known;
  if (count != expected.size()) {
    return make_error(Component::Runtime,
                      "kernel " + named_record().kernel + " takes " + std::to_string(expected.size()) + " arguments, " +
                          std::to_string(count) + " were given");
  }
  if (sizes == nullptr) return {};
  for (std::size_t index = 0; index < count; ++index) {
    if (sizes[index] == expected[index]) continue;
    return make_error(Component::Runtime, "kernel " + named_record().kernel + ": argument " + std::to_string(index) + " is " +
                                              std::to_string(sizes[index]) + " bytes, the kernel takes " +
                                              std::to_string(expected[index]));
  }
  return {};
}

Result<void> Kernel::launch_raw(Dim3 grid, Dim3 block, unsigned shared_bytes, CUstream stream, void** args,
                                const std::size_t* sizes, std::size_t count) const {
  const State& state = *state_;
#ifdef NDEBUG
  constexpr bool kCheckEveryLaunch = false;
#else
  constexpr bool kCheckEveryLaunch = true;
#endif
  if (kCheckEveryLaunch || !state.arguments_checked.load(std::memory_order_relaxed)) {
    if (Result<void> checked = state.check_arguments(sizes, count); !checked) return checked;
    state.arguments_checked.store(true, std::memory_order_relaxed);
  }
  Result<void> launched = state.driver->launch(state.context, state.function, grid, block, shared_bytes, stream, args);
  if (!launched) {
    // The error path only: a launch that succeeds builds no text.
    Error error = std::move(launched).error();
    const KernelRecord& record = state.named_record();
    const std::string here = "kernel " + record.kernel + " on GPU " + std::to_string(record.device) + " (" +
                             record.device_arch + "), grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) +
                             ", " + std::to_string(grid.z) + "), block (" + std::to_string(block.x) + ", " +
                             std::to_string(block.y) + ", " + std::to_string(block.z) + "), " +
                             std::to_string(shared_bytes) + " bytes of dynamic shared memory";
    error.context = error.context.empty() ? here : here + ", " + error.context;
    return error;
  }
  return {};
}

const KernelRecord& Kernel::record() const { return state_->named_record(); }
void* Kernel::native_handle() const noexcept { return state_->function; }

// ---- Module ---------------------------------------------------------------------------------

std::string Module::State::where(int device) const {
  const GpuInfo& gpu = runtime->driver->gpus()[static_cast<std::size_t>(device)];
  return "GPU " + std::to_string(device) + " (" + gpu.name + ", " + Arch{gpu.cc}.sm_name() + ")";
}

Result<int> Module::State::resolve_device(int device) const {
  const int count = static_cast<int>(runtime->driver->gpu_count());
  if (device == -1) {
    Result<std::optional<int>> current = runtime->driver->current_device();
    if (!current) return current.error();
    return current->value_or(0);
  }
  if (device < 0 || device >= count) {
    return make_error(Component::Runtime,
                      "GPU " + std::to_string(device) + " does not exist: this machine has " + std::to_string(count),
                      bundle.name());
  }
  return device;
}

Result<std::size_t> Module::State::resolve_kernel(std::string_view name) const {
  if (std::optional<std::size_t> index = names->find_mangled(name)) return *index;
  const KernelNames::ReadableMatch found = names->find_readable(name);
  if (found.kernels.size() == 1) return found.kernels.front();
  const std::string key(name);
  if (found.kernels.size() > 1) {
    std::string candidates;
    for (const std::string& demangled : found.demangled) candidates += "\n  " + demangled;
    Error error = make_error(Component::Runtime, "kernel name " + key + " is ambiguous", bundle.name(),
                             "name one by its full signature");
    error.log = "candidates:" + candidates;
    return error;
  }
  std::string known;
  for (const KernelNames::Spelling& kernel : names->spellings().by_index) known += (known.empty() ? "" : ", ") + kernel.readable;
  return make_error(Component::Runtime, "the bundle has no kernel named " + key, bundle.name(),
                    "it has: " + (known.empty() ? std::string("no kernels") : known));
}

Result<Kernel> Module::State::kernel(std::size_t index, int device) {
  Device& state = devices[static_cast<std::size_t>(device)];
  return state.slot(state.kernels, index).get([&] { return make_kernel(index, device); });
}

const Result<ImageData>& Module::State::data(std::size_t image) {
  const ImageInfo& info = bundle.images()[image];
  // A duplicate shares its original's decoded form only where both are read the same way (PTX is
  // parsed; other kinds are kept as bytes): identical bytes under two kinds make a valid bundle.
  if (info.duplicate_of && bundle.images()[*info.duplicate_of].target.kind == info.target.kind) {
    return data(*info.duplicate_of);
  }
  return image_data[image].get([&]() -> Result<ImageData> {
    // The dictionary comes from this module's own extracted images, so every image of a chain is
    // decoded once (open() ruled out cycles, so this recursion ends). A duplicate's is its original's.
    const ImageInfo& stored = bundle.images()[info.duplicate_of.value_or(image)];
    ByteView dictionary;
    if (stored.dictionary) {
      const Result<ImageData>& primer = data(*stored.dictionary);
      if (!primer) return primer.error();
      dictionary = ByteView(*primer->bytes);
    }
    Result<Bytes> bytes = bundle.extract(image, dictionary);
    if (!bytes) return bytes.error();
    ImageData data;
    if (bundle.images()[image].target.kind != ImageKind::Ptx) {
      data.bytes = std::make_shared<const Bytes>(std::move(*bytes));
      return data;
    }
    Result<PtxModule> ptx = PtxModule::parse(std::string(as_text(*bytes)));
    data.bytes = std::make_shared<const Bytes>(std::move(*bytes));
    if (!ptx) {
      Error error = std::move(ptx).error();
      error.context = bundle.name() + ", image " + std::to_string(image) + " (" +
                      bundle.images()[image].target.name() + "), " + error.context;
      return error;
    }
    if (!ptx->splittable() && runtime->logger.enabled(LogLevel::Debug)) {
      runtime->logger.write(LogLevel::Debug, bundle.name() + ": " + bundle.images()[image].target.name() +
                                                 " PTX is compiled whole, not per kernel: " + ptx->why_whole());
    }
    data.ptx = std::make_shared<const PtxModule>(std::move(*ptx));
    return data;
  });
}

Result<Hash128> Module::State::cache_key(std::size_t image, const std::string& kernel, Arch target) const {
  const ImageInfo& info = bundle.images()[image];
  Result<std::string> compiler = runtime->jit->identity(info.target.kind);
  if (!compiler) return compiler.error();
  CacheKeyInputs key;
  key.input_hash = info.content_hash;  // verified against the bytes whenever they are extracted
  key.input_kind = kind_name(info.target.kind);
  key.kernel = kernel;
  key.target_arch = target.sm_name();
  key.compiler = *compiler;
  key.options = kernel.empty() ? "whole" : "ptx-split-1";  // what the compiled piece was cut from
  return make_cache_key(key);
}

Result<std::pair<Bytes, Path>> Module::State::jit(std::size_t image, ByteView input, const std::string& kernel,
                                                  Arch target, int device, const std::string& label) {
  const ImageKind kind = bundle.images()[image].target.kind;
  const Path compiled = kind == ImageKind::Ptx ? Path::JitPtx : Path::JitSource;
  JitRequest request{kind, input, kernel, target, device, label};
  auto compile = [&] { return runtime->jit->compile(request); };
  if (!runtime->cache) {
    Result<Bytes> cubin = compile();
    if (!cubin) return cubin.error();
    return std::pair{std::move(*cubin), compiled};
  }
  Result<Hash128> key = cache_key(image, kernel, target);
  if (!key) return key.error();
  bool hit = false;
  Result<Bytes> cubin = runtime->cache->get_or_compute(*key, compile, &hit);
  if (!cubin) return cubin.error();
  return std::pair{std::move(*cubin), hit ? Path::CacheHit : compiled};
}

// A cubin from the cache that the driver refuses (written by another driver build, or damaged
// in a way its checksum cannot see) is discarded and compiled again, once.
Result<LoadedImage> Module::State::jit_and_load(std::size_t image, ByteView input, const std::string& kernel,
                                                Arch target, int device, const std::string& label) {
  for (bool retried = false;; retried = true) {
    auto jitted = jit(image, input, kernel, target, device, label);
    if (!jitted) return jitted.error();
    const Path path = jitted->second;
    Result<LoadedImage> loaded = load_cubin(*runtime->driver, *modules, device, std::move(jitted->first), path);
    if (loaded || path != Path::CacheHit || retried) return loaded;
    Result<Hash128> key = cache_key(image, kernel, target);
    if (!key) return loaded;
    discard_refused(*key, label, loaded.error());
  }
}

std::optional<LoadedImage> Module::State::load_from_cache(const Hash128& key, int device,
                                                          const std::function<std::string()>& label) {
  std::optional<Bytes> cubin = runtime->cache->get(key);
  if (!cubin) return std::nullopt;
  Result<LoadedImage> loaded = load_cubin(*runtime->driver, *modules, device, std::move(*cubin), Path::CacheHit);
  if (!loaded) {
    discard_refused(key, label(), loaded.error());
    return std::nullopt;
  }
  return std::move(*loaded);
}

void Module::State::discard_refused(const Hash128& key, const std::string& label, const Error& refusal) {
  runtime->cache->discard(key);
  runtime->logger.write(LogLevel::Warn, label + ": the driver refused the cubin from the cache (" + refusal.describe() +
                                            "); it was removed and is compiled again");
}

const Result<LoadedImage>& Module::State::whole_image(int device, std::size_t image, Path aot_path) {
  Device& state = devices[static_cast<std::size_t>(device)];
  return state.slot(state.images, image).get([&]() -> Result<LoadedImage> {
    const Result<ImageData>& loaded = data(image);
    if (!loaded) return loaded.error();
    const ImageTarget& target = bundle.images()[image].target;
    if (target.kind == ImageKind::Cubin) return load_cubin(*runtime->driver, *modules, device, loaded->bytes, aot_path);
    // Source compiles for the device's own architecture; PTX keeps its a/f variant.
    Arch arch{runtime->driver->compute_capability(device),
              target.kind == ImageKind::Ptx ? target.arch.variant : ArchVariant::Plain};
    ByteView input = target.kind == ImageKind::Ptx ? as_bytes(loaded->ptx->text()) : ByteView(*loaded->bytes);
    return jit_and_load(image, input, "", arch, device, bundle.name() + " " + target.name());
  });
}

const Module::State::Device::Selected& Module::State::select(std::size_t index, int device) {
  Device& state = devices[static_cast<std::size_t>(device)];
  const std::span<const std::uint32_t> candidates = names->candidate_images(index);
  return state.slot(state.selections, names->candidate_set(index)).get([&]() -> Device::Selected {
    const ComputeCapability cc = runtime->driver->compute_capability(device);
    std::vector<ImageTarget> targets;
    targets.reserve(candidates.size());
    for (std::size_t image : candidates) targets.push_back(bundle.images()[image].target);
    Result<Selection> selection = select_image(targets, cc, Arch{cc}.sm_name(),
                                               SelectOptions{runtime->options.force_jit, runtime->options.disable_jit});
    if (!selection) return selection.error();
    const std::size_t image = candidates[selection->image_index];
    return std::pair{image, std::move(*selection)};
  });
}

std::vector<std::pair<std::size_t, Arch>> Module::State::jit_ptx_images(int device) {
  std::vector<std::pair<std::size_t, Arch>> images;
  const ComputeCapability cc = runtime->driver->compute_capability(device);
  for (std::size_t index = 0; index < names->size(); ++index) {
    const Device::Selected& selected = select(index, device);
    if (!selected || selected->second.target.kind != ImageKind::Ptx) continue;
    const std::pair<std::size_t, Arch> image{selected->first, Arch{cc, selected->second.target.arch.variant}};
    if (std::find(images.begin(), images.end(), image) == images.end()) images.push_back(image);
  }
  return images;
}

const LoadedImage* Module::State::cached_whole_image(int device, std::size_t image) {
  Device& state = devices[static_cast<std::size_t>(device)];
  std::lock_guard lock(state.mutex);
  auto found = state.images.find(image);
  if (found == state.images.end()) return nullptr;
  const Result<LoadedImage>* loaded = found->second->peek();
  return loaded != nullptr && loaded->ok() ? &loaded->value() : nullptr;
}

void Module::State::load_cached_whole_image(int device, std::size_t image, Arch target) {
  if (!runtime->cache || cached_whole_image(device, image) != nullptr) return;
  Result<Hash128> key = cache_key(image, "", target);
  if (!key) return;
  // Loaded before it takes the slot, so that a cubin the driver refuses leaves the slot free for
  // compiling the image again; a thread that filled the slot meanwhile wins, and this module is
  // unloaded with the others. Not prewarmed: each kernel finds or compiles its own cubin.
  std::optional<LoadedImage> loaded = load_from_cache(
      *key, device, [&] { return bundle.name() + " " + bundle.images()[image].target.name() + " (whole)"; });
  if (!loaded) return;
  Device& state = devices[static_cast<std::size_t>(device)];
  (void)state.slot(state.images, image).get([&]() -> Result<LoadedImage> { return std::move(*loaded); });
}

const Result<WholeImageRecord>& Module::State::cache_whole_image(int device, std::size_t image, Arch target) {
  Device& state = devices[static_cast<std::size_t>(device)];
  return state.slot(state.whole_compiles, image).get([&] { return compile_whole_image(device, image, target); });
}

void Module::State::compile_whole_images_in_background(int device) {
  if (!runtime->options.background_compile || !runtime->cache) return;
  for (const auto& [image, target] : jit_ptx_images(device)) {
    if (cached_whole_image(device, image) != nullptr) continue;  // loaded whole: prewarmed, or not splittable
    Device& state = devices[static_cast<std::size_t>(device)];
    {
      // A slot already made: an earlier prepare_all or compile_whole_images has this image.
      std::lock_guard lock(state.mutex);
      if (!state.whole_compiles.try_emplace(image, std::make_unique<SingleFlight<WholeImageRecord>>()).second) continue;
    }
    const bool started = background::start(this, [this, device, image = image, target = target] {
      const Result<WholeImageRecord>& done = cache_whole_image(device, image, target);
      const std::string what = bundle.images()[image].target.name() + " for " + target.sm_name();
      if (!done) {
        runtime->logger.write(LogLevel::Warn, "compiling " + what + " whole in the background failed (the next start " +
                                                  "loads a module per kernel instead): " + done.error().describe());
      } else if (done->path == Path::JitPtx && runtime->logger.enabled(LogLevel::Info)) {
        char milliseconds[32];
        std::snprintf(milliseconds, sizeof milliseconds, "%.1f ms", done->milliseconds);
        runtime->logger.write(LogLevel::Info, bundle.name() + " " + what + ": compiled whole in the background, " +
                                                  milliseconds + "; the next start loads it as one module");
      }
    });
    if (!started) {
      runtime->logger.write(LogLevel::Warn, "no thread could be started to compile " + bundle.images()[image].target.name() +
                                                " whole in the background; the next start loads a module per kernel");
    }
  }
}

Result<WholeImageRecord> Module::State::compile_whole_image(int device, std::size_t image, Arch target) {
  const Clock::time_point start = Clock::now();
  const ImageInfo& info = bundle.images()[image];
  // Found in the cache (a second kiln prewarm), the image need not be decompressed and parsed;
  // the key needs only the bundle's table. (compile_whole_images calls this only with a cache.)
  Result<Hash128> key = cache_key(image, "", target);
  if (!key) return key.error();
  if (runtime->cache->get(*key)) {
    return WholeImageRecord{info.target.name(), info.kernels.size(), device, target.sm_name(), Path::CacheHit,
                            milliseconds_since(start)};
  }
  const Result<ImageData>& loaded = data(image);
  if (!loaded) return loaded.error();
  const std::string label = bundle.name() + " " + info.target.name() + " (whole)";
  Result<std::pair<Bytes, Path>> compiled = jit(image, as_bytes(loaded->ptx->text()), "", target, device, label);
  if (!compiled) return compiled.error();
  return WholeImageRecord{info.target.name(), info.kernels.size(), device, target.sm_name(), compiled->second,
                          milliseconds_since(start)};
}

Result<Kernel> Module::State::make_kernel(std::size_t index, int device) {
  const Clock::time_point start = Clock::now();
  const std::string mangled(names->mangled(index));
  const ComputeCapability cc = runtime->driver->compute_capability(device);
  const std::string device_arch = Arch{cc}.sm_name();
  auto failed = [&](Error error) {
    const std::string here = where(device) + ", kernel " + names->readable(index);
    error.context = error.context.empty() ? here : here + ", " + error.context;
    return error;
  };

  const Device::Selected& selected = select(index, device);
  if (!selected) return failed(selected.error());
  const std::size_t image = selected->first;
  const Selection* selection = &selected->second;
  const ImageTarget& target = selection->target;
  if (runtime->logger.enabled(LogLevel::Debug)) {
    runtime->logger.write(LogLevel::Debug, names->readable(index) + " on GPU " + std::to_string(device) + ": " + selection->reason);
  }

  const Arch ptx_arch{cc, target.arch.variant};
  // A warm start: the kernel's image, compiled whole, already loaded from the persistent cache by
  // prepare_all; or the kernel's own cubin in the cache.
  const LoadedImage* whole = target.kind == ImageKind::Ptx ? cached_whole_image(device, image) : nullptr;
  // A kernel's own cubin (from the cache or just compiled) is loaded here; a whole image's
  // module is shared by its kernels.
  std::optional<LoadedImage> own;
  // Spelled only where it is shown: a warm start demangles nothing.
  auto label = [&] { return bundle.name() + " " + target.name() + " " + names->readable(index); };
  if (!whole && target.kind == ImageKind::Ptx && runtime->cache) {
    if (Result<Hash128> key = cache_key(image, mangled, ptx_arch)) own = load_from_cache(*key, device, label);
  }
  if (!whole && !own) {
    const Result<ImageData>& loaded = data(image);
    if (!loaded) return failed(loaded.error());
    if (target.kind == ImageKind::Ptx && loaded->ptx->splittable()) {
      Result<std::string> piece = loaded->ptx->kernel_ptx(mangled);
      if (!piece) return failed(std::move(piece).error());
      Result<LoadedImage> kernel_module = jit_and_load(image, as_bytes(*piece), mangled, ptx_arch, device, label());
      if (!kernel_module) return failed(std::move(kernel_module).error());
      own = std::move(*kernel_module);
    } else {
      const Result<LoadedImage>& shared = whole_image(device, image, selection->path);
      if (!shared) return failed(shared.error());
      whole = &*shared;
    }
  }
  const LoadedImage& loaded_image = own ? *own : *whole;
  CUmodule module = loaded_image.module;
  Path path = loaded_image.path;

  auto state = std::make_shared<Kernel::State>();
  Result<CUfunction> function = runtime->driver->function(module, mangled);
  if (!function) return failed(std::move(function).error());
  Result<CUcontext> context = runtime->driver->context(device);
  if (!context) return failed(std::move(context).error());
  state->modules = modules;
  state->driver = runtime->driver.get();
  state->context = *context;
  state->function = *function;
  state->cubin = loaded_image.cubin;
  state->names = names;
  state->name_index = index;
  state->record = KernelRecord{{}, mangled, device, device_arch, target.name(), path, milliseconds_since(start)};
  if (runtime->logger.enabled(LogLevel::Info)) {
    char milliseconds[32];
    std::snprintf(milliseconds, sizeof milliseconds, "%.1f ms", state->record.milliseconds);
    runtime->logger.write(LogLevel::Info, names->readable(index) + " on GPU " + std::to_string(device) + " (" + device_arch +
                                              "): " + path_name(path) + " from " + target.name() + ", " + milliseconds);
  }
  return Kernel(std::move(state));
}

Result<Kernel> Module::kernel(std::string_view name, int device) const {
  Result<int> ordinal = state_->resolve_device(device);
  if (!ordinal) return ordinal.error();
  Result<std::size_t> index = state_->resolve_kernel(name);
  if (!index) return index.error();
  return state_->kernel(*index, *ordinal);
}

Result<void> Module::prepare_all(int device) const {
  Result<int> ordinal = state_->resolve_device(device);
  if (!ordinal) return ordinal.error();
  const std::size_t count = state_->names->size();
  // An image that kiln prewarm compiled whole loads as one module, not one per kernel.
  for (const auto& [image, target] : state_->jit_ptx_images(*ordinal)) {
    state_->load_cached_whole_image(*ordinal, image, target);
  }
  // Threads only for work that gains from them: each compile, and each cubin image large enough
  // that decoding it outlasts starting a thread. Loading a cubin is tens of microseconds and the
  // driver serializes module loads, so a thread per AOT kernel would cost more than it saves.
  // About 80 µs of decoding: zstd decodes cubins at ~0.8 GB/s, LZ4 at ~3.6 GB/s, and an
  // uncompressed image is only copied.
  const auto worth_a_thread = [&](std::size_t image) {
    const ImageInfo& info = state_->bundle.images()[image];
    switch (info.codec) {
      case Codec::Zstd: return info.raw_size >= (std::uint64_t{64} << 10);
      case Codec::Lz4: return info.raw_size >= (std::uint64_t{256} << 10);
      case Codec::None: return false;
    }
    return false;
  };
  std::size_t parallel_work = 0;
  std::vector<bool> cubin_image_seen(state_->bundle.images().size());
  for (std::size_t index = 0; index < count; ++index) {
    const State::Device::Selected& selected = state_->select(index, *ordinal);
    if (!selected) continue;  // reported by the kernel's own attempt below
    const auto& [image, selection] = *selected;
    const bool is_cubin = selection.path == Path::AotExact || selection.path == Path::AotCompatible;
    if (!is_cubin) {
      if (state_->cached_whole_image(*ordinal, image) == nullptr) ++parallel_work;
    } else if (!cubin_image_seen[image]) {
      cubin_image_seen[image] = true;
      if (worth_a_thread(image)) ++parallel_work;
    }
  }
  // Each kernel's own SingleFlight keeps a kernel that another thread is already preparing from
  // being compiled twice.
  std::vector<std::optional<Error>> errors(count);
  for_each_on_threads(count, parallel_work, state_->runtime->options, [&](std::size_t index) {
    Result<Kernel> kernel = state_->kernel(index, *ordinal);
    if (!kernel) errors[index] = kernel.error();
  });

  std::size_t failures = 0;
  std::optional<Error> first;
  for (std::optional<Error>& error : errors) {
    if (!error) continue;
    if (failures++ == 0) first = std::move(error);
  }
  if (!first) {
    state_->compile_whole_images_in_background(*ordinal);
    return {};
  }
  if (failures > 1) first->message += " (and " + std::to_string(failures - 1) + " more kernels failed)";
  return std::move(*first);
}

Result<std::vector<WholeImageRecord>> Module::compile_whole_images(int device) const {
  Result<int> ordinal = state_->resolve_device(device);
  if (!ordinal) return ordinal.error();
  if (!state_->runtime->cache) return std::vector<WholeImageRecord>{};  // nowhere to keep them
  const std::vector<std::pair<std::size_t, Arch>> images = state_->jit_ptx_images(*ordinal);
  std::vector<std::optional<Result<WholeImageRecord>>> done(images.size());
  for_each_on_threads(images.size(), images.size(), state_->runtime->options, [&](std::size_t i) {
    done[i] = state_->cache_whole_image(*ordinal, images[i].first, images[i].second);
  });
  std::vector<WholeImageRecord> records;
  for (std::optional<Result<WholeImageRecord>>& image : done) {
    if (!*image) return std::move(*image).error();
    records.push_back(std::move(**image));
  }
  return records;
}

void Module::wait_for_background_compiles() const { background::wait(state_.get()); }

std::vector<std::string> Module::kernel_names() const {
  std::vector<std::string> readable;
  for (const KernelNames::Spelling& name : state_->names->spellings().by_index) readable.push_back(name.readable);
  std::sort(readable.begin(), readable.end());
  return readable;
}

std::vector<KernelRecord> Module::records() const {
  std::vector<KernelRecord> records;
  for (State::Device& device : state_->devices) {
    std::vector<std::pair<std::size_t, KernelRecord>> ready;
    {
      std::lock_guard lock(device.mutex);
      for (const auto& [index, slot] : device.kernels) {
        const Result<Kernel>* kernel = slot->peek();
        if (kernel != nullptr && kernel->ok()) ready.emplace_back(index, kernel->value().record());
      }
    }
    std::sort(ready.begin(), ready.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [index, record] : ready) records.push_back(std::move(record));
  }
  return records;
}

const Bundle& Module::bundle() const { return state_->bundle; }

// ---- Runtime --------------------------------------------------------------------------------

Result<Runtime> Runtime::create(const RuntimeOptions& options) {
  Result<std::shared_ptr<Driver>> driver = load_cuda_driver();
  if (!driver) return driver.error();
  return create(*driver, make_jit_compiler(*driver), options);
}

Result<Runtime> Runtime::create(std::shared_ptr<Driver> driver, std::shared_ptr<JitCompiler> jit,
                                const RuntimeOptions& options) {
  if (!driver || !jit) return make_error(Component::Runtime, "a runtime needs a driver and a JIT compiler");
  if (driver->gpu_count() == 0) return make_error(Component::Driver, "the CUDA driver found no GPU");
  auto state = std::make_shared<State>(options, std::move(driver), std::move(jit));
  if (state->logger.enabled(LogLevel::Debug)) {
    std::string gpus;
    for (const GpuInfo& gpu : state->driver->gpus()) {
      gpus += "; GPU " + std::to_string(gpu.ordinal) + " " + gpu.name + " (" + Arch{gpu.cc}.sm_name() + ")";
    }
    state->logger.write(LogLevel::Debug, "CUDA driver " + std::to_string(state->driver->version()) + gpus +
                                             "; cache " +
                                             (state->cache ? state->cache->directory().string() : std::string("off")));
  }
  return Runtime(std::move(state));
}

// The runtime checks the header and tables at load and each image when it is used: a start reads
// the images it needs, not every architecture's (OpenCheck).
Result<Module> Runtime::load(ByteView bundle, std::string name) const {
  Result<Bundle> opened = Bundle::open(bundle, std::move(name), OpenCheck::TablesThenImagesOnUse);
  if (!opened) return opened.error();
  return Module(std::make_shared<Module::State>(state_, std::move(*opened)));
}

Result<Module> Runtime::load_file(const std::filesystem::path& path) const {
  Result<Bundle> opened = Bundle::open_file(path, OpenCheck::TablesThenImagesOnUse);
  if (!opened) return opened.error();
  return Module(std::make_shared<Module::State>(state_, std::move(*opened)));
}

const std::vector<GpuInfo>& Runtime::gpus() const { return state_->driver->gpus(); }
int Runtime::driver_version() const { return state_->driver->version(); }
const RuntimeOptions& Runtime::options() const { return state_->options; }
const std::shared_ptr<Driver>& Runtime::driver() const { return state_->driver; }

}  // namespace kiln
