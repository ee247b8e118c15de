// The runtime (SPEC part 5): per device and per kernel, select an image, then load it (AOT) or
// compile it (JIT: PTX split per kernel, or a whole source image) through the persistent cache,
// once however many threads ask; record and log the path taken; launch with argument checks.
#include "kiln/runtime.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

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

struct KernelName {
  std::string mangled;
  std::string demangled;  // "void add<float>(float const*, int)"; the mangled name for extern "C"
  std::string readable;   // "add<float>", or the demangled name where two kernels share that
};

// Every kernel the bundle lists, in first-seen order, with the three spellings lookups accept.
std::vector<KernelName> kernel_names_of(const Bundle& bundle) {
  std::vector<KernelName> names;
  std::unordered_map<std::string, std::size_t> seen;
  for (const ImageInfo& image : bundle.images()) {
    for (const std::string& mangled : image.kernels) {
      if (!seen.emplace(mangled, names.size()).second) continue;
      KernelName name;
      name.mangled = mangled;
      name.demangled = demangle(mangled);
      name.readable = short_name(name.demangled);
      names.push_back(std::move(name));
    }
  }
  std::unordered_map<std::string, int> uses;
  for (const KernelName& name : names) ++uses[name.readable];
  for (KernelName& name : names) {
    if (uses[name.readable] > 1) name.readable = name.demangled;  // overloads: the signature tells them apart
  }
  return names;
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
  Bytes bytes;                             // cubin or source; empty for PTX, which `ptx` holds
  std::shared_ptr<const PtxModule> ptx;
};

// A whole image loaded on one device: a cubin, a compiled source image, or PTX that cannot be split.
struct LoadedImage {
  CUmodule module = nullptr;
  Path path = Path::AotExact;
};

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
  std::optional<std::vector<std::size_t>> parameter_sizes;  // nullopt: the driver cannot tell
  mutable std::atomic<bool> arguments_checked{false};
  KernelRecord record;

  Result<void> check_arguments(const std::size_t* sizes, std::size_t count) const;
};

struct Module::State {
  // What one device has of this module. The mutex guards the maps only; compiles and loads run
  // under each entry's own SingleFlight, so different kernels never wait on each other.
  struct Device {
    std::mutex mutex;
    std::unordered_map<std::size_t, std::unique_ptr<SingleFlight<LoadedImage>>> images;  // by image index
    std::unordered_map<std::size_t, std::unique_ptr<SingleFlight<Kernel>>> kernels;      // by kernel index
  };

  State(std::shared_ptr<Runtime::State> runtime_in, Bundle bundle_in)
      : runtime(std::move(runtime_in)),
        bundle(std::move(bundle_in)),
        names(kernel_names_of(bundle)),
        image_data(std::make_unique<SingleFlight<ImageData>[]>(bundle.images().size())),
        devices(runtime->driver->gpus().size()),
        modules(std::make_shared<LoadedModules>(runtime->driver)) {
    for (std::size_t index = 0; index < names.size(); ++index) {
      by_mangled.emplace(names[index].mangled, index);
      by_demangled.emplace(names[index].demangled, index);
      by_short[short_name(names[index].demangled)].push_back(index);
    }
  }

  [[nodiscard]] Result<int> resolve_device(int device) const;
  [[nodiscard]] Result<std::size_t> resolve_kernel(std::string_view name) const;
  [[nodiscard]] Result<Kernel> kernel(std::size_t index, int device);

 private:
  Result<Kernel> make_kernel(std::size_t index, int device);
  const Result<ImageData>& data(std::size_t image);
  const Result<LoadedImage>& whole_image(int device, std::size_t image, Path aot_path);
  // The persistent cache's key for `kernel` ("" = the whole image) of `image` compiled for
  // `target`: built from the bundle table's content hash, so a warm start needs neither to
  // decompress nor to split the PTX before it finds the cubin.
  Result<Hash128> cache_key(std::size_t image, const std::string& kernel, Arch target) const;
  Result<std::pair<Bytes, Path>> jit(std::size_t image, ByteView input, const std::string& kernel, Arch target,
                                     int device, const std::string& label);
  [[nodiscard]] std::string where(int device) const;

 public:
  std::shared_ptr<Runtime::State> runtime;
  Bundle bundle;
  std::vector<KernelName> names;
  std::unordered_map<std::string, std::size_t> by_mangled;
  std::unordered_map<std::string, std::size_t> by_demangled;
  std::unordered_map<std::string, std::vector<std::size_t>> by_short;
  std::unique_ptr<SingleFlight<ImageData>[]> image_data;  // by image index
  std::vector<Device> devices;                             // by ordinal
  std::shared_ptr<LoadedModules> modules;
};

// ---- Kernel ---------------------------------------------------------------------------------

Result<void> Kernel::State::check_arguments(const std::size_t* sizes, std::size_t count) const {
  if (!parameter_sizes) return {};
  const std::vector<std::size_t>& expected = *parameter_sizes;
  if (count != expected.size()) {
    return make_error(Component::Runtime,
                      "kernel " + record.kernel + " takes " + std::to_string(expected.size()) + " arguments, " +
                          std::to_string(count) + " were given");
  }
  if (sizes == nullptr) return {};
  for (std::size_t index = 0; index < count; ++index) {
    if (sizes[index] == expected[index]) continue;
    return make_error(Component::Runtime, "kernel " + record.kernel + ": argument " + std::to_string(index) + " is " +
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
  return state.driver->launch(state.context, state.function, grid, block, shared_bytes, stream, args);
}

const KernelRecord& Kernel::record() const { return state_->record; }
void* Kernel::native_handle() const noexcept { return state_->function; }

// ---- Module ---------------------------------------------------------------------------------

std::string Module::State::where(int device) const {
  const GpuInfo& gpu = runtime->driver->gpus()[static_cast<std::size_t>(device)];
  return "GPU " + std::to_string(device) + " (" + gpu.name + ", " + Arch{gpu.cc}.sm_name() + ")";
}

Result<int> Module::State::resolve_device(int device) const {
  const int count = static_cast<int>(runtime->driver->gpus().size());
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
  const std::string key(name);
  if (auto found = by_mangled.find(key); found != by_mangled.end()) return found->second;
  if (auto found = by_demangled.find(key); found != by_demangled.end()) return found->second;
  if (auto found = by_short.find(key); found != by_short.end()) {
    if (found->second.size() == 1) return found->second.front();
    std::string candidates;
    for (std::size_t index : found->second) candidates += "\n  " + names[index].demangled;
    Error error = make_error(Component::Runtime, "kernel name " + key + " is ambiguous", bundle.name(),
                             "name one by its full signature");
    error.log = "candidates:" + candidates;
    return error;
  }
  std::string known;
  for (const KernelName& kernel : names) known += (known.empty() ? "" : ", ") + kernel.readable;
  return make_error(Component::Runtime, "the bundle has no kernel named " + key, bundle.name(),
                    "it has: " + (known.empty() ? std::string("no kernels") : known));
}

Result<Kernel> Module::State::kernel(std::size_t index, int device) {
  Device& state = devices[static_cast<std::size_t>(device)];
  SingleFlight<Kernel>* slot = nullptr;
  {
    std::lock_guard lock(state.mutex);
    auto& entry = state.kernels[index];
    if (!entry) entry = std::make_unique<SingleFlight<Kernel>>();
    slot = entry.get();
  }
  return slot->get([&] { return make_kernel(index, device); });
}

const Result<ImageData>& Module::State::data(std::size_t image) {
  return image_data[image].get([&]() -> Result<ImageData> {
    Result<Bytes> bytes = bundle.extract(image);
    if (!bytes) return bytes.error();
    ImageData data;
    if (bundle.images()[image].target.kind != ImageKind::Ptx) {
      data.bytes = std::move(*bytes);
      return data;
    }
    Result<PtxModule> ptx = PtxModule::parse(std::string(as_text(*bytes)));
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

const Result<LoadedImage>& Module::State::whole_image(int device, std::size_t image, Path aot_path) {
  Device& state = devices[static_cast<std::size_t>(device)];
  SingleFlight<LoadedImage>* slot = nullptr;
  {
    std::lock_guard lock(state.mutex);
    auto& entry = state.images[image];
    if (!entry) entry = std::make_unique<SingleFlight<LoadedImage>>();
    slot = entry.get();
  }
  return slot->get([&]() -> Result<LoadedImage> {
    const Result<ImageData>& loaded = data(image);
    if (!loaded) return loaded.error();
    const ImageTarget& target = bundle.images()[image].target;
    LoadedImage result;
    result.path = aot_path;
    Bytes compiled;
    ByteView cubin = loaded->bytes;
    if (target.kind != ImageKind::Cubin) {
      // Source compiles for the device's own architecture; PTX keeps its a/f variant.
      Arch arch{runtime->driver->gpus()[static_cast<std::size_t>(device)].cc,
                target.kind == ImageKind::Ptx ? target.arch.variant : ArchVariant::Plain};
      ByteView input = target.kind == ImageKind::Ptx ? as_bytes(loaded->ptx->text()) : ByteView(loaded->bytes);
      auto jitted = jit(image, input, "", arch, device, bundle.name() + " " + target.name());
      if (!jitted) return jitted.error();
      compiled = std::move(jitted->first);
      cubin = compiled;
      result.path = jitted->second;
    }
    Result<CUmodule> module = runtime->driver->load_module(device, cubin);
    if (!module) return module.error();
    modules->add(device, *module);
    result.module = *module;
    return result;
  });
}

Result<Kernel> Module::State::make_kernel(std::size_t index, int device) {
  const Clock::time_point start = Clock::now();
  const KernelName& name = names[index];
  const GpuInfo& gpu = runtime->driver->gpus()[static_cast<std::size_t>(device)];
  const std::string device_arch = Arch{gpu.cc}.sm_name();
  auto failed = [&](Error error) {
    const std::string here = where(device) + ", kernel " + name.readable;
    error.context = error.context.empty() ? here : here + ", " + error.context;
    return error;
  };

  // The images that hold this kernel (an image that lists no kernels may hold any).
  std::vector<std::size_t> candidates;
  std::vector<ImageTarget> targets;
  for (std::size_t image = 0; image < bundle.images().size(); ++image) {
    const std::vector<std::string>& kernels = bundle.images()[image].kernels;
    if (kernels.empty() || std::find(kernels.begin(), kernels.end(), name.mangled) != kernels.end()) {
      candidates.push_back(image);
      targets.push_back(bundle.images()[image].target);
    }
  }
  Result<Selection> selection = select_image(targets, gpu.cc, device_arch,
                                             SelectOptions{runtime->options.force_jit, runtime->options.disable_jit});
  if (!selection) return failed(std::move(selection).error());
  const std::size_t image = candidates[selection->image_index];
  const ImageTarget& target = selection->target;
  if (runtime->logger.enabled(LogLevel::Debug)) {
    runtime->logger.write(LogLevel::Debug, name.readable + " on GPU " + std::to_string(device) + ": " + selection->reason);
  }

  CUmodule module = nullptr;
  Path path = selection->path;
  const Arch ptx_arch{gpu.cc, target.arch.variant};
  // A warm start: this kernel's cubin is already in the persistent cache.
  std::optional<Bytes> cached;
  if (target.kind == ImageKind::Ptx && runtime->cache) {
    if (Result<Hash128> key = cache_key(image, name.mangled, ptx_arch)) cached = runtime->cache->get(*key);
  }
  const Result<ImageData>* loaded = nullptr;
  if (!cached) {
    loaded = &data(image);
    if (!*loaded) return failed((*loaded).error());
  }
  if (cached) {
    Result<CUmodule> kernel_module = runtime->driver->load_module(device, *cached);
    if (!kernel_module) return failed(std::move(kernel_module).error());
    modules->add(device, *kernel_module);
    module = *kernel_module;
    path = Path::CacheHit;
  } else if (target.kind == ImageKind::Ptx && (*loaded)->ptx->splittable()) {
    Result<std::string> piece = (*loaded)->ptx->kernel_ptx(name.mangled);
    if (!piece) return failed(std::move(piece).error());
    auto jitted = jit(image, as_bytes(*piece), name.mangled, ptx_arch, device,
                      bundle.name() + " " + target.name() + " " + name.readable);
    if (!jitted) return failed(std::move(jitted).error());
    Result<CUmodule> kernel_module = runtime->driver->load_module(device, jitted->first);
    if (!kernel_module) return failed(std::move(kernel_module).error());
    modules->add(device, *kernel_module);
    module = *kernel_module;
    path = jitted->second;
  } else {
    const Result<LoadedImage>& whole = whole_image(device, image, selection->path);
    if (!whole) return failed(whole.error());
    module = whole->module;
    path = whole->path;
  }

  auto state = std::make_shared<Kernel::State>();
  Result<CUfunction> function = runtime->driver->function(module, name.mangled);
  if (!function) return failed(std::move(function).error());
  Result<std::optional<std::vector<std::size_t>>> sizes = runtime->driver->parameter_sizes(*function);
  if (!sizes) return failed(std::move(sizes).error());
  Result<CUcontext> context = runtime->driver->context(device);
  if (!context) return failed(std::move(context).error());
  state->modules = modules;
  state->driver = runtime->driver.get();
  state->context = *context;
  state->function = *function;
  state->parameter_sizes = std::move(*sizes);
  state->record = KernelRecord{name.readable, name.mangled, device, device_arch, target.name(), path,
                               milliseconds_since(start)};
  if (runtime->logger.enabled(LogLevel::Info)) {
    char milliseconds[32];
    std::snprintf(milliseconds, sizeof milliseconds, "%.1f ms", state->record.milliseconds);
    runtime->logger.write(LogLevel::Info, name.readable + " on GPU " + std::to_string(device) + " (" + device_arch +
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
  const std::size_t count = state_->names.size();
  unsigned threads = state_->runtime->options.jit_threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<std::size_t>(threads, count));

  // Workers take the next kernel until none is left; each kernel's own SingleFlight keeps a
  // kernel that another thread is already preparing from being compiled twice.
  std::atomic<std::size_t> next{0};
  std::vector<std::optional<Error>> errors(count);
  auto work = [&] {
    for (std::size_t index = next++; index < count; index = next++) {
      Result<Kernel> kernel = state_->kernel(index, *ordinal);
      if (!kernel) errors[index] = kernel.error();
    }
  };
  std::vector<std::thread> workers;
  for (unsigned i = 1; i < threads; ++i) workers.emplace_back(work);
  work();
  for (std::thread& worker : workers) worker.join();

  std::size_t failures = 0;
  std::optional<Error> first;
  for (std::optional<Error>& error : errors) {
    if (!error) continue;
    if (failures++ == 0) first = std::move(error);
  }
  if (!first) return {};
  if (failures > 1) first->message += " (and " + std::to_string(failures - 1) + " more kernels failed)";
  return std::move(*first);
}

std::vector<std::string> Module::kernel_names() const {
  std::vector<std::string> readable;
  for (const KernelName& name : state_->names) readable.push_back(name.readable);
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
  if (driver->gpus().empty()) return make_error(Component::Driver, "the CUDA driver found no GPU");
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

Result<Module> Runtime::load(ByteView bundle, std::string name) const {
  Result<Bundle> opened = Bundle::open(bundle, std::move(name));
  if (!opened) return opened.error();
  return Module(std::make_shared<Module::State>(state_, std::move(*opened)));
}

Result<Module> Runtime::load_file(const std::filesystem::path& path) const {
  Result<Bundle> opened = Bundle::open_file(path);
  if (!opened) return opened.error();
  return Module(std::make_shared<Module::State>(state_, std::move(*opened)));
}

const std::vector<GpuInfo>& Runtime::gpus() const { return state_->driver->gpus(); }
int Runtime::driver_version() const { return state_->driver->version(); }
const RuntimeOptions& Runtime::options() const { return state_->options; }
const std::shared_ptr<Driver>& Runtime::driver() const { return state_->driver; }

}  // namespace kiln
