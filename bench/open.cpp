// What a start costs kiln before the driver sees an image, as a library grows: opening a bundle
// (header and tables checked; also the same bundle labelled format version 3, which has no kernel
// index for the reader to take) and Runtime::load, then the first kernel looked up by its mangled or
// its readable name, for bundles of 56 to 20,480 kernels over 8 architectures (Google Benchmark;
// no GPU: the runtime stands on a driver that does nothing, so only kiln's own work is timed).
//
//   kiln_bench_open [--benchmark_repetitions=5] [--benchmark_out=open.json --benchmark_out_format=json]
//
// The bundles are synthetic but shaped like a real library's: SOURCES images per architecture
// (seven sm_ cubins and one compute_ PTX), each listing the same 20 kernels on every architecture,
// as `kiln build` writes a library of SOURCES files. The images hold a few bytes each (nothing is
// decoded here); the tables are what is measured.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/bundle.hpp"
#include "kiln/bundle_format.hpp"
#include "kiln/runtime.hpp"

namespace {

constexpr int kKernelsPerSource = 20;
constexpr const char* kTargets[] = {"sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120", "compute_120"};

// mylib::s<source>_k<kernel><float>(float*, int), mangled.
std::string mangled_kernel(int source, int kernel) {
  const std::string name = "s" + std::to_string(source) + "_k" + std::to_string(kernel);
  return "_ZN5mylib" + std::to_string(name.size()) + name + "IfEEvPT_i";
}

const kiln::Bytes& synthetic_bundle(int sources) {
  static std::map<int, kiln::Bytes> made;
  kiln::Bytes& bundle = made[sources];
  if (!bundle.empty()) return bundle;
  std::vector<kiln::Image> images;
  for (const char* target : kTargets) {
    for (int source = 0; source < sources; ++source) {
      kiln::Image image{*kiln::parse_target(target), {}, {}};
      for (int kernel = 0; kernel < kKernelsPerSource; ++kernel) image.kernels.push_back(mangled_kernel(source, kernel));
      const std::string bytes = std::string(target) + " image of source " + std::to_string(source);
      image.bytes.assign(bytes.begin(), bytes.end());
      images.push_back(std::move(image));
    }
  }
  kiln::Result<kiln::Bytes> written = kiln::write_bundle(images, {}, kiln::WriteOptions{.codec = kiln::Codec::None});
  if (!written) {
    std::fprintf(stderr, "kiln_bench_open: %s\n", written.error().describe().c_str());
    std::exit(1);
  }
  bundle = std::move(*written);
  return bundle;
}

// The same bundle as a kiln before format version 4 wrote it: the header says version 3 and names
// no kernel index (its bytes stay, as padding), so the reader works the index out from the lists.
const kiln::Bytes& version_3_bundle(int sources) {
  namespace f = kiln::format;
  static std::map<int, kiln::Bytes> made;
  kiln::Bytes& bundle = made[sources];
  if (!bundle.empty()) return bundle;
  bundle = synthetic_bundle(sources);
  f::Header header = f::decode<f::Header>(bundle.data());
  header.format_version = 3;
  header.kernel_count = 0;
  header.index_offset = 0;
  header.header_checksum = 0;
  f::encode(header, bundle.data());
  header.header_checksum = kiln::checksum64(kiln::ByteView(bundle).first(f::kHeaderSize));
  f::encode(header, bundle.data());
  return bundle;
}

// A GPU of compute capability 9.0 whose modules, functions and launches are placeholders.
class NullDriver final : public kiln::Driver {
 public:
  int version() const noexcept override { return 13000; }
  const std::vector<kiln::GpuInfo>& gpus() const noexcept override { return gpus_; }
  kiln::Result<std::optional<int>> current_device() const override { return std::optional<int>(0); }
  kiln::Result<CUcontext> context(int) override { return reinterpret_cast<CUcontext>(0x1000); }
  kiln::Result<void> make_current(int) override { return {}; }
  kiln::Result<CUmodule> load_module(int, kiln::ByteView) override { return reinterpret_cast<CUmodule>(0x2000); }
  void unload_module(int, CUmodule) noexcept override {}
  kiln::Result<CUfunction> function(CUmodule, const std::string&) override { return reinterpret_cast<CUfunction>(0x3000); }
  kiln::Result<std::optional<std::vector<std::size_t>>> parameter_sizes(CUfunction) override {
    return std::optional<std::vector<std::size_t>>(std::vector<std::size_t>{8, 4});
  }
  kiln::Result<kiln::Bytes> link_ptx(int, std::string_view, kiln::Arch, std::string_view, unsigned) override {
    return kiln::make_error(kiln::Component::Driver, "the null driver compiles nothing");
  }
  kiln::Result<void> launch(CUcontext, CUfunction, kiln::Dim3, kiln::Dim3, unsigned, CUstream, void**) override {
    return {};
  }

 private:
  std::vector<kiln::GpuInfo> gpus_{{0, "null GPU", {9, 0}}};
};

class NoJit final : public kiln::JitCompiler {
 public:
  kiln::Result<std::string> identity(kiln::ImageKind) override { return std::string("none"); }
  kiln::Result<kiln::Bytes> compile(const kiln::JitRequest&) override {
    return kiln::make_error(kiln::Component::Runtime, "no JIT in this benchmark");
  }
};

kiln::Runtime null_runtime() {
  kiln::RuntimeOptions options;
  options.cache_disabled = true;
  return *kiln::Runtime::create(std::make_shared<NullDriver>(), std::make_shared<NoJit>(), options);
}

void set_counters(benchmark::State& state, int sources) {
  state.counters["kernels"] = sources * kKernelsPerSource;
  state.counters["images"] = sources * static_cast<int>(std::size(kTargets));
  state.counters["bundle_KiB"] = static_cast<double>(synthetic_bundle(sources).size()) / 1024;
}

template <bool kVersion3>
void BM_OpenTables(benchmark::State& state) {
  const int sources = static_cast<int>(state.range(0));
  const kiln::Bytes& bytes = kVersion3 ? version_3_bundle(sources) : synthetic_bundle(sources);
  for (auto _ : state) {
    kiln::Result<kiln::Bundle> bundle = kiln::Bundle::open(bytes, "bench", kiln::OpenCheck::TablesThenImagesOnUse);
    if (!bundle) state.SkipWithError(bundle.error().message.c_str());
    benchmark::DoNotOptimize(bundle);
  }
  set_counters(state, sources);
}

// Runtime::load, then the first kernel made ready (selection, the placeholder module) by `name`.
template <bool kReadable>
void BM_LoadAndFirstKernel(benchmark::State& state) {
  const int sources = static_cast<int>(state.range(0));
  const kiln::Bytes& bytes = synthetic_bundle(sources);
  const kiln::Runtime runtime = null_runtime();
  const std::string name = kReadable ? "mylib::s0_k3<float>" : mangled_kernel(0, 3);
  // Checked once, untimed: a record spells its readable name, which the timed start must not.
  kiln::Result<kiln::Kernel> checked = runtime.load(bytes, "bench")->kernel(name);
  if (!checked || checked->record().mangled != mangled_kernel(0, 3)) state.SkipWithError("the wrong kernel was found");
  for (auto _ : state) {
    kiln::Result<kiln::Module> module = runtime.load(bytes, "bench");
    kiln::Result<kiln::Kernel> kernel = module->kernel(name);
    benchmark::DoNotOptimize(kernel);
  }
  set_counters(state, sources);
}

void sizes(benchmark::internal::Benchmark* benchmark) {
  for (int sources : {3, 32, 128, 512, 1024}) benchmark->Arg(sources);
  benchmark->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_OpenTables<false>)->Name("BM_OpenTables")->Apply(sizes);
BENCHMARK(BM_OpenTables<true>)->Name("BM_OpenTablesOfAVersion3Bundle")->Apply(sizes);
BENCHMARK(BM_LoadAndFirstKernel<false>)->Name("BM_LoadAndFirstKernelByMangledName")->Apply(sizes);
BENCHMARK(BM_LoadAndFirstKernel<true>)->Name("BM_LoadAndFirstKernelByReadableName")->Apply(sizes);

}  // namespace

BENCHMARK_MAIN();
