// The runtime end to end without a GPU: real kernels compiled by kiln::compile() into a real
// bundle, the real JitCompiler (PTX through the driver's linker, source through NVRTC), and a
// Driver double whose "linker" is the toolkit's ptxas and whose "loader" checks that it was
// given a cubin holding the kernel. What only a GPU can tell (the results) is in tests/gpu.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "kiln/compiler.hpp"
#include "kiln/runtime.hpp"

namespace {

namespace fs = std::filesystem;
using namespace kiln;

const fs::path kPtxas = "/usr/local/cuda/bin/ptxas";

fs::path scratch_directory() {
  fs::path directory = fs::temp_directory_path() / ("kiln-runtime-pipeline-" + std::to_string(::getpid()));
  fs::create_directories(directory);
  return directory;
}

class PtxasDriver final : public Driver {
 public:
  explicit PtxasDriver(ComputeCapability cc) : gpus_{GpuInfo{0, "Pretend GPU", cc}} {}

  int version() const noexcept override { return 13000; }
  const std::vector<GpuInfo>& gpus() const noexcept override { return gpus_; }
  Result<std::optional<int>> current_device() const override { return std::optional<int>{}; }
  Result<CUcontext> context(int) override { return reinterpret_cast<CUcontext>(std::uintptr_t{0x1000}); }
  Result<void> make_current(int) override { return {}; }

  Result<CUmodule> load_module(int, ByteView image) override {
    if (image.size() < 4 || std::memcmp(image.data(), "\x7f" "ELF", 4) != 0) {
      return make_error(Component::Driver, "cuModuleLoadData failed: not a cubin");
    }
    std::lock_guard lock(mutex_);
    cubins_.emplace_back(as_text(image));
    return reinterpret_cast<CUmodule>(&cubins_.back());
  }
  void unload_module(int, CUmodule) noexcept override {}
  std::size_t loads() {
    std::lock_guard lock(mutex_);
    return cubins_.size();
  }
  std::vector<unsigned> compile_threads() {
    std::lock_guard lock(mutex_);
    return compile_threads_;
  }

  // A cubin's string table holds each kernel's name, NUL-terminated.
  Result<CUfunction> function(CUmodule module, const std::string& name) override {
    const std::string& cubin = *reinterpret_cast<const std::string*>(module);
    if (cubin.find(name + '\0') == std::string::npos) {
      return make_error(Component::Driver, "cuModuleGetFunction failed: CUDA_ERROR_NOT_FOUND", "kernel " + name);
    }
    return reinterpret_cast<CUfunction>(std::uintptr_t{0x2000});
  }
  Result<std::optional<std::vector<std::size_t>>> parameter_sizes(CUfunction) override {
    return std::optional<std::vector<std::size_t>>{};
  }

  Result<Bytes> link_ptx(int, std::string_view ptx, Arch target, std::string_view, unsigned compile_threads) override {
    const fs::path base = scratch_directory() / ("piece-" + std::to_string(links_++));
    std::ofstream(fs::path(base).replace_extension(".ptx"), std::ios::binary) << ptx;
    {
      std::lock_guard lock(mutex_);
      compile_threads_.push_back(compile_threads);
    }
    // ptxas's own --split-compile is what CU_JIT_SPLIT_COMPILE asks of the driver's compiler.
    const std::string command = kPtxas.string() + " -arch=" + target.sm_name() + " --split-compile " +
                                std::to_string(compile_threads) + " " +
                                fs::path(base).replace_extension(".ptx").string() + " -o " +
                                fs::path(base).replace_extension(".cubin").string();
    if (std::system(command.c_str()) != 0) return make_error(Component::Driver, "ptxas failed: " + command);
    std::ifstream in(fs::path(base).replace_extension(".cubin"), std::ios::binary);
    std::stringstream cubin;
    cubin << in.rdbuf();
    const std::string bytes = cubin.str();
    return Bytes(bytes.begin(), bytes.end());
  }

  Result<void> launch(CUcontext, CUfunction, Dim3, Dim3, unsigned, CUstream, void**) override { return {}; }

  std::atomic<int> links_{0};

 private:
  std::vector<GpuInfo> gpus_;
  std::mutex mutex_;
  std::deque<std::string> cubins_;
  std::vector<unsigned> compile_threads_;  // of each link, in order
};

class RuntimePipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kPtxas)) GTEST_SKIP() << kPtxas << " is not installed";
    if (Result<NvrtcInfo> nvrtc = nvrtc_info(); !nvrtc) GTEST_SKIP() << nvrtc.error().describe();
    CompileOptions options;
    options.cubin_archs = {Arch{{8, 0}}};
    options.ptx_archs = {Arch{{8, 0}}};
    options.embed_source = true;
    const fs::path data = fs::path(KILN_SOURCE_DIR) / "tests/gpu/data";
    Result<CompileOutput> compiled = compile({data / "saxpy.cu", data / "axpb.cu"}, options);
    ASSERT_TRUE(compiled.ok()) << compiled.error().describe();
    Result<Bytes> bundle = write_bundle(compiled->images, BundleMetadata{});
    ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
    bundle_ = std::move(*bundle);
    options_.cache_dir = scratch_directory() / "cache";
    options_.log_level = LogLevel::Off;
  }
  void TearDown() override { fs::remove_all(scratch_directory()); }

  // The test bundle loaded by a runtime over `driver` (the Module keeps the runtime alive).
  Module load(const std::shared_ptr<PtxasDriver>& driver) {
    Result<Runtime> runtime = Runtime::create(driver, make_jit_compiler(driver), options_);
    if (!runtime) throw std::runtime_error(runtime.error().describe());
    Result<Module> module = runtime->load(bundle_, "pipeline.kiln");
    if (!module) throw std::runtime_error(module.error().describe());
    return std::move(*module);
  }

  Bytes bundle_;
  RuntimeOptions options_;
};

const std::vector<std::string> kKernels = {"saxpy", "axpb<float>", "axpb<double>", "axpb<__half>"};

TEST_F(RuntimePipeline, PtxIsSplitAndLinkedPerKernel) {
  auto driver = std::make_shared<PtxasDriver>(ComputeCapability{9, 0});  // the sm_80 cubin does not run on 9.0
  Module module = load(driver);
  for (const std::string& name : kKernels) {
    Result<Kernel> kernel = module.kernel(name, 0);
    ASSERT_TRUE(kernel.ok()) << kernel.error().describe();
    EXPECT_EQ(kernel->record().path, Path::JitPtx) << name;
    EXPECT_EQ(kernel->record().image, "compute_80");
  }
  EXPECT_EQ(driver->links_.load(), static_cast<int>(kKernels.size()));  // one link per kernel, not per module
}

// prepare_all links each kernel on its own, then each PTX image whole in the background; the next
// runtime's prepare_all loads a module per image from the cache, and every kernel is in it.
TEST_F(RuntimePipeline, PrepareAllLeavesWholeImagesForTheNextStart) {
  options_.background_compile = true;
  {
    auto driver = std::make_shared<PtxasDriver>(ComputeCapability{9, 0});
    Module module = load(driver);
    ASSERT_TRUE(module.prepare_all(0).ok());
    EXPECT_EQ(driver->loads(), kKernels.size());
    module.wait_for_background_compiles();
    EXPECT_EQ(driver->links_.load(), static_cast<int>(kKernels.size()) + 2) << "each kernel, then each of 2 images";
    // One thread for a kernel's own PTX; every CPU for a whole image's kernels (0).
    std::vector<unsigned> threads = driver->compile_threads();
    std::sort(threads.begin(), threads.end());
    EXPECT_EQ(threads, (std::vector<unsigned>{0, 0, 1, 1, 1, 1}));
  }
  auto driver = std::make_shared<PtxasDriver>(ComputeCapability{9, 0});
  Module module = load(driver);
  ASSERT_TRUE(module.prepare_all(0).ok());
  EXPECT_EQ(driver->links_.load(), 0);
  EXPECT_EQ(driver->loads(), 2u) << "saxpy.cu's and axpb.cu's images, each whole";
  ASSERT_EQ(module.records().size(), kKernels.size());
  for (const KernelRecord& record : module.records()) EXPECT_EQ(record.path, Path::CacheHit) << record.kernel;
}

TEST_F(RuntimePipeline, SourceIsCompiledWithNvrtcThenCached) {
  // Source only: strip the cubins and PTX from the bundle.
  Result<Bundle> opened = Bundle::open(bundle_, "pipeline.kiln");
  ASSERT_TRUE(opened.ok()) << opened.error().describe();
  std::vector<Image> sources;
  for (std::size_t index = 0; index < opened->images().size(); ++index) {
    const ImageInfo& info = opened->images()[index];
    if (info.target.kind != ImageKind::Source) continue;
    Result<Bytes> bytes = opened->extract(index);
    ASSERT_TRUE(bytes.ok()) << bytes.error().describe();
    sources.push_back(Image{info.target, info.mangled_kernels(), std::move(*bytes)});
  }
  Result<Bytes> source_bundle = write_bundle(sources, BundleMetadata{});
  ASSERT_TRUE(source_bundle.ok()) << source_bundle.error().describe();

  for (Path expected : {Path::JitSource, Path::CacheHit}) {
    auto driver = std::make_shared<PtxasDriver>(ComputeCapability{9, 0});
    Result<Runtime> runtime = Runtime::create(driver, make_jit_compiler(driver), options_);
    ASSERT_TRUE(runtime.ok()) << runtime.error().describe();
    Result<Module> module = runtime->load(*source_bundle, "source.kiln");
    ASSERT_TRUE(module.ok()) << module.error().describe();
    ASSERT_TRUE(module->prepare_all(0).ok());
    ASSERT_EQ(module->records().size(), kKernels.size());
    for (const KernelRecord& record : module->records()) {
      EXPECT_EQ(record.path, expected) << record.kernel;
      EXPECT_EQ(record.image, "source");
    }
    EXPECT_EQ(driver->links_.load(), 0);
  }
}

}  // namespace
