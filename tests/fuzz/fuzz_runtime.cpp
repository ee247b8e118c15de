// Fuzz target: any bytes loaded by the runtime, as an application would load a bundle, on two
// GPUs (9.0 and 8.6) that a do-nothing driver stands for; then kernels looked up by mangled and by
// readable name and launched once (no arguments), and every kernel made ready. What the runtime
// builds from a bundle's tables (its kernel index, the readable names), what it reads from images
// (cubin parameter tables, PTX split per kernel) and selection must give an Error or a kernel,
// never a crash, a hang or an out-of-bounds read; a kernel found by its readable name must be the
// kernel of that name.
//
// Input: one mode byte, then the bundle. Mode bit 0 re-seals the checksums first, so that the
// fuzzer's mutations get past them to the tables and images; bit 1 leaves each image's
// stored-bytes checksum as it is. Bit 2 forces the JIT (KILN_FORCE_JIT's option), so that PTX
// images are split even where a cubin fits.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bundle_seal.hpp"
#include "kiln/bundle.hpp"
#include "kiln/runtime.hpp"

namespace {

// Keeps executions fast, as in fuzz_bundle: larger images are the unit tests' business.
constexpr std::uint64_t kLargestImage = std::uint64_t{16} << 20;
constexpr std::size_t kKernelsLookedUp = 8;

void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz_runtime: invariant broken: %s\n", what);
    std::abort();
  }
}

// Modules, functions and launches are placeholders; "compiling" PTX returns its text.
class NullDriver final : public kiln::Driver {
 public:
  int version() const noexcept override { return 13000; }
  const std::vector<kiln::GpuInfo>& gpus() const noexcept override { return gpus_; }
  kiln::Result<std::optional<int>> current_device() const override { return std::optional<int>(); }
  kiln::Result<CUcontext> context(int) override { return reinterpret_cast<CUcontext>(0x1000); }
  kiln::Result<void> make_current(int) override { return {}; }
  kiln::Result<CUmodule> load_module(int, kiln::ByteView image) override {
    if (image.empty()) return kiln::make_error(kiln::Component::Driver, "empty image");
    return reinterpret_cast<CUmodule>(0x2000);
  }
  void unload_module(int, CUmodule) noexcept override {}
  kiln::Result<CUfunction> function(CUmodule, const std::string&) override { return reinterpret_cast<CUfunction>(0x3000); }
  kiln::Result<std::optional<std::vector<std::size_t>>> parameter_sizes(CUfunction) override {
    return std::optional<std::vector<std::size_t>>();
  }
  kiln::Result<kiln::Bytes> link_ptx(int, std::string_view ptx, kiln::Arch, std::string_view, unsigned) override {
    return kiln::Bytes(ptx.begin(), ptx.end());
  }
  kiln::Result<void> launch(CUcontext, CUfunction, kiln::Dim3, kiln::Dim3, unsigned, CUstream, void**) override {
    return {};
  }

 private:
  std::vector<kiln::GpuInfo> gpus_{{0, "fuzz GPU 9.0", {9, 0}}, {1, "fuzz GPU 8.6", {8, 6}}};
};

class EchoJit final : public kiln::JitCompiler {
 public:
  kiln::Result<std::string> identity(kiln::ImageKind) override { return std::string("echo 1"); }
  kiln::Result<kiln::Bytes> compile(const kiln::JitRequest& request) override {
    if (request.kind != kiln::ImageKind::Ptx) return kiln::make_error(kiln::Component::Nvrtc, "no source JIT here");
    return kiln::Bytes(request.input.begin(), request.input.end());
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  kiln::Bytes bytes(data + 1, data + size);
  if (data[0] & 1) kiln::testing::seal(bytes, {.image_checksums = (data[0] & 2) == 0});

  kiln::RuntimeOptions options;
  options.cache_disabled = true;
  options.log_level = kiln::LogLevel::Off;
  options.jit_threads = 1;
  options.force_jit = (data[0] & 4) != 0;
  const kiln::Result<kiln::Runtime> runtime =
      kiln::Runtime::create(std::make_shared<NullDriver>(), std::make_shared<EchoJit>(), options);
  require(runtime.ok(), "a runtime over the null driver starts");
  const kiln::Result<kiln::Module> module = runtime->load(bytes, "fuzz");
  if (!module) {
    require(!module.error().message.empty(), "a load error says what failed");
    return 0;
  }
  for (const kiln::ImageInfo& image : module->bundle().images()) {
    if (image.raw_size > kLargestImage) return 0;
  }

  // A few kernels by their mangled names, each then by the readable name its record gives.
  std::vector<std::string> mangled;
  for (const kiln::ImageInfo& image : module->bundle().images()) {
    for (std::string_view name : image.kernels) {
      if (mangled.size() < kKernelsLookedUp) mangled.emplace_back(name);
    }
  }
  for (std::size_t i = 0; i < mangled.size(); ++i) {
    const int device = static_cast<int>(i % 2);
    const kiln::Result<kiln::Kernel> kernel = module->kernel(mangled[i], device);
    if (!kernel) {
      require(!kernel.error().message.empty(), "a kernel error says what failed");
      continue;
    }
    // The first launch reads the kernel's parameter table from its cubin.
    const kiln::Result<void> launched = kernel->launch_raw({1, 1, 1}, {1, 1, 1}, 0, nullptr, nullptr, nullptr, 0);
    if (!launched) require(!launched.error().message.empty(), "a launch error says what failed");
    const std::string readable = kernel->record().kernel;
    const kiln::Result<kiln::Kernel> again = module->kernel(readable, device);
    // A name that is some kernel's mangled name finds that kernel first, which may fail on its
    // own: in a bundle that lists both _Z5wgmmav and "wgmma()", the first one's readable name is
    // the second one's mangled name (no compiler makes such a pair; a bundle may list it).
    const bool another_kernels_mangled_name =
        readable != kernel->record().mangled && module->bundle().kernel_index().find(readable).has_value();
    if (another_kernels_mangled_name) {
      require(again.ok() ? again->record().mangled == readable : !again.error().message.empty(),
              "a name that is a kernel's mangled name finds that kernel");
      continue;
    }
    require(again.ok(), "a kernel is found by the readable name its record gives");
    require(again->record().kernel == readable || again->record().mangled == readable,
            "the readable name finds the kernel of that name");
  }
  const kiln::Result<kiln::Kernel> missing = module->kernel("fuzz::no_such_kernel<int>", 0);
  require(!missing.ok(), "a name the bundle lacks is an error");

  for (int device : {0, 1}) {
    const kiln::Result<void> all = module->prepare_all(device);
    if (!all) require(!all.error().message.empty(), "a prepare_all error says what failed");
  }
  const std::vector<std::string> names = module->kernel_names();
  for (const kiln::KernelRecord& record : module->records()) {
    require(std::find(names.begin(), names.end(), record.kernel) != names.end(), "a record names a listed kernel");
  }
  return 0;
}
