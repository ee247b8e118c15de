// The runtime over a fake driver and a fake JIT compiler: selection per device, force/disable
// JIT, laziness, single flight, parallel prepare_all, the persistent cache, records, logging,
// kernel lookup and launch argument checks. No GPU needed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "elf.hpp"
#include "kiln/bundle_format.hpp"
#include "kiln/compiler.hpp"
#include "kiln/doctor.hpp"
#include "kiln/runtime.hpp"

// The child of a fork made while a background compile ran holds that thread's memory but not the
// thread. LeakSanitizer (the tests' ASan build) would report that memory at the child's exit, so
// that child turns it off (LeakSanitizer asks this function; other builds never call it).
static std::atomic<bool> forked_child_exiting{false};
extern "C" int __lsan_is_turned_off() { return forked_child_exiting.load() ? 1 : 0; }

namespace {

namespace fs = std::filesystem;
using namespace kiln;

// A fake cubin is text: "FAKECUBIN <arch> <kernel> <kernel> ...".
Bytes fake_cubin(const std::string& arch, const std::vector<std::string>& kernels) {
  std::string text = "FAKECUBIN " + arch;
  for (const std::string& kernel : kernels) text += " " + kernel;
  return Bytes(text.begin(), text.end());
}

// The .entry names in a PTX text (what the fake JIT "compiles").
std::vector<std::string> entries_of(std::string_view ptx) {
  std::vector<std::string> entries;
  for (std::size_t at = ptx.find(".entry "); at != std::string_view::npos; at = ptx.find(".entry ", at + 1)) {
    const std::size_t begin = at + 7;
    const std::size_t end = ptx.find('(', begin);
    entries.emplace_back(ptx.substr(begin, end - begin));
  }
  return entries;
}

struct FakeModule {
  int device = 0;
  std::string arch;
  std::vector<std::string> kernels;
};
struct FakeFunction {
  std::string name;
  int device = 0;
};

class FakeDriver final : public Driver {
 public:
  explicit FakeDriver(std::vector<ComputeCapability> ccs) {
    for (std::size_t i = 0; i < ccs.size(); ++i) {
      gpus_.push_back(GpuInfo{static_cast<int>(i), "Fake GPU " + std::to_string(i), ccs[i]});
    }
  }

  int version() const noexcept override { return 13000; }
  std::string build_identity() const override { return build; }
  const std::vector<GpuInfo>& gpus() const noexcept override { return gpus_; }
  Result<std::optional<int>> current_device() const override { return current; }

  Result<CUcontext> context(int device) override { return fake_context(device); }
  Result<void> make_current(int device) override {
    current = device;
    return {};
  }

  Result<CUmodule> load_module(int device, ByteView image) override {
    auto module = std::make_unique<FakeModule>();
    module->device = device;
    if (Result<elf::CubinInfo> real = elf::read_cubin(image)) {  // a real cubin, made by NVRTC
      module->arch = "sm_" + std::to_string(real->sm);
      module->kernels = real->kernels;
    } else {
      std::istringstream words{std::string(as_text(image))};
      std::string magic;
      words >> magic >> module->arch;
      if (magic != "FAKECUBIN") return make_error(Component::Driver, "not a fake cubin");
      for (std::string kernel; words >> kernel;) module->kernels.push_back(kernel);
    }
    std::lock_guard lock(mutex_);
    loads.push_back({device, module->arch});
    modules_.push_back(std::move(module));
    return reinterpret_cast<CUmodule>(modules_.back().get());
  }
  void unload_module(int, CUmodule) noexcept override { ++unloads; }

  Result<CUfunction> function(CUmodule module, const std::string& name) override {
    const auto* fake = reinterpret_cast<const FakeModule*>(module);
    if (std::find(fake->kernels.begin(), fake->kernels.end(), name) == fake->kernels.end()) {
      return make_error(Component::Driver, "cuModuleGetFunction failed: CUDA_ERROR_NOT_FOUND", "kernel " + name);
    }
    std::lock_guard lock(mutex_);
    functions_.push_back(std::make_unique<FakeFunction>(FakeFunction{name, fake->device}));
    return reinterpret_cast<CUfunction>(functions_.back().get());
  }

  Result<std::optional<std::vector<std::size_t>>> parameter_sizes(CUfunction function) override {
    ++parameter_queries;
    const auto* fake = reinterpret_cast<const FakeFunction*>(function);
    auto found = parameters.find(fake->name);
    if (found == parameters.end()) return std::optional<std::vector<std::size_t>>{};
    return std::optional<std::vector<std::size_t>>(found->second);
  }

  Result<Bytes> link_ptx(int, std::string_view, Arch, std::string_view, unsigned) override {
    return make_error(Component::Driver, "the fake driver links nothing: the fake JIT compiles");
  }

  Result<void> launch(CUcontext context, CUfunction function, Dim3, Dim3, unsigned, CUstream, void**) override {
    const auto* fake = reinterpret_cast<const FakeFunction*>(function);
    if (context != fake_context(fake->device)) return make_error(Component::Driver, "launched in the wrong context");
    if (fail_launches) return make_error(Component::Driver, "cuLaunchKernel failed: CUDA_ERROR_INVALID_VALUE");
    ++launches;
    return {};
  }

  static CUcontext fake_context(int device) { return reinterpret_cast<CUcontext>(std::uintptr_t{0x1000} + device); }

  std::optional<int> current;
  std::string build = "fake driver build 1";
  bool fail_launches = false;
  std::map<std::string, std::vector<std::size_t>> parameters;  // by mangled name; absent: the driver cannot tell
  std::atomic<int> parameter_queries{0};
  std::vector<std::pair<int, std::string>> loads;              // (device, arch) of each module loaded
  std::atomic<int> unloads{0};
  std::atomic<int> launches{0};

 private:
  std::vector<GpuInfo> gpus_;
  std::mutex mutex_;
  std::deque<std::unique_ptr<FakeModule>> modules_;
  std::deque<std::unique_ptr<FakeFunction>> functions_;
};

// Compiles PTX into a fake cubin of its entries, and "source" ("SOURCE k1 k2") into one of the
// listed kernels; counts compiles and how many ran at once.
class FakeJit final : public JitCompiler {
 public:
  Result<std::string> identity(ImageKind kind) override { return std::string("fake-jit ") + kind_name(kind); }

  Result<Bytes> compile(const JitRequest& request) override {
    const int running = ++active_;
    for (int seen = max_active.load(); running > seen && !max_active.compare_exchange_weak(seen, running);) {
    }
    std::this_thread::sleep_for(request.kernel.empty() ? whole_delay : delay);
    --active_;
    if (fail_whole && request.kernel.empty()) return make_error(Component::Driver, "the whole image does not compile");
    std::lock_guard lock(mutex_);
    requests.push_back({request.kind, request.kernel, request.target.sm_name(), std::string(as_text(request.input))});
    if (unloadable_outputs > 0) {
      --unloadable_outputs;
      const std::string junk = "NOT A CUBIN";
      return Bytes(junk.begin(), junk.end());
    }
    if (request.kind == ImageKind::Source) {
      std::istringstream words{std::string(as_text(request.input))};
      std::string magic;
      std::vector<std::string> kernels;
      words >> magic;
      for (std::string kernel; words >> kernel;) kernels.push_back(kernel);
      return fake_cubin(request.target.sm_name(), kernels);
    }
    return fake_cubin(request.target.sm_name(), entries_of(as_text(request.input)));
  }

  struct Request {
    ImageKind kind;
    std::string kernel;
    std::string target;
    std::string input;
  };
  std::size_t compiles() {
    std::lock_guard lock(mutex_);
    return requests.size();
  }
  std::size_t whole_compiles() {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(
        std::count_if(requests.begin(), requests.end(), [](const Request& request) { return request.kernel.empty(); }));
  }

  std::chrono::milliseconds delay{0};
  std::chrono::milliseconds whole_delay{0};  // a whole image's compile (JitRequest::kernel empty)
  bool fail_whole = false;
  int unloadable_outputs = 0;  // this many compiles return bytes the driver refuses
  std::atomic<int> max_active{0};
  std::vector<Request> requests;

 private:
  std::atomic<int> active_{0};
  std::mutex mutex_;
};

const std::string kAdd = "_Z3addPfS_i";                      // add(float*, float*, int)
const std::string kScaleFloat = "_Z5scaleIfEvPT_S0_i";       // void scale<float>(float*, float, int)
const std::string kScaleDouble = "_Z5scaleIdEvPT_S0_i";      // void scale<double>(double*, double, int)
const std::string kSaxpy = "saxpy";                          // extern "C"
const std::vector<std::string> kKernels = {kAdd, kScaleFloat, kScaleDouble, kSaxpy};

std::string ptx_of(const std::vector<std::string>& kernels, const std::string& preamble = {}) {
  std::string text = ".version 9.0\n.target sm_80\n.address_size 64\n" + preamble;
  for (const std::string& kernel : kernels) text += ".visible .entry " + kernel + "(.param .u64 p)\n{\n  ret;\n}\n";
  return text;
}

Image cubin_image(const std::string& arch, const std::vector<std::string>& kernels = kKernels) {
  return Image{*parse_target(arch), kernels, fake_cubin(arch, kernels)};
}
Image ptx_image(const std::string& arch, const std::vector<std::string>& kernels = kKernels,
                const std::string& preamble = {}) {
  const std::string text = ptx_of(kernels, preamble);
  return Image{*parse_target(arch), kernels, Bytes(text.begin(), text.end())};
}
Image source_image(const std::vector<std::string>& kernels = kKernels) {
  std::string text = "SOURCE";
  for (const std::string& kernel : kernels) text += " " + kernel;
  return Image{ImageTarget{ImageKind::Source, {}}, kernels, Bytes(text.begin(), text.end())};
}

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_dir_ = fs::temp_directory_path() /
                 ("kiln-runtime-test-" + std::to_string(::getpid()) + "-" +
                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(cache_dir_);
    options_.cache_dir = cache_dir_;
    options_.cache_disabled = false;
    options_.force_jit = false;
    options_.disable_jit = false;
    options_.background_compile = false;  // on in the tests of it: elsewhere it would add compiles at random times
    options_.log_level = LogLevel::Info;
    options_.log_sink = [this](LogLevel level, std::string_view message) {
      std::lock_guard lock(log_mutex_);
      log_.emplace_back(level, std::string(message));
    };
  }
  void TearDown() override { fs::remove_all(cache_dir_); }

  Runtime make_runtime(std::vector<ComputeCapability> gpus, std::shared_ptr<FakeJit> jit = nullptr) {
    driver_ = std::make_shared<FakeDriver>(std::move(gpus));
    jit_ = jit ? std::move(jit) : std::make_shared<FakeJit>();
    Result<Runtime> runtime = Runtime::create(driver_, jit_, options_);
    EXPECT_TRUE(runtime.ok()) << runtime.error().describe();
    return std::move(runtime).value();
  }

  Module load(const Runtime& runtime, const std::vector<Image>& images) {
    BundleMetadata metadata;
    WriteOptions write;
    write.codec = Codec::None;
    Result<Bytes> bytes = write_bundle(images, metadata, write);
    EXPECT_TRUE(bytes.ok()) << bytes.error().describe();
    bundles_.push_back(std::move(*bytes));  // a loaded bundle's bytes must outlive its Module
    Result<Module> module = runtime.load(bundles_.back(), "test.kiln");
    EXPECT_TRUE(module.ok()) << module.error().describe();
    return std::move(module).value();
  }

  // A JIT that takes `whole_delay` over each whole image, for a runtime with background compiles on.
  std::shared_ptr<FakeJit> background_jit_taking(std::chrono::milliseconds whole_delay) {
    options_.background_compile = true;
    auto jit = std::make_shared<FakeJit>();
    jit->whole_delay = whole_delay;
    return jit;
  }

  static Kernel kernel_or_fail(const Module& module, std::string_view name, int device = -1) {
    Result<Kernel> kernel = module.kernel(name, device);
    EXPECT_TRUE(kernel.ok()) << kernel.error().describe();
    return std::move(kernel).value();
  }

  std::vector<std::string> log_lines(LogLevel level) {
    std::lock_guard lock(log_mutex_);
    std::vector<std::string> lines;
    for (const auto& [line_level, message] : log_) {
      if (line_level == level) lines.push_back(message);
    }
    return lines;
  }

  fs::path cache_dir_;
  RuntimeOptions options_;
  std::shared_ptr<FakeDriver> driver_;
  std::shared_ptr<FakeJit> jit_;
  std::deque<Bytes> bundles_;
  std::mutex log_mutex_;
  std::vector<std::pair<LogLevel, std::string>> log_;
};

const ComputeCapability kHopper{9, 0};
const ComputeCapability kAmpere86{8, 6};
const ComputeCapability kTuring{7, 5};
const ComputeCapability kBlackwell120{12, 0};

TEST_F(RuntimeTest, EachDeviceGetsItsOwnSelectionAndModule) {
  Runtime runtime = make_runtime({kHopper, kAmpere86, kBlackwell120, kTuring});
  Module module = load(runtime, {cubin_image("sm_90"), cubin_image("sm_80"), ptx_image("compute_80")});

  const KernelRecord on_hopper = kernel_or_fail(module, "add", 0).record();
  EXPECT_EQ(on_hopper.path, Path::AotExact);
  EXPECT_EQ(on_hopper.image, "sm_90");
  EXPECT_EQ(on_hopper.device_arch, "sm_90");

  const KernelRecord on_ampere = kernel_or_fail(module, "add", 1).record();
  EXPECT_EQ(on_ampere.path, Path::AotCompatible);
  EXPECT_EQ(on_ampere.image, "sm_80");
  EXPECT_EQ(on_ampere.device, 1);

  const KernelRecord on_blackwell = kernel_or_fail(module, "add", 2).record();
  EXPECT_EQ(on_blackwell.path, Path::JitPtx);
  EXPECT_EQ(on_blackwell.image, "compute_80");
  ASSERT_EQ(jit_->compiles(), 1u);
  EXPECT_EQ(jit_->requests[0].target, "sm_120");

  // Nothing runs on a Turing GPU: compute_80 PTX needs 8.0 or newer.
  Result<Kernel> on_turing = module.kernel("add", 3);
  ASSERT_FALSE(on_turing.ok());
  EXPECT_EQ(on_turing.error().kind, ErrorKind::NoCompatibleImage);
  EXPECT_NE(on_turing.error().message.find("sm_75"), std::string::npos) << on_turing.error().describe();
  EXPECT_NE(on_turing.error().context.find("GPU 3"), std::string::npos) << on_turing.error().describe();

  // A second kernel on each AOT device reuses the module already loaded there.
  kernel_or_fail(module, "saxpy", 0);
  kernel_or_fail(module, "saxpy", 1);
  const std::vector<std::pair<int, std::string>> expected_loads = {{0, "sm_90"}, {1, "sm_80"}, {2, "sm_120"}};
  EXPECT_EQ(driver_->loads, expected_loads);
}

// The runtime checks the bundle's tables at load and an image when it uses it: damage in an image
// that no device needs costs nothing, damage in the one a device needs is an error naming it.
TEST_F(RuntimeTest, ADamagedImageFailsOnlyTheDeviceThatNeedsIt) {
  Runtime runtime = make_runtime({kHopper, kAmpere86});
  Result<Bytes> written = write_bundle({cubin_image("sm_90"), cubin_image("sm_80")}, {}, WriteOptions{.codec = Codec::None});
  ASSERT_TRUE(written.ok()) << written.error().describe();
  Bytes& bytes = bundles_.emplace_back(std::move(*written));
  Result<Bundle> whole = Bundle::open(bytes);
  ASSERT_TRUE(whole.ok());
  const std::size_t sm80 = whole->images()[0].target.name() == "sm_80" ? 0 : 1;
  const std::uint64_t sm80_offset = format::decode<format::Entry>(
      bytes.data() + format::decode<format::Header>(bytes.data()).entries_offset + sm80 * format::kEntrySize).data_offset;
  bytes[sm80_offset + 1] ^= 0x20;  // no checksum resealed

  ASSERT_FALSE(Bundle::open(bytes).ok()) << "a whole-file check sees the damage";
  Result<Module> module = runtime.load(bytes, "damaged.kiln");
  ASSERT_TRUE(module.ok()) << module.error().describe();
  EXPECT_EQ(kernel_or_fail(*module, "add", 0).record().image, "sm_90");
  Result<Kernel> on_ampere = module->kernel("add", 1);
  ASSERT_FALSE(on_ampere.ok());
  EXPECT_NE(on_ampere.error().message.find("(sm_80): stored-bytes checksum"), std::string::npos)
      << on_ampere.error().describe();
  EXPECT_NE(on_ampere.error().describe().find("damaged.kiln"), std::string::npos) << on_ampere.error().describe();
}

// The writer stores identical bytes once whatever their kinds, so a PTX image may be the
// duplicate of a cubin or source image (or the reverse); each is still read as its own kind.
// Found by fuzz_runtime, which crashed on a PTX image that was a cubin's duplicate.
TEST_F(RuntimeTest, ADuplicateOfAnotherKindIsReadAsItsOwnKind) {
  const Image ptx = ptx_image("compute_80");
  const Image cubin{*parse_target("sm_86"), kKernels, ptx.bytes};
  options_.cache_disabled = true;  // each order compiles
  for (const std::vector<Image>& images : {std::vector<Image>{cubin, ptx}, std::vector<Image>{ptx, cubin}}) {
    Runtime runtime = make_runtime({kHopper, kAmpere86});
    Module module = load(runtime, images);
    const std::size_t duplicate = 1;
    ASSERT_TRUE(module.bundle().images()[duplicate].duplicate_of.has_value());

    const KernelRecord jitted = kernel_or_fail(module, "add", 0).record();
    EXPECT_EQ(jitted.path, Path::JitPtx);
    EXPECT_EQ(jitted.image, "compute_80");
    // The cubin's bytes (PTX text, not a cubin) reach the driver, which refuses them.
    Result<Kernel> aot = module.kernel("add", 1);
    ASSERT_FALSE(aot.ok());
    EXPECT_NE(aot.error().describe().find("not a fake cubin"), std::string::npos) << aot.error().describe();
  }
}

TEST_F(RuntimeTest, ForceJitIgnoresCubins) {
  options_.force_jit = true;
  Runtime runtime = make_runtime({kHopper});
  Module module = load(runtime, {cubin_image("sm_90"), ptx_image("compute_80")});
  const KernelRecord record = kernel_or_fail(module, "add").record();
  EXPECT_EQ(record.path, Path::JitPtx);
  EXPECT_EQ(record.image, "compute_80");
  EXPECT_EQ(jit_->compiles(), 1u);
}

TEST_F(RuntimeTest, DisableJitFailsRatherThanCompiles) {
  options_.disable_jit = true;
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, {cubin_image("sm_90"), ptx_image("compute_80")});
  Result<Kernel> kernel = module.kernel("add");
  ASSERT_FALSE(kernel.ok());
  EXPECT_EQ(kernel.error().kind, ErrorKind::NoCompatibleImage);
  EXPECT_NE(kernel.error().hint.find("KILN_DISABLE_JIT"), std::string::npos) << kernel.error().describe();
  EXPECT_EQ(jit_->compiles(), 0u);
}

TEST_F(RuntimeTest, NothingIsLoadedOrCompiledUntilAKernelIsAskedFor) {
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, {ptx_image("compute_80")});
  EXPECT_EQ(module.kernel_names(), (std::vector<std::string>{"add", "saxpy", "scale<double>", "scale<float>"}));
  EXPECT_EQ(jit_->compiles(), 0u);
  EXPECT_TRUE(driver_->loads.empty());
  EXPECT_TRUE(module.records().empty());

  kernel_or_fail(module, "scale<float>");
  ASSERT_EQ(jit_->compiles(), 1u);
  // Only that kernel was compiled, from a PTX piece that holds it alone.
  EXPECT_EQ(jit_->requests[0].kernel, kScaleFloat);
  EXPECT_EQ(entries_of(jit_->requests[0].input), std::vector<std::string>{kScaleFloat});
  EXPECT_EQ(module.records().size(), 1u);
}

TEST_F(RuntimeTest, SixteenThreadsAskingForOneKernelCompileItOnce) {
  auto jit = std::make_shared<FakeJit>();
  jit->delay = std::chrono::milliseconds(50);
  Runtime runtime = make_runtime({kBlackwell120}, jit);
  Module module = load(runtime, {ptx_image("compute_80")});

  std::vector<void*> handles(16);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < handles.size(); ++i) {
    threads.emplace_back([&, i] {
      Result<Kernel> kernel = module.kernel("add", 0);
      handles[i] = kernel.ok() ? kernel->native_handle() : nullptr;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(jit->compiles(), 1u);
  EXPECT_EQ(driver_->loads.size(), 1u);
  EXPECT_NE(handles[0], nullptr);
  EXPECT_TRUE(std::all_of(handles.begin(), handles.end(), [&](void* handle) { return handle == handles[0]; }));
}

TEST_F(RuntimeTest, PrepareAllCompilesKernelsInParallel) {
  std::vector<std::string> kernels;
  for (int i = 0; i < 8; ++i) kernels.push_back("kernel_" + std::to_string(i));
  auto jit = std::make_shared<FakeJit>();
  jit->delay = std::chrono::milliseconds(100);
  options_.jit_threads = 4;
  Runtime runtime = make_runtime({kBlackwell120}, jit);
  Module module = load(runtime, {ptx_image("compute_80", kernels)});

  const auto start = std::chrono::steady_clock::now();
  Result<void> prepared = module.prepare_all(0);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(prepared.ok()) << prepared.error().describe();
  EXPECT_EQ(jit->compiles(), 8u);
  EXPECT_GE(jit->max_active.load(), 2);
  EXPECT_LE(jit->max_active.load(), 4);
  EXPECT_LT(elapsed, std::chrono::milliseconds(8 * 100));  // serial would take 800 ms
  EXPECT_EQ(module.records().size(), 8u);

  // Already prepared: a second pass compiles nothing.
  ASSERT_TRUE(module.prepare_all(0).ok());
  EXPECT_EQ(jit->compiles(), 8u);
}

TEST_F(RuntimeTest, PrepareAllReportsFailuresWithACount) {
  Runtime runtime = make_runtime({kBlackwell120});
  // The PTX lists kernels it does not define: each of them fails.
  Image broken = ptx_image("compute_80", {kAdd});
  broken.kernels = {kAdd, "missing_one", "missing_two"};
  Module module = load(runtime, {broken});
  Result<void> prepared = module.prepare_all(0);
  ASSERT_FALSE(prepared.ok());
  EXPECT_NE(prepared.error().message.find("missing_one"), std::string::npos) << prepared.error().describe();
  EXPECT_NE(prepared.error().message.find("1 more kernels failed"), std::string::npos) << prepared.error().describe();
  EXPECT_EQ(module.records().size(), 1u);  // add is ready all the same
}

TEST_F(RuntimeTest, ASecondRuntimeFindsTheCubinInThePersistentCache) {
  {
    Runtime first = make_runtime({kBlackwell120});
    Module module = load(first, {ptx_image("compute_80")});
    EXPECT_EQ(kernel_or_fail(module, "add").record().path, Path::JitPtx);
    EXPECT_EQ(jit_->compiles(), 1u);
  }
  Runtime second = make_runtime({kBlackwell120});  // a new fake JIT, the same cache directory
  Module module = load(second, {ptx_image("compute_80")});
  const KernelRecord record = kernel_or_fail(module, "add").record();
  EXPECT_EQ(record.path, Path::CacheHit);
  EXPECT_EQ(record.image, "compute_80");
  EXPECT_EQ(jit_->compiles(), 0u);
  // Another kernel of the module is not in the cache yet.
  EXPECT_EQ(kernel_or_fail(module, "saxpy").record().path, Path::JitPtx);
}

TEST_F(RuntimeTest, TheCacheKeyTellsArchitecturesApart) {
  {
    Runtime first = make_runtime({kBlackwell120});
    Module module = load(first, {ptx_image("compute_80")});
    kernel_or_fail(module, "add");
  }
  Runtime second = make_runtime({ComputeCapability{10, 0}});
  Module module = load(second, {ptx_image("compute_80")});
  EXPECT_EQ(kernel_or_fail(module, "add").record().path, Path::JitPtx);
}

TEST_F(RuntimeTest, WithTheCacheDisabledEveryRuntimeCompiles) {
  options_.cache_disabled = true;
  for (int round = 0; round < 2; ++round) {
    Runtime runtime = make_runtime({kBlackwell120});
    Module module = load(runtime, {ptx_image("compute_80")});
    EXPECT_EQ(kernel_or_fail(module, "add").record().path, Path::JitPtx);
  }
  EXPECT_FALSE(fs::exists(cache_dir_));
}

TEST_F(RuntimeTest, TheCacheWarnsThroughTheRuntimeLogger) {
  fs::create_directories(cache_dir_);
  options_.cache_dir = cache_dir_ / "a-file-not-a-directory";
  std::ofstream(options_.cache_dir) << "in the way";
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, {ptx_image("compute_80")});
  EXPECT_EQ(kernel_or_fail(module, "add").record().path, Path::JitPtx);  // the JIT works without a cache
  const std::vector<std::string> warnings = log_lines(LogLevel::Warn);
  ASSERT_FALSE(warnings.empty());
  EXPECT_NE(warnings[0].find("a-file-not-a-directory"), std::string::npos) << warnings[0];
}

TEST_F(RuntimeTest, SourceImagesCompileWholeOncePerDevice) {
  Runtime runtime = make_runtime({kHopper, kBlackwell120});
  Module module = load(runtime, {source_image()});
  for (const char* name : {"add", "saxpy", "scale<double>"}) {
    const KernelRecord record = kernel_or_fail(module, name, 1).record();
    EXPECT_EQ(record.path, Path::JitSource);
    EXPECT_EQ(record.image, "source");
  }
  ASSERT_EQ(jit_->compiles(), 1u);
  EXPECT_EQ(jit_->requests[0].kind, ImageKind::Source);
  EXPECT_EQ(jit_->requests[0].kernel, "");
  EXPECT_EQ(jit_->requests[0].target, "sm_120");
  kernel_or_fail(module, "add", 0);
  ASSERT_EQ(jit_->compiles(), 2u);
  EXPECT_EQ(jit_->requests[1].target, "sm_90");
}

TEST_F(RuntimeTest, PtxWhoseKernelsShareStateCompilesWhole) {
  Runtime runtime = make_runtime({kBlackwell120});
  const std::string shared = ".global .align 4 .u32 counter;\n";
  Image image = ptx_image("compute_80", {kAdd, kSaxpy});
  std::string text = ".version 9.0\n.target sm_80\n.address_size 64\n" + shared;
  for (const std::string& kernel : {kAdd, kSaxpy}) {
    text += ".visible .entry " + kernel + "()\n{\n  mov.u64 %rd1, counter;\n  ret;\n}\n";
  }
  image.bytes.assign(text.begin(), text.end());
  Module module = load(runtime, {image});
  EXPECT_EQ(kernel_or_fail(module, "add").record().path, Path::JitPtx);
  EXPECT_EQ(kernel_or_fail(module, "saxpy").record().path, Path::JitPtx);
  ASSERT_EQ(jit_->compiles(), 1u);
  EXPECT_EQ(jit_->requests[0].kernel, "");
  EXPECT_EQ(entries_of(jit_->requests[0].input).size(), 2u);
}

TEST_F(RuntimeTest, EachKernelUsesAnImageThatHoldsIt) {
  // Two sources, so two sm_90 cubins, each with its own kernels.
  Runtime runtime = make_runtime({kHopper});
  Module module = load(runtime, {cubin_image("sm_90", {kAdd}), cubin_image("sm_90", {kSaxpy})});
  kernel_or_fail(module, "add");
  kernel_or_fail(module, "saxpy");
  EXPECT_EQ(driver_->loads.size(), 2u);
}

TEST_F(RuntimeTest, KernelsAreFoundByEverySpelling) {
  Runtime runtime = make_runtime({kHopper});
  Module module = load(runtime, {cubin_image("sm_90")});
  const void* handle = kernel_or_fail(module, "scale<float>").native_handle();
  EXPECT_EQ(kernel_or_fail(module, kScaleFloat).native_handle(), handle);
  EXPECT_EQ(kernel_or_fail(module, "void scale<float>(float*, float, int)").native_handle(), handle);
  EXPECT_NE(kernel_or_fail(module, "scale<double>").native_handle(), handle);
  EXPECT_EQ(kernel_or_fail(module, "saxpy").record().kernel, "saxpy");
  EXPECT_EQ(kernel_or_fail(module, kAdd).record().kernel, "add");

  Result<Kernel> unknown = module.kernel("subtract");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("subtract"), std::string::npos);
  EXPECT_NE(unknown.error().hint.find("scale<float>"), std::string::npos) << unknown.error().describe();
}

TEST_F(RuntimeTest, OverloadsNeedTheirSignature) {
  const std::string add_int = "_Z3addPiS_i";  // add(int*, int*, int)
  Runtime runtime = make_runtime({kHopper});
  Module module = load(runtime, {cubin_image("sm_90", {kAdd, add_int})});
  EXPECT_EQ(module.kernel_names(),
            (std::vector<std::string>{"add(float*, float*, int)", "add(int*, int*, int)"}));
  Result<Kernel> ambiguous = module.kernel("add");
  ASSERT_FALSE(ambiguous.ok());
  EXPECT_NE(ambiguous.error().message.find("ambiguous"), std::string::npos);
  EXPECT_NE(ambiguous.error().log.find("add(int*, int*, int)"), std::string::npos);
  EXPECT_EQ(kernel_or_fail(module, "add(int*, int*, int)").record().mangled, add_int);
}

// A readable name is first looked up by demangling only the kernels whose mangled name spells
// the same function identifier, and after many such lookups by spelling every name; either way the
// answer is what spelling every name gives.
// A bundle may list any string as a kernel; one that is not a mangled name ("float add_and_carry",
// short name add_and_carry) still shares its short name with the mangled kernel of that name, so
// both are named by their full names, whether or not every name has been spelled. Found by
// fuzz_runtime ("CUDA wgmm" beside _Z4wgmmav).
TEST_F(RuntimeTest, ANameThatIsNotMangledStillSharesItsShortName) {
  Runtime runtime = make_runtime({kHopper});
  Module module = load(runtime, {cubin_image("sm_90", {"_Z13add_and_carryPi", "float add_and_carry"})});
  EXPECT_EQ(kernel_or_fail(module, "_Z13add_and_carryPi").record().kernel, "add_and_carry(int*)");
  Result<Kernel> ambiguous = module.kernel("add_and_carry");
  ASSERT_FALSE(ambiguous.ok());
  EXPECT_NE(ambiguous.error().message.find("ambiguous"), std::string::npos) << ambiguous.error().describe();
  EXPECT_EQ(module.kernel_names(), (std::vector<std::string>{"add_and_carry(int*)", "float add_and_carry"}));
}

TEST_F(RuntimeTest, ReadableLookupsAgreeWithSpellingEveryName) {
  const std::vector<std::string> kernels = {
      "_ZN3ops3addIfEEvPKT_S3_PS1_x",  // ops::add<float>
      "_ZN3ops3addIdEEvPKT_S3_PS1_x",  // ops::add<double>
      "_ZN12_GLOBAL__N_16hiddenEPf",   // (anonymous namespace)::hidden(float*)
      "_Z13add_and_carryPi",           // holds "3add" too: a candidate that does not match "add"
      "_ZN3add3addEPf",                // add::add(float*)
      "_Z3addPfS_i",                   // add(float*, float*, int) and its overload:
      "_Z3addPiS_i",                   // add(int*, int*, int)
      "saxpy",                         // extern "C"
  };
  const std::vector<std::string> queries = {
      "ops::add<float>", "ops::add<double>", "void ops::add<float>(float const*, float const*, float*, long long)",
      "(anonymous namespace)::hidden", "add_and_carry", "add::add", "add", "add(int*, int*, int)", "saxpy",
      "ops::add<half>", "hidden", "void", "<float>", ""};
  Runtime runtime = make_runtime({kHopper});
  // What each query gives: the kernel's mangled name, or the error's message and log.
  auto answers = [&](const Module& module) {
    std::vector<std::string> found;
    for (const std::string& query : queries) {
      Result<Kernel> kernel = module.kernel(query);
      found.push_back(kernel ? kernel->record().mangled : kernel.error().message + " | " + kernel.error().log);
    }
    return found;
  };
  Module scanned = load(runtime, {cubin_image("sm_90", kernels)});
  const std::vector<std::string> by_scan = answers(scanned);
  Module spelled = load(runtime, {cubin_image("sm_90", kernels)});
  ASSERT_EQ(spelled.kernel_names().size(), kernels.size());  // spells every name first
  EXPECT_EQ(by_scan, answers(spelled));
  EXPECT_EQ(by_scan[0], kernels[0]);
  EXPECT_EQ(by_scan[3], kernels[2]);
  EXPECT_EQ(by_scan[4], kernels[3]);
  EXPECT_EQ(by_scan[5], kernels[4]);
  EXPECT_NE(by_scan[6].find("ambiguous"), std::string::npos) << by_scan[6];
  EXPECT_NE(by_scan[6].find("add(int*, int*, int)"), std::string::npos) << by_scan[6];
  EXPECT_EQ(by_scan[7], kernels[6]);
  EXPECT_NE(by_scan[9].find("no kernel named ops::add<half>"), std::string::npos) << by_scan[9];

  // A record names its kernel as kernel_names() does, overloads by their signature, without
  // spelling every name first.
  Module recorded = load(runtime, {cubin_image("sm_90", kernels)});
  std::vector<std::string> record_names;
  for (const std::string& mangled : kernels) record_names.push_back(kernel_or_fail(recorded, mangled).record().kernel);
  EXPECT_EQ(record_names[5], "add(float*, float*, int)");
  EXPECT_EQ(record_names[0], "ops::add<float>");
  std::sort(record_names.begin(), record_names.end());
  EXPECT_EQ(record_names, spelled.kernel_names());

  // Past the scans' budget the same queries, asked again and again, keep their answers.
  Module asked_often = load(runtime, {cubin_image("sm_90", kernels)});
  for (int round = 0; round < 8; ++round) EXPECT_EQ(answers(asked_often), by_scan) << "round " << round;
}

TEST_F(RuntimeTest, DeviceMinusOneIsTheCurrentContextsDevice) {
  Runtime runtime = make_runtime({kHopper, kHopper});
  Module module = load(runtime, {cubin_image("sm_90")});
  EXPECT_EQ(kernel_or_fail(module, "add").record().device, 0);  // no context current: GPU 0
  driver_->current = 1;
  EXPECT_EQ(kernel_or_fail(module, "saxpy").record().device, 1);
  Result<Kernel> missing = module.kernel("add", 2);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("GPU 2 does not exist"), std::string::npos);
}

TEST_F(RuntimeTest, RecordsAndInfoLogLinesNameThePathAndTheCost) {
  Runtime runtime = make_runtime({kHopper, kBlackwell120});
  Module module = load(runtime, {cubin_image("sm_90"), ptx_image("compute_80")});
  kernel_or_fail(module, "saxpy", 1);
  kernel_or_fail(module, "add", 0);
  kernel_or_fail(module, "add", 1);

  const std::vector<KernelRecord> records = module.records();
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].device, 0);
  EXPECT_EQ(records[1].kernel, "add");  // device 1 in bundle order: add before saxpy
  EXPECT_EQ(records[2].kernel, "saxpy");
  for (const KernelRecord& record : records) EXPECT_GE(record.milliseconds, 0.0);

  const std::vector<std::string> lines = log_lines(LogLevel::Info);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].rfind("saxpy on GPU 1 (sm_120): jit-ptx from compute_80, ", 0), 0u) << lines[0];
  EXPECT_EQ(lines[1].rfind("add on GPU 0 (sm_90): aot-exact from sm_90, ", 0), 0u) << lines[1];
  EXPECT_EQ(lines[1].substr(lines[1].size() - 3), " ms") << lines[1];
}

TEST_F(RuntimeTest, LogLevelWarnSaysNothingOnSuccess) {
  options_.log_level = LogLevel::Warn;
  Runtime runtime = make_runtime({kHopper});
  Module module = load(runtime, {cubin_image("sm_90")});
  kernel_or_fail(module, "add");
  std::lock_guard lock(log_mutex_);
  EXPECT_TRUE(log_.empty());
}

TEST_F(RuntimeTest, LaunchChecksArgumentsAgainstTheKernel) {
  Runtime runtime = make_runtime({kHopper});
  driver_->parameters[kAdd] = {8, 8, 4};
  Module module = load(runtime, {cubin_image("sm_90")});
  const Kernel add = kernel_or_fail(module, "add");
  EXPECT_EQ(driver_->parameter_queries.load(), 0);  // made ready: nothing asked until a launch
  float* x = nullptr;
  float* y = nullptr;

  Result<void> too_few = add.launch({1}, {32}, 0, nullptr, x, y);
  ASSERT_FALSE(too_few.ok());
  EXPECT_EQ(too_few.error().message, "kernel add takes 3 arguments, 2 were given");

  Result<void> wrong_size = add.launch({1}, {32}, 0, nullptr, x, y, 1.0);
  ASSERT_FALSE(wrong_size.ok());
  EXPECT_EQ(wrong_size.error().message, "kernel add: argument 2 is 8 bytes, the kernel takes 4");
  EXPECT_EQ(driver_->launches.load(), 0);

  Result<void> launched = add.launch({1}, {32}, 0, nullptr, x, y, 3);
  ASSERT_TRUE(launched.ok()) << launched.error().describe();
  EXPECT_EQ(driver_->launches.load(), 1);
  EXPECT_EQ(driver_->parameter_queries.load(), 1);  // asked once, for the first launch
}

// A real cubin records its kernels' parameter sizes; the first launch checks against those
// without a driver query per parameter (cuFuncGetParamInfo), whatever path the cubin came by.
TEST_F(RuntimeTest, ARealCubinsParameterTableSavesTheDriverQueries) {
  CompileOptions compile_options;
  compile_options.cubin_archs = {Arch{kHopper}};
  compile_options.cache_dir = cache_dir_ / "build";
  Result<CompileOutput> compiled =
      compile({fs::path(KILN_SOURCE_DIR) / "tests" / "data" / "compiler_parameters.cu"}, compile_options);
  ASSERT_TRUE(compiled.ok()) << compiled.error().describe();
  ASSERT_EQ(compiled->images.size(), 1u);

  Runtime runtime = make_runtime({kHopper});
  Module module = load(runtime, compiled->images);
  const Kernel scalars = kernel_or_fail(module, "scalars");
  bool* out = nullptr;
  Result<void> wrong = scalars.launch({1}, {1}, 0, nullptr, 'c', short{2}, 3, 4LL, 5.0f, 6.0f, out);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().message, "kernel scalars: argument 5 is 4 bytes, the kernel takes 8");
  ASSERT_TRUE(scalars.launch({1}, {1}, 0, nullptr, 'c', short{2}, 3, 4LL, 5.0f, 6.0, out).ok());
  const Kernel none = kernel_or_fail(module, "no_parameters");
  Result<void> extra = none.launch({1}, {1}, 0, nullptr, 1);
  ASSERT_FALSE(extra.ok());
  EXPECT_EQ(extra.error().message, "kernel no_parameters takes 0 arguments, 1 were given");
  EXPECT_EQ(driver_->parameter_queries.load(), 0);
  EXPECT_EQ(driver_->launches.load(), 1);
}

TEST_F(RuntimeTest, LaunchWithoutParameterInfoSkipsTheCheck) {
  Runtime runtime = make_runtime({kHopper});  // no parameters[...]: the driver cannot tell
  Module module = load(runtime, {cubin_image("sm_90")});
  ASSERT_TRUE(kernel_or_fail(module, "saxpy").launch({1}, {1}, 0, nullptr, 1.0f).ok());
  EXPECT_EQ(driver_->launches.load(), 1);
}

TEST_F(RuntimeTest, KernelsOutliveTheirModule) {
  Runtime runtime = make_runtime({kHopper});
  std::optional<Kernel> kept;
  {
    Module module = load(runtime, {cubin_image("sm_90")});
    kept = kernel_or_fail(module, "saxpy");
  }
  EXPECT_EQ(driver_->unloads.load(), 0);
  ASSERT_TRUE(kept->launch({1}, {1}, 0, nullptr, 1.0f).ok());
  kept.reset();
  EXPECT_EQ(driver_->unloads.load(), 1);
}

TEST_F(RuntimeTest, PrewarmPreparesEveryKernelOnEveryGpu) {
  Runtime runtime = make_runtime({kHopper, kBlackwell120});
  BundleMetadata metadata;
  Result<Bytes> bytes = write_bundle({cubin_image("sm_90"), ptx_image("compute_80")}, metadata);
  ASSERT_TRUE(bytes.ok()) << bytes.error().describe();
  Result<PrewarmReport> report = prewarm(runtime, *bytes, "test.kiln");
  ASSERT_TRUE(report.ok()) << report.error().describe();
  ASSERT_EQ(report->kernels.size(), 2 * kKernels.size());
  for (const KernelRecord& record : report->kernels) {
    EXPECT_EQ(record.path, record.device == 0 ? Path::AotExact : Path::JitPtx) << record.kernel;
  }
  // Only the GPU that JITs has an image to compile whole.
  ASSERT_EQ(report->whole_images.size(), 1u);
  const WholeImageRecord& whole = report->whole_images.front();
  EXPECT_EQ(whole.image, "compute_80");
  EXPECT_EQ(whole.kernels, kKernels.size());
  EXPECT_EQ(whole.device, 1);
  EXPECT_EQ(whole.device_arch, "sm_120");
  EXPECT_EQ(whole.path, Path::JitPtx);
}

// kiln prewarm also compiles each JIT image whole into the cache: a later start that readies every
// kernel loads one module for them all, while a start that wants one kernel still takes its own.
TEST_F(RuntimeTest, PrewarmedWholeImagesLoadAsOneModuleForPrepareAll) {
  const std::vector<Image> images = {ptx_image("compute_80")};
  {
    Runtime runtime = make_runtime({kBlackwell120});
    Result<Bytes> bytes = write_bundle(images, {});
    ASSERT_TRUE(bytes.ok()) << bytes.error().describe();
    ASSERT_TRUE(prewarm(runtime, *bytes, "test.kiln").ok());
    std::size_t whole = 0;
    for (const FakeJit::Request& request : jit_->requests) whole += request.kernel.empty() ? 1 : 0;
    EXPECT_EQ(whole, 1u) << "one whole-image compile";
    EXPECT_EQ(jit_->compiles(), kKernels.size() + 1);
  }
  {
    Runtime runtime = make_runtime({kBlackwell120});
    Module module = load(runtime, images);
    ASSERT_TRUE(module.prepare_all(0).ok());
    EXPECT_EQ(jit_->compiles(), 0u);
    ASSERT_EQ(driver_->loads.size(), 1u) << "one module for every kernel of the image";
    ASSERT_EQ(module.records().size(), kKernels.size());
    for (const KernelRecord& record : module.records()) EXPECT_EQ(record.path, Path::CacheHit) << record.kernel;
    // A second prewarm finds everything in place, and says so.
    Result<std::vector<WholeImageRecord>> again = module.compile_whole_images(0);
    ASSERT_TRUE(again.ok()) << again.error().describe();
    ASSERT_EQ(again->size(), 1u);
    EXPECT_EQ(again->front().path, Path::CacheHit);
    EXPECT_EQ(jit_->compiles(), 0u);
  }
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, images);
  EXPECT_EQ(kernel_or_fail(module, "add", 0).record().path, Path::CacheHit);
  EXPECT_EQ(jit_->compiles(), 0u);
  ASSERT_EQ(driver_->loads.size(), 1u) << "a lazy kernel loads its own cubin";
}

// After prepare_all has compiled a PTX image's kernels one by one, it compiles the image whole in
// the background, so that the next process's prepare_all loads one module instead of one per kernel.
TEST_F(RuntimeTest, PrepareAllCompilesJitImagesWholeInTheBackground) {
  options_.background_compile = true;
  const std::vector<Image> images = {ptx_image("compute_80")};
  {
    Runtime runtime = make_runtime({kBlackwell120});
    Module module = load(runtime, images);
    ASSERT_TRUE(module.prepare_all(0).ok());
    module.wait_for_background_compiles();
    EXPECT_EQ(jit_->whole_compiles(), 1u);
    EXPECT_EQ(jit_->compiles(), kKernels.size() + 1);
    EXPECT_EQ(driver_->loads.size(), kKernels.size()) << "the whole image is compiled, not loaded";
    const std::vector<std::string> info = log_lines(LogLevel::Info);
    EXPECT_TRUE(std::any_of(info.begin(), info.end(), [](const std::string& line) {
      return line.find("compute_80 for sm_120: compiled whole in the background") != std::string::npos;
    }));
  }
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, images);
  ASSERT_TRUE(module.prepare_all(0).ok());
  EXPECT_EQ(jit_->compiles(), 0u);
  EXPECT_EQ(driver_->loads.size(), 1u) << "one module for every kernel of the image";
  module.wait_for_background_compiles();
  EXPECT_EQ(jit_->compiles(), 0u) << "loaded whole: nothing left to compile";
}

TEST_F(RuntimeTest, BackgroundCompilesCanBeTurnedOff) {
  const std::vector<Image> images = {ptx_image("compute_80")};
  {
    Runtime runtime = make_runtime({kBlackwell120});
    Module module = load(runtime, images);
    ASSERT_TRUE(module.prepare_all(0).ok());
    module.wait_for_background_compiles();
    EXPECT_EQ(jit_->whole_compiles(), 0u);
  }
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, images);
  ASSERT_TRUE(module.prepare_all(0).ok());
  EXPECT_EQ(driver_->loads.size(), kKernels.size()) << "a module per kernel, from the cache";
}

// Nothing to compile whole: AOT cubins, a lazy kernel() rather than prepare_all, no persistent cache.
TEST_F(RuntimeTest, BackgroundCompilesOnlyFollowAJitPrepareAll) {
  options_.background_compile = true;
  {
    Runtime runtime = make_runtime({kHopper});
    Module module = load(runtime, {cubin_image("sm_90"), ptx_image("compute_80")});
    ASSERT_TRUE(module.prepare_all(0).ok());
    module.wait_for_background_compiles();
    EXPECT_EQ(jit_->compiles(), 0u);
  }
  {
    Runtime runtime = make_runtime({kBlackwell120});
    Module module = load(runtime, {ptx_image("compute_80")});
    kernel_or_fail(module, "add", 0);
    module.wait_for_background_compiles();
    EXPECT_EQ(jit_->whole_compiles(), 0u);
  }
  options_.cache_disabled = true;
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, {ptx_image("compute_80")});
  ASSERT_TRUE(module.prepare_all(0).ok());
  module.wait_for_background_compiles();
  EXPECT_EQ(jit_->whole_compiles(), 0u) << "nowhere to keep it";
}

TEST_F(RuntimeTest, ASecondPrepareAllDoesNotStartTheSameBackgroundCompile) {
  auto slow = background_jit_taking(std::chrono::milliseconds(200));
  Runtime runtime = make_runtime({kBlackwell120}, slow);
  Module module = load(runtime, {ptx_image("compute_80")});
  ASSERT_TRUE(module.prepare_all(0).ok());
  ASSERT_TRUE(module.prepare_all(0).ok());
  module.wait_for_background_compiles();
  EXPECT_EQ(slow->whole_compiles(), 1u);
  const std::vector<std::string> info = log_lines(LogLevel::Info);
  EXPECT_EQ(std::count_if(info.begin(), info.end(),
                          [](const std::string& line) { return line.find("in the background") != std::string::npos; }),
            1);
}

TEST_F(RuntimeTest, AModuleWaitsForItsBackgroundCompilesWhenDestroyed) {
  const std::vector<Image> images = {ptx_image("compute_80")};
  auto slow = background_jit_taking(std::chrono::milliseconds(300));
  {
    Runtime runtime = make_runtime({kBlackwell120}, slow);
    Module module = load(runtime, images);
    ASSERT_TRUE(module.prepare_all(0).ok());
    EXPECT_EQ(slow->whole_compiles(), 0u) << "prepare_all returned before the whole image was compiled";
  }
  EXPECT_EQ(slow->whole_compiles(), 1u) << "the Module's destructor waited for it";
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, images);
  ASSERT_TRUE(module.prepare_all(0).ok());
  EXPECT_EQ(driver_->loads.size(), 1u);
}

// kiln prewarm runs prepare_all and then compile_whole_images: the image prepare_all is already
// compiling in the background is waited for, compiled once, and reported as compiled.
TEST_F(RuntimeTest, CompileWholeImagesJoinsTheBackgroundCompile) {
  auto slow = background_jit_taking(std::chrono::milliseconds(200));
  Runtime runtime = make_runtime({kBlackwell120}, slow);
  Module module = load(runtime, {ptx_image("compute_80")});
  ASSERT_TRUE(module.prepare_all(0).ok());
  Result<std::vector<WholeImageRecord>> whole = module.compile_whole_images(0);
  ASSERT_TRUE(whole.ok()) << whole.error().describe();
  ASSERT_EQ(whole->size(), 1u);
  EXPECT_EQ(whole->front().path, Path::JitPtx);
  module.wait_for_background_compiles();
  EXPECT_EQ(slow->whole_compiles(), 1u);
}

TEST_F(RuntimeTest, AFailedBackgroundCompileWarnsAndLeavesTheKernelsAlone) {
  options_.background_compile = true;
  const std::vector<Image> images = {ptx_image("compute_80")};
  auto failing = std::make_shared<FakeJit>();
  failing->fail_whole = true;
  {
    Runtime runtime = make_runtime({kBlackwell120}, failing);
    Module module = load(runtime, images);
    ASSERT_TRUE(module.prepare_all(0).ok());
    module.wait_for_background_compiles();
    const std::vector<std::string> warnings = log_lines(LogLevel::Warn);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find("compiling compute_80 for sm_120 whole in the background failed"), std::string::npos)
        << warnings[0];
    EXPECT_NE(warnings[0].find("the whole image does not compile"), std::string::npos) << warnings[0];
    EXPECT_EQ(module.records().size(), kKernels.size());
  }
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, images);
  ASSERT_TRUE(module.prepare_all(0).ok());
  EXPECT_EQ(jit_->compiles(), 0u);
  EXPECT_EQ(driver_->loads.size(), kKernels.size()) << "a module per kernel, as before";
}

// A process that exits with a background compile running (its Module never destroyed) waits for
// it at exit rather than tearing the driver down under it, and the cache keeps the image.
TEST_F(RuntimeTest, AProcessWaitsAtExitForBackgroundCompiles) {
  options_.background_compile = true;
  const std::vector<Image> images = {ptx_image("compute_80")};
  EXPECT_EXIT(
      {
        auto slow = std::make_shared<FakeJit>();
        slow->whole_delay = std::chrono::milliseconds(300);
        Runtime runtime = make_runtime({kBlackwell120}, slow);
        auto* leaked = new Module(load(runtime, images));
        if (!leaked->prepare_all(0).ok()) std::_Exit(3);
        std::exit(slow->whole_compiles() == 0 ? 0 : 4);
      },
      ::testing::ExitedWithCode(0), "");
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, images);
  ASSERT_TRUE(module.prepare_all(0).ok());
  EXPECT_EQ(jit_->compiles(), 0u);
  EXPECT_EQ(driver_->loads.size(), 1u) << "the exiting process finished the whole image";
}

// A child forked while a background compile runs (a PyTorch data-loader worker, say) has none of
// the parent's threads: it neither waits for their work nor hangs at exit; the parent's compile
// completes as usual.
TEST_F(RuntimeTest, AChildForkedDuringABackgroundCompileDoesNotWaitForIt) {
  auto slow = background_jit_taking(std::chrono::milliseconds(500));
  Runtime runtime = make_runtime({kBlackwell120}, slow);
  Module module = load(runtime, {ptx_image("compute_80")});
  ASSERT_TRUE(module.prepare_all(0).ok());
  EXPECT_EXIT(
      {
        ::alarm(5);  // a hang fails the test rather than the run
        module.wait_for_background_compiles();
        forked_child_exiting = true;
        std::exit(slow->whole_compiles() == 0 ? 0 : 4);  // the process's own wait at exit, too
      },
      ::testing::ExitedWithCode(0), "");
  module.wait_for_background_compiles();
  EXPECT_EQ(slow->whole_compiles(), 1u);
}

TEST_F(RuntimeTest, WholeImagesNeedAPersistentCache) {
  options_.cache_disabled = true;
  Runtime runtime = make_runtime({kBlackwell120});
  Module module = load(runtime, {ptx_image("compute_80")});
  Result<std::vector<WholeImageRecord>> whole = module.compile_whole_images(0);
  ASSERT_TRUE(whole.ok()) << whole.error().describe();
  EXPECT_TRUE(whole->empty());
  EXPECT_EQ(jit_->compiles(), 0u) << "nowhere to keep them, so nothing compiled";
}

TEST_F(RuntimeTest, ACachedCubinTheDriverRefusesIsCompiledAgain) {
  // The first compile's output is refused by the driver, and kept in the cache before it is loaded.
  auto first_jit = std::make_shared<FakeJit>();
  first_jit->unloadable_outputs = 1;
  {
    Runtime runtime = make_runtime({kHopper}, first_jit);
    Module module = load(runtime, {ptx_image("compute_80")});
    Result<Kernel> refused = module.kernel(kAdd, 0);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().describe().find("not a fake cubin"), std::string::npos) << refused.error().describe();
  }
  // The next runtime finds that entry, the driver refuses it again, and it is compiled anew.
  Runtime runtime = make_runtime({kHopper});
  Module module = load(runtime, {ptx_image("compute_80")});
  Kernel kernel = kernel_or_fail(module, kAdd, 0);
  EXPECT_EQ(kernel.record().path, Path::JitPtx);
  EXPECT_EQ(jit_->compiles(), 1u);
  const std::vector<std::string> warnings = log_lines(LogLevel::Warn);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("the driver refused the cubin from the cache"), std::string::npos) << warnings[0];
  // And the entry now holds the good cubin: a third runtime loads it without compiling.
  Runtime third = make_runtime({kHopper});
  Module again = load(third, {ptx_image("compute_80")});
  EXPECT_EQ(kernel_or_fail(again, kAdd, 0).record().path, Path::CacheHit);
  EXPECT_EQ(jit_->compiles(), 0u);
}

TEST_F(RuntimeTest, APrewarmedWholeImageTheDriverRefusesIsCompiledAgain) {
  auto prewarm_jit = std::make_shared<FakeJit>();
  prewarm_jit->unloadable_outputs = 1;  // the whole image's compile
  {
    Runtime runtime = make_runtime({kHopper}, prewarm_jit);
    Module module = load(runtime, {ptx_image("compute_80")});
    ASSERT_TRUE(module.compile_whole_images(0).ok());
  }
  Runtime runtime = make_runtime({kHopper});
  Module module = load(runtime, {ptx_image("compute_80")});
  ASSERT_TRUE(module.prepare_all(0).ok());
  for (const KernelRecord& record : module.records()) EXPECT_EQ(record.path, Path::JitPtx) << record.kernel;
  EXPECT_EQ(log_lines(LogLevel::Warn).size(), 1u);
}

TEST_F(RuntimeTest, APtxDictionaryIsUsedWithItsTrailingNul) {
  // PTX from other tools may end in the C string's NUL; the writer primes the next image with
  // those bytes, NUL and all, and the runtime must decode it with the same bytes.
  std::string padding;
  for (int i = 0; i < 400; ++i) padding += "// line " + std::to_string(i) + " of a long preamble that compresses\n";
  std::string first = ptx_of({kAdd}, padding);
  first.push_back('\0');
  const std::string second = ptx_of({kAdd}, padding + "// compute_80\n");
  std::vector<Image> images{{*parse_target("compute_75"), {kAdd}, Bytes(first.begin(), first.end())},
                            {*parse_target("compute_80"), {kAdd}, Bytes(second.begin(), second.end())}};
  Result<Bytes> bytes = write_bundle(images, {});
  ASSERT_TRUE(bytes.ok()) << bytes.error().describe();
  Result<Bundle> bundle = Bundle::open(*bytes);
  ASSERT_TRUE(bundle.ok());
  ASSERT_EQ(bundle->images()[1].dictionary, std::optional<std::uint32_t>(0)) << "the test needs a dictionary";
  bundles_.push_back(std::move(*bytes));
  Runtime runtime = make_runtime({kAmpere86});
  Result<Module> module = runtime.load(bundles_.back(), "nul.kiln");
  ASSERT_TRUE(module.ok());
  Kernel kernel = kernel_or_fail(*module, kAdd, 0);
  EXPECT_EQ(kernel.record().image, "compute_80");
}

TEST_F(RuntimeTest, ALaunchFailureNamesTheKernelTheGpuAndTheShape) {
  Runtime runtime = make_runtime({kHopper});
  Module module = load(runtime, {cubin_image("sm_90")});
  Kernel kernel = kernel_or_fail(module, kAdd, 0);
  driver_->fail_launches = true;
  float* data = nullptr;
  Result<void> launched = kernel.launch({4, 1, 1}, {128, 1, 1}, 0, nullptr, data, data, 1);
  ASSERT_FALSE(launched.ok());
  const std::string text = launched.error().describe();
  EXPECT_NE(text.find("CUDA_ERROR_INVALID_VALUE"), std::string::npos) << text;
  EXPECT_NE(text.find("kernel add"), std::string::npos) << text;
  EXPECT_NE(text.find("GPU 0 (sm_90)"), std::string::npos) << text;
  EXPECT_NE(text.find("grid (4, 1, 1), block (128, 1, 1)"), std::string::npos) << text;
}

TEST_F(RuntimeTest, TheJitCacheKeyTellsDriverBuildsApart) {
  // The real JIT compiler's identity, which keys the cache: one CUDA version, two driver builds.
  auto build_one = std::make_shared<FakeDriver>(std::vector<ComputeCapability>{kHopper});
  auto build_two = std::make_shared<FakeDriver>(std::vector<ComputeCapability>{kHopper});
  build_two->build = "fake driver build 2";
  Result<std::string> one = make_jit_compiler(build_one)->identity(ImageKind::Ptx);
  Result<std::string> two = make_jit_compiler(build_two)->identity(ImageKind::Ptx);
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_NE(*one, *two);
  EXPECT_NE(one->find("13000"), std::string::npos) << *one;
}

TEST_F(RuntimeTest, ARuntimeNeedsADriverAndAJit) {
  Result<Runtime> runtime = Runtime::create(nullptr, std::make_shared<FakeJit>(), options_);
  EXPECT_FALSE(runtime.ok());
}

}  // namespace
