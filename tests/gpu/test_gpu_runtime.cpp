// The runtime on a real GPU: every path (aot-exact, jit-ptx, jit-source, cache-hit in this
// process and in another), checked against a CPU reference; threads launching at once; launch
// argument checks; launch overhead. Bundles are built here, from tests/gpu/data/*.cu, with
// kiln::compile(). Without a GPU and driver every test skips itself.
#include <cuda.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <optional>
#include <set>
#include <thread>

#include "elf.hpp"
#include "gpu_test_support.hpp"
#include "kiln/compiler.hpp"
#include "kiln/doctor.hpp"
#include "kiln/runtime.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using namespace kiln;
using kiln_gpu_test::DeviceBuffer;
using kiln_gpu_test::Stream;

constexpr const char* kChildFlag = "--kiln-child-expects-cache-hits";

// ---- Bundles --------------------------------------------------------------------------------

struct BundleRecipe {
  std::vector<Arch> cubins;
  std::vector<Arch> ptx;
  bool source = false;
  bool split_kernels = false;
};

// Compiled once per process per recipe; NVRTC results are kept in a compile cache in the
// build tree, so the test processes after the first compile nothing.
const Bytes& bundle_for(const BundleRecipe& recipe) {
  static std::mutex mutex;
  static std::map<std::string, Bytes> built;
  std::string key = std::string(recipe.source ? "source" : "") + (recipe.split_kernels ? "split" : "");
  for (const Arch& arch : recipe.cubins) key += " " + arch.sm_name();
  for (const Arch& arch : recipe.ptx) key += " " + arch.compute_name();
  std::lock_guard lock(mutex);
  if (auto found = built.find(key); found != built.end()) return found->second;

  std::vector<fs::path> sources;
  for (const auto& item : fs::directory_iterator(KILN_GPU_TEST_DATA)) {
    if (item.path().extension() == ".cu") sources.push_back(item.path());
  }
  std::sort(sources.begin(), sources.end());
  CompileOptions options;
  options.cubin_archs = recipe.cubins;
  options.ptx_archs = recipe.ptx;
  options.embed_source = recipe.source;
  options.split_kernels = recipe.split_kernels;
  options.cache_dir = fs::path(KILN_GPU_TEST_BINARY_DIR) / "compile-cache";
  Result<CompileOutput> compiled = compile(sources, options);
  if (!compiled) throw std::runtime_error("building the test bundle failed: " + compiled.error().describe());
  Result<Bytes> bundle = write_bundle(compiled->images, BundleMetadata{});
  if (!bundle) throw std::runtime_error("writing the test bundle failed: " + bundle.error().describe());
  return built.emplace(key, std::move(*bundle)).first->second;
}

Arch plain(ComputeCapability cc) { return Arch{cc, ArchVariant::Plain}; }
// PTX every GPU kiln supports from Ampere on can JIT; older GPUs get their own.
Arch portable_ptx(ComputeCapability device) { return plain(std::min(device, ComputeCapability{8, 0})); }
// A cubin that cannot run on `device` (another major version), so the PTX must be JIT-compiled.
Arch foreign_cubin(ComputeCapability device) { return plain(device.major == 8 ? ComputeCapability{9, 0} : ComputeCapability{8, 0}); }

BundleRecipe aot_recipe(ComputeCapability device) { return {{plain(device)}, {portable_ptx(device)}, true}; }
BundleRecipe ptx_recipe(ComputeCapability device) { return {{foreign_cubin(device)}, {portable_ptx(device)}, false}; }
BundleRecipe source_recipe() { return {{}, {}, true}; }
BundleRecipe split_recipe(ComputeCapability device) { return {{plain(device)}, {portable_ptx(device)}, false, true}; }

// ---- Kernels and their CPU references ---------------------------------------------------------

std::vector<float> random_floats(std::size_t count, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(-1.0f, 1.0f);
  std::vector<float> values(count);
  for (float& value : values) value = distribution(generator);
  return values;
}

unsigned blocks_for(int n, unsigned threads) { return (static_cast<unsigned>(n) + threads - 1) / threads; }

::testing::AssertionResult check_saxpy(const Kernel& kernel, CUstream stream) {
  const int n = 100'003;
  const float a = 2.5f;
  const std::vector<float> x = random_floats(n, 1);
  const std::vector<float> y = random_floats(n, 2);
  DeviceBuffer<float> device_x(x);
  DeviceBuffer<float> device_y(y);
  Result<void> launched = kernel.launch({blocks_for(n, 256)}, {256}, 0, stream, a, device_x.get(), device_y.get(), n);
  if (!launched) return ::testing::AssertionFailure() << launched.error().describe();
  kiln_gpu_test::check(kiln_gpu_test::CudaApi::get()->stream_synchronize(stream), "cuStreamSynchronize");
  const std::vector<float> result = device_y.download();
  for (int i = 0; i < n; ++i) {
    const float expected = a * x[i] + y[i];
    if (std::fabs(result[i] - expected) > 1e-5f) {
      return ::testing::AssertionFailure() << "saxpy[" << i << "] = " << result[i] << ", expected " << expected;
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult check_block_sum(const Kernel& kernel, CUstream stream) {
  const int n = 65'537;
  constexpr unsigned kBlock = 256;  // the kernel's cub::BlockReduce width
  const std::vector<float> in = random_floats(n, 3);
  const unsigned blocks = blocks_for(n, kBlock);
  DeviceBuffer<float> device_in(in);
  DeviceBuffer<float> device_sums(blocks);
  Result<void> launched = kernel.launch({blocks}, {kBlock}, 0, stream, device_in.get(), device_sums.get(), n);
  if (!launched) return ::testing::AssertionFailure() << launched.error().describe();
  kiln_gpu_test::check(kiln_gpu_test::CudaApi::get()->stream_synchronize(stream), "cuStreamSynchronize");
  const std::vector<float> sums = device_sums.download();
  for (unsigned block = 0; block < blocks; ++block) {
    double expected = 0;
    for (unsigned i = block * kBlock; i < std::min<unsigned>((block + 1) * kBlock, n); ++i) expected += in[i];
    if (std::fabs(sums[block] - expected) > 1e-3) {
      return ::testing::AssertionFailure() << "block_sum[" << block << "] = " << sums[block] << ", expected " << expected;
    }
  }
  return ::testing::AssertionSuccess();
}

template <class T>
::testing::AssertionResult check_axpb(const Kernel& kernel, CUstream stream) {
  const int n = 50'000;
  const std::vector<float> values = random_floats(n, 4);
  std::vector<T> x(values.begin(), values.end());
  std::vector<T> y(n, T(0.0f));
  const T a = T(1.5f);
  const T b = T(-0.25f);
  DeviceBuffer<T> device_x(x);
  DeviceBuffer<T> device_y(y);
  Result<void> launched = kernel.launch({blocks_for(n, 128)}, {128}, 0, stream, device_x.get(), device_y.get(), a, b, n);
  if (!launched) return ::testing::AssertionFailure() << launched.error().describe();
  kiln_gpu_test::check(kiln_gpu_test::CudaApi::get()->stream_synchronize(stream), "cuStreamSynchronize");
  const std::vector<T> result = device_y.download();
  const double tolerance = sizeof(T) == 2 ? 1e-2 : 1e-6;
  for (int i = 0; i < n; ++i) {
    const double expected = 1.5 * static_cast<double>(static_cast<float>(x[i])) - 0.25;
    const double got = static_cast<float>(result[i]);
    if (std::fabs(got - expected) > tolerance) {
      return ::testing::AssertionFailure() << "axpb[" << i << "] = " << got << ", expected " << expected;
    }
  }
  return ::testing::AssertionSuccess();
}

struct KernelCheck {
  const char* name;  // as a user would write it
  std::function<::testing::AssertionResult(const Kernel&, CUstream)> run;
};

const std::vector<KernelCheck>& kernel_checks() {
  static const std::vector<KernelCheck> checks = {
      {"saxpy", check_saxpy},
      {"block_sum", check_block_sum},
      {"axpb<float>", check_axpb<float>},
      {"axpb<double>", check_axpb<double>},
      {"axpb<__half>", check_axpb<__half>},
  };
  return checks;
}

// Every kernel on `device`: looked up, launched, checked; returns the records in check order.
std::vector<KernelRecord> run_every_kernel(const Runtime& runtime, const Module& module, int device) {
  EXPECT_TRUE(runtime.driver()->make_current(device).ok());
  Stream stream;
  std::vector<KernelRecord> records;
  for (const KernelCheck& check : kernel_checks()) {
    SCOPED_TRACE(check.name);
    Result<Kernel> kernel = module.kernel(check.name, device);
    if (!kernel) {
      ADD_FAILURE() << kernel.error().describe();
      continue;
    }
    EXPECT_TRUE(check.run(*kernel, stream.get()));
    records.push_back(kernel->record());
  }
  return records;
}

void expect_paths(const std::vector<KernelRecord>& records, Path path) {
  EXPECT_EQ(records.size(), kernel_checks().size());
  for (const KernelRecord& record : records) {
    EXPECT_EQ(record.path, path) << record.kernel << " took " << path_name(record.path);
    std::printf("  %-14s GPU %d %-6s %-15s from %-11s %8.2f ms\n", record.kernel.c_str(), record.device,
                record.device_arch.c_str(), path_name(record.path), record.image.c_str(), record.milliseconds);
  }
}

// ---- Fixture ---------------------------------------------------------------------------------

// Every kernel of each PTX image comes from that image's one module (compiled whole), not from
// a module of its own.
void expect_a_module_per_ptx_image(const Module& module, const std::vector<KernelRecord>& records) {
  std::map<std::size_t, std::set<CUmodule>> modules_by_image;
  for (const KernelRecord& record : records) {
    Result<Kernel> kernel = module.kernel(record.mangled, 0);
    ASSERT_TRUE(kernel.ok()) << kernel.error().describe();
    CUmodule owner = nullptr;
    kiln_gpu_test::check(
        kiln_gpu_test::CudaApi::get()->function_module(&owner, static_cast<CUfunction>(kernel->native_handle())),
        "cuFuncGetModule");
    const std::vector<ImageInfo>& images = module.bundle().images();
    for (std::size_t image = 0; image < images.size(); ++image) {
      const std::span<const std::string_view> kernels = images[image].kernels;
      if (images[image].target.kind == ImageKind::Ptx &&
          std::find(kernels.begin(), kernels.end(), record.mangled) != kernels.end()) {
        modules_by_image[image].insert(owner);
      }
    }
  }
  std::set<CUmodule> all;
  for (const auto& [image, modules] : modules_by_image) {
    EXPECT_EQ(modules.size(), 1u) << "the kernels of PTX image " << image << " share its whole module";
    all.insert(modules.begin(), modules.end());
  }
  EXPECT_EQ(all.size(), modules_by_image.size()) << "each image its own module";
  EXPECT_LT(all.size(), records.size()) << "fewer modules than kernels";
}

class GpuRuntime : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kiln_gpu_test::CudaApi::get() == nullptr) GTEST_SKIP() << "no CUDA driver (libcuda.so.1) on this machine";
    Result<std::shared_ptr<Driver>> driver = load_cuda_driver();
    if (!driver) GTEST_SKIP() << "no usable GPU: " << driver.error().describe();
    gpu_ = (*driver)->gpus().front();
    cache_dir_ = fs::temp_directory_path() /
                 ("kiln-gpu-test-" + std::to_string(::getpid()) + "-" +
                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(cache_dir_);
  }
  void TearDown() override {
    if (!cache_dir_.empty()) fs::remove_all(cache_dir_);
  }

  RuntimeOptions options() const {
    RuntimeOptions options;
    options.cache_dir = cache_dir_;
    options.log_level = LogLevel::Info;  // the lead's log shows each kernel's path
    return options;
  }

  static Runtime make_runtime(const RuntimeOptions& options) {
    Result<Runtime> runtime = Runtime::create(options);
    if (!runtime) throw std::runtime_error(runtime.error().describe());
    return std::move(*runtime);
  }

  static Module load(const Runtime& runtime, const Bytes& bundle) {
    Result<Module> module = runtime.load(bundle, "gpu-test.kiln");
    if (!module) throw std::runtime_error(module.error().describe());
    return std::move(*module);
  }

  // A start after the cache got `bundle`'s PTX images compiled whole: prepare_all takes every
  // kernel from the cache, a module per image, and each computes right.
  static void expect_whole_images_serve_prepare_all(const Bytes& bundle, const RuntimeOptions& options) {
    Runtime runtime = make_runtime(options);
    Module module = load(runtime, bundle);
    ASSERT_TRUE(module.prepare_all(0).ok());
    const std::vector<KernelRecord> records = run_every_kernel(runtime, module, 0);
    expect_paths(records, Path::CacheHit);
    expect_a_module_per_ptx_image(module, records);
  }

  GpuInfo gpu_;
  fs::path cache_dir_;
};

TEST_F(GpuRuntime, AotExactCubinRunsEveryKernel) {
  RuntimeOptions options = this->options();
  options.cache_disabled = true;
  Runtime runtime = make_runtime(options);
  Module module = load(runtime, bundle_for(aot_recipe(gpu_.cc)));
  expect_paths(run_every_kernel(runtime, module, 0), Path::AotExact);
}

// kiln build --split-kernels: a cubin per kernel, each loaded alone, computes as the whole one.
TEST_F(GpuRuntime, SplitKernelCubinsRunEveryKernel) {
  RuntimeOptions options = this->options();
  options.cache_disabled = true;
  Runtime runtime = make_runtime(options);
  const Bytes& bundle = bundle_for(split_recipe(gpu_.cc));
  Module module = load(runtime, bundle);
  std::size_t cubins = 0;
  for (const ImageInfo& image : module.bundle().images()) {
    if (image.target.kind != ImageKind::Cubin) continue;
    ++cubins;
    EXPECT_EQ(image.kernels.size(), 1u) << image.target.name();
  }
  EXPECT_EQ(cubins, module.kernel_names().size());
  expect_paths(run_every_kernel(runtime, module, 0), Path::AotExact);
}

TEST_F(GpuRuntime, JitPtxWhenNoCubinFits) {
  Runtime runtime = make_runtime(options());
  Module module = load(runtime, bundle_for(ptx_recipe(gpu_.cc)));
  const std::vector<KernelRecord> records = run_every_kernel(runtime, module, 0);
  expect_paths(records, Path::JitPtx);
  for (const KernelRecord& record : records) EXPECT_EQ(record.image, portable_ptx(gpu_.cc).compute_name());
}

TEST_F(GpuRuntime, ForceJitCompilesPtxOnAListedGpu) {
  RuntimeOptions options = this->options();
  options.force_jit = true;
  Runtime runtime = make_runtime(options);
  Module module = load(runtime, bundle_for(aot_recipe(gpu_.cc)));
  expect_paths(run_every_kernel(runtime, module, 0), Path::JitPtx);
}

TEST_F(GpuRuntime, JitSourceFromTheEmbeddedSource) {
  Runtime runtime = make_runtime(options());
  Module module = load(runtime, bundle_for(source_recipe()));
  expect_paths(run_every_kernel(runtime, module, 0), Path::JitSource);
}

TEST_F(GpuRuntime, ASecondRuntimeHitsTheCache) {
  const Bytes& bundle = bundle_for(ptx_recipe(gpu_.cc));
  {
    Runtime first = make_runtime(options());
    Module module = load(first, bundle);
    expect_paths(run_every_kernel(first, module, 0), Path::JitPtx);
  }
  Runtime second = make_runtime(options());
  Module module = load(second, bundle);
  expect_paths(run_every_kernel(second, module, 0), Path::CacheHit);
}

TEST_F(GpuRuntime, ASecondRuntimeHitsTheCacheForSourceToo) {
  const Bytes& bundle = bundle_for(source_recipe());
  {
    Runtime first = make_runtime(options());
    Module module = load(first, bundle);
    ASSERT_TRUE(module.prepare_all(0).ok());
  }
  Runtime second = make_runtime(options());
  Module module = load(second, bundle);
  expect_paths(run_every_kernel(second, module, 0), Path::CacheHit);
}

// The parent fills the cache; a second process (this executable again) must find every kernel there.
TEST_F(GpuRuntime, ASecondProcessHitsTheCache) {
  const fs::path bundle_path = cache_dir_.string() + ".kiln";
  {
    std::ofstream out(bundle_path, std::ios::binary);
    const Bytes& bundle = bundle_for(ptx_recipe(gpu_.cc));
    out.write(reinterpret_cast<const char*>(bundle.data()), static_cast<std::streamsize>(bundle.size()));
  }
  {
    Runtime runtime = make_runtime(options());
    Result<Module> module = runtime.load_file(bundle_path);
    ASSERT_TRUE(module.ok()) << module.error().describe();
    Result<void> prepared = module->prepare_all(0);
    ASSERT_TRUE(prepared.ok()) << prepared.error().describe();
  }
  std::string self = fs::read_symlink("/proc/self/exe").string();
  std::string flag = kChildFlag;
  std::string bundle_argument = bundle_path.string();
  std::string cache_argument = cache_dir_.string();
  char* arguments[] = {self.data(), flag.data(), bundle_argument.data(), cache_argument.data(), nullptr};
  pid_t child = 0;
  ASSERT_EQ(posix_spawn(&child, self.c_str(), nullptr, nullptr, arguments, environ), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  fs::remove(bundle_path);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child process did not find every kernel in the cache (its output is above)";
}

// Eight threads, each launching a different kernel (round robin over five) while the JIT is cold,
// so lookups, compiles and launches all overlap.
TEST_F(GpuRuntime, EightThreadsLaunchDifferentKernelsAtOnce) {
  Runtime runtime = make_runtime(options());
  Module module = load(runtime, bundle_for(ptx_recipe(gpu_.cc)));
  std::vector<std::string> failures(8);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < failures.size(); ++t) {
    threads.emplace_back([&, t] {
      try {
        if (Result<void> current = runtime.driver()->make_current(0); !current) {
          failures[t] = current.error().describe();
          return;
        }
        const KernelCheck& check = kernel_checks()[t % kernel_checks().size()];
        Stream stream;
        for (int round = 0; round < 10; ++round) {
          Result<Kernel> kernel = module.kernel(check.name, 0);
          if (!kernel) {
            failures[t] = kernel.error().describe();
            return;
          }
          ::testing::AssertionResult result = check.run(*kernel, stream.get());
          if (!result) {
            failures[t] = std::string(check.name) + ": " + result.message();
            return;
          }
        }
      } catch (const std::exception& error) {
        failures[t] = error.what();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (std::size_t t = 0; t < failures.size(); ++t) EXPECT_EQ(failures[t], "") << "thread " << t;
  EXPECT_EQ(module.records().size(), kernel_checks().size());  // each kernel made ready once
}

TEST_F(GpuRuntime, LaunchArgumentErrorsNameTheKernel) {
  RuntimeOptions options = this->options();
  options.cache_disabled = true;
  Runtime runtime = make_runtime(options);
  Module module = load(runtime, bundle_for(aot_recipe(gpu_.cc)));
  Result<Kernel> saxpy = module.kernel("saxpy", 0);
  ASSERT_TRUE(saxpy.ok()) << saxpy.error().describe();
  const CUdeviceptr none = 0;
  Result<void> wrong_size = saxpy->launch({1}, {1}, 0, nullptr, 2.5 /* double, not float */, none, none, 1);
  ASSERT_FALSE(wrong_size.ok()) << "the driver lacks cuFuncGetParamInfo?";
  EXPECT_EQ(wrong_size.error().message, "kernel saxpy: argument 0 is 8 bytes, the kernel takes 4");
  Result<void> too_few = saxpy->launch({1}, {1}, 0, nullptr, 2.5f, none, none);
  ASSERT_FALSE(too_few.ok());
  EXPECT_EQ(too_few.error().message, "kernel saxpy takes 4 arguments, 3 were given");
}

TEST_F(GpuRuntime, EveryGpuGetsItsOwnModule) {
  Runtime runtime = make_runtime(options());
  if (runtime.gpus().size() < 2) GTEST_SKIP() << "one GPU: nothing to compare across devices";
  // Cubins for every GPU's architecture, plus PTX: each device picks for itself.
  BundleRecipe recipe{{}, {plain(ComputeCapability{8, 0})}, false};
  for (const GpuInfo& gpu : runtime.gpus()) {
    if (std::find(recipe.cubins.begin(), recipe.cubins.end(), plain(gpu.cc)) == recipe.cubins.end()) {
      recipe.cubins.push_back(plain(gpu.cc));
    }
  }
  Module module = load(runtime, bundle_for(recipe));
  std::vector<void*> handles;
  for (const GpuInfo& gpu : runtime.gpus()) {
    SCOPED_TRACE("GPU " + std::to_string(gpu.ordinal));
    const std::vector<KernelRecord> records = run_every_kernel(runtime, module, gpu.ordinal);
    expect_paths(records, Path::AotExact);
    handles.push_back(module.kernel("saxpy", gpu.ordinal)->native_handle());
  }
  std::sort(handles.begin(), handles.end());
  EXPECT_EQ(std::unique(handles.begin(), handles.end()), handles.end());
}

TEST_F(GpuRuntime, DeviceMinusOneFollowsTheCurrentContext) {
  Runtime runtime = make_runtime(options());
  Module module = load(runtime, bundle_for(aot_recipe(gpu_.cc)));
  const int last = static_cast<int>(runtime.gpus().size()) - 1;
  ASSERT_TRUE(runtime.driver()->make_current(last).ok());
  Result<Kernel> kernel = module.kernel("saxpy");
  ASSERT_TRUE(kernel.ok()) << kernel.error().describe();
  EXPECT_EQ(kernel->record().device, last);
}

TEST_F(GpuRuntime, PrewarmMakesEveryKernelReadyOnEveryGpu) {
  Runtime runtime = make_runtime(options());
  Result<PrewarmReport> report = prewarm(runtime, bundle_for(ptx_recipe(gpu_.cc)), "gpu-test.kiln");
  ASSERT_TRUE(report.ok()) << report.error().describe();
  const std::size_t kernels = kernel_checks().size() + 1;  // + noop
  EXPECT_EQ(report->kernels.size(), runtime.gpus().size() * kernels);
  // Each PTX image compiled whole as well, on every GPU: together they hold every kernel.
  std::size_t in_whole_images = 0;
  for (const WholeImageRecord& image : report->whole_images) {
    // Compiled now, or already whole in the cache (an image that cannot be split per kernel).
    EXPECT_TRUE(image.path == Path::JitPtx || image.path == Path::CacheHit) << image.image;
    in_whole_images += image.kernels;
  }
  EXPECT_EQ(in_whole_images, runtime.gpus().size() * kernels);
}

// kiln prewarm also compiles the PTX image whole into the cache: a later prepare_all takes every
// kernel from that one module, and each computes right.
TEST_F(GpuRuntime, PrewarmedWholeImagesServePrepareAll) {
  const Bytes& bundle = bundle_for(ptx_recipe(gpu_.cc));
  {
    Runtime first = make_runtime(options());
    Result<PrewarmReport> report = prewarm(first, bundle, "gpu-test.kiln");
    ASSERT_TRUE(report.ok()) << report.error().describe();
  }
  expect_whole_images_serve_prepare_all(bundle, options());
}

// A prepare_all that JIT-compiles kernels one by one compiles their images whole in the
// background; once the Module is gone (its destructor waits for that), the next runtime's
// prepare_all loads a module per image from the cache, and each kernel computes right.
TEST_F(GpuRuntime, PrepareAllLeavesWholeImagesForTheNextStart) {
  const Bytes& bundle = bundle_for(ptx_recipe(gpu_.cc));
  RuntimeOptions background = options();
  background.background_compile = true;
  {
    Runtime first = make_runtime(background);
    Module module = load(first, bundle);
    ASSERT_TRUE(module.prepare_all(0).ok());
    for (const KernelRecord& record : module.records()) EXPECT_EQ(record.path, Path::JitPtx) << record.kernel;
  }
  expect_whole_images_serve_prepare_all(bundle, background);
}

// The parameter sizes kiln reads from a cubin's .nv.info tables (so that a first launch need not
// ask the driver per parameter) are the ones cuFuncGetParamInfo gives, for every kernel of the
// test bundles and of the op library (when this build made its bundles), in cubins from the
// offline compiler, per kernel (--split-kernels) and from the driver's own PTX linker (the JIT).
TEST_F(GpuRuntime, CubinParameterTablesMatchTheDriver) {
  Runtime runtime = make_runtime(options());
  ASSERT_TRUE(runtime.driver()->make_current(0).ok());
  const kiln_gpu_test::CudaApi& cuda = *kiln_gpu_test::CudaApi::get();
  std::vector<std::pair<std::string, Bytes>> bundles = {{"aot", bundle_for(aot_recipe(gpu_.cc))},
                                                        {"split", bundle_for(split_recipe(gpu_.cc))},
                                                        {"ptx", bundle_for(ptx_recipe(gpu_.cc))}};
  for (const char* directory : {KILN_GPU_TEST_OPS_BUNDLES, KILN_GPU_TEST_BENCH_BUNDLES}) {
    if (!fs::is_directory(directory)) continue;
    for (const auto& item : fs::directory_iterator(directory)) {
      if (item.path().extension() != ".kiln") continue;
      std::ifstream file(item.path(), std::ios::binary);
      bundles.emplace_back(item.path().filename().string(), Bytes(std::istreambuf_iterator<char>(file), {}));
    }
  }
  std::size_t compared = 0;
  for (const auto& [name, bytes] : bundles) {
    Result<Bundle> bundle = Bundle::open(bytes, name);
    ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
    for (std::size_t index = 0; index < bundle->images().size(); ++index) {
      const ImageInfo& image = bundle->images()[index];
      if (image.duplicate_of || image.target.kind == ImageKind::Source) continue;
      if (image.target.kind == ImageKind::Cubin && image.target.arch.cc != gpu_.cc) continue;
      SCOPED_TRACE(name + " image " + std::to_string(index) + " (" + image.target.name() + ")");
      Result<Bytes> extracted = bundle->extract(index);
      ASSERT_TRUE(extracted.ok()) << extracted.error().describe();
      Bytes cubin = std::move(*extracted);
      if (image.target.kind == ImageKind::Ptx) {
        Result<Bytes> linked = runtime.driver()->link_ptx(0, as_text(cubin), Arch{gpu_.cc}, name, 0);
        ASSERT_TRUE(linked.ok()) << linked.error().describe();
        cubin = std::move(*linked);
      }
      CUmodule module = nullptr;
      kiln_gpu_test::check(cuda.module_load_data(&module, cubin.data()), "cuModuleLoadData");
      for (const std::string& kernel : image.mangled_kernels()) {
        CUfunction function = nullptr;
        kiln_gpu_test::check(cuda.module_get_function(&function, module, kernel.c_str()), "cuModuleGetFunction");
        std::vector<std::size_t> from_driver;
        for (std::size_t offset = 0, size = 0; cuda.function_parameter_info(function, from_driver.size(), &offset, &size) == CUDA_SUCCESS;) {
          from_driver.push_back(size);
        }
        const std::optional<std::vector<std::size_t>> table = elf::parameter_sizes(cubin, kernel);
        ASSERT_TRUE(table.has_value()) << kernel << " has no parameter table";
        EXPECT_EQ(*table, from_driver) << kernel;
        ++compared;
      }
      kiln_gpu_test::check(cuda.module_unload(module), "cuModuleUnload");
    }
  }
  std::printf("  compared the parameter sizes of %zu kernels in %zu bundles\n", compared, bundles.size());
  EXPECT_GT(compared, 0u);
}

// A thread that never made a context current launches through kiln: the launch makes the
// kernel's own context current when the driver asks for one, and the kernel computes right.
TEST_F(GpuRuntime, ALaunchFromAThreadWithoutAContextRuns) {
  Runtime runtime = make_runtime(options());
  Module module = load(runtime, bundle_for(aot_recipe(gpu_.cc)));
  Result<Kernel> kernel = module.kernel("saxpy", 0);
  ASSERT_TRUE(kernel.ok()) << kernel.error().describe();
  ASSERT_TRUE(runtime.driver()->make_current(0).ok());
  const int n = 4'099;
  const float a = -1.5f;
  const std::vector<float> x = random_floats(n, 4);
  const std::vector<float> y = random_floats(n, 5);
  DeviceBuffer<float> device_x(x);
  DeviceBuffer<float> device_y(y);
  Stream stream;
  std::optional<Result<void>> launched;
  std::thread([&] {
    launched = kernel->launch({blocks_for(n, 256)}, {256}, 0, stream.get(), a, device_x.get(), device_y.get(), n);
  }).join();
  ASSERT_TRUE(launched && launched->ok()) << (launched ? launched->error().describe() : "no launch");
  stream.synchronize();
  const std::vector<float> result = device_y.download();
  for (int i = 0; i < n; ++i) ASSERT_NEAR(result[i], a * x[i] + y[i], 1e-5f) << "saxpy[" << i << "]";
}

// The child half of ASecondProcessHitsTheCache: every kernel must come from the cache and compute right.
int run_child(const char* bundle_path, const char* cache_dir) {
  RuntimeOptions options;
  options.cache_dir = cache_dir;
  options.log_level = LogLevel::Info;
  Result<Runtime> runtime = Runtime::create(options);
  if (!runtime) {
    std::fprintf(stderr, "child: %s\n", runtime.error().describe().c_str());
    return 1;
  }
  Result<Module> module = runtime->load_file(bundle_path);
  if (!module) {
    std::fprintf(stderr, "child: %s\n", module.error().describe().c_str());
    return 1;
  }
  if (!runtime->driver()->make_current(0)) return 1;
  int failures = 0;
  try {
    Stream stream;
    for (const KernelCheck& check : kernel_checks()) {
      Result<Kernel> kernel = module->kernel(check.name, 0);
      if (!kernel) {
        std::fprintf(stderr, "child: %s\n", kernel.error().describe().c_str());
        ++failures;
        continue;
      }
      if (kernel->record().path != Path::CacheHit) {
        std::fprintf(stderr, "child: %s took %s, not cache-hit\n", check.name, path_name(kernel->record().path));
        ++failures;
      }
      if (::testing::AssertionResult result = check.run(*kernel, stream.get()); !result) {
        std::fprintf(stderr, "child: %s: %s\n", check.name, result.message());
        ++failures;
      }
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "child: %s\n", error.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string_view(argv[1]) == kChildFlag) return run_child(argv[2], argv[3]);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
