// Launch overhead: an empty kernel launched through kiln::Kernel::launch against bare
// cuLaunchKernel of the same CUfunction with the same arguments (Google Benchmark).
//
//   kiln_bench_launch [--benchmark_repetitions=10] [--benchmark_out=launch.json --benchmark_out_format=json]
//
// Each benchmark iteration is one launch on one stream; after every kBatch launches the stream is
// synchronized with the timer paused, so the queue never fills and blocks a launch. Time and CPU
// are per launch. At the end a summary prints kiln's overhead over cuLaunchKernel (medians over
// repetitions), which should stay within 100 ns.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cuda_api.hpp"
#include "kiln/bundles/bench_kernels.hpp"
#include "kiln/runtime.hpp"
#include "support.hpp"

namespace {

using namespace kiln_bench;

// Well under the driver's queue of pending launches, so launches never wait for the GPU.
constexpr int kBatch = 256;
constexpr double kTargetOverheadNs = 100;

// Everything the benchmarks share, made once before any of them runs.
struct Fixture {
  CudaApi api;
  CUstream stream = nullptr;
  kiln::Runtime runtime;
  kiln::Module module;
  kiln::Kernel no_arguments;
  kiln::Kernel four_arguments;
  CUdeviceptr buffer = 0;  // what the four-argument kernel gets for its pointers (it never touches it)

  static std::unique_ptr<Fixture> create() {
    CudaApi api = load_cuda_api();
    make_primary_context_current(api, 0);
    kiln::Runtime runtime = unwrap(kiln::Runtime::create(), "kiln::Runtime::create");
    kiln::Module module = unwrap(runtime.load(kiln::bundles::bench_kernels(), "bench_kernels"), "kiln::Runtime::load");
    kiln::Kernel no_arguments = unwrap(module.kernel("empty_no_arguments"), "kernel empty_no_arguments");
    kiln::Kernel four_arguments = unwrap(module.kernel("empty_four_arguments"), "kernel empty_four_arguments");
    auto fixture = std::unique_ptr<Fixture>(new Fixture{api, nullptr, std::move(runtime), std::move(module),
                                                        std::move(no_arguments), std::move(four_arguments)});
    api.check(api.cuStreamCreate_fn(&fixture->stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    api.check(api.cuMemAlloc_fn(&fixture->buffer, 4096), "cuMemAlloc");
    std::fprintf(stderr, "launch: kernels loaded through path %s; batches of %d launches\n",
                 kiln::path_name(fixture->four_arguments.record().path), kBatch);
    return fixture;
  }
};
Fixture* g_fixture = nullptr;

// One launch per iteration, timed by the library. Every kBatch launches the stream is drained
// with the timer paused, so the queue never fills and makes a launch wait for the GPU.
template <class Launch>
void run_launches(benchmark::State& state, Launch&& launch) {
  const CudaApi& api = g_fixture->api;
  std::int64_t launched = 0;
  for (auto _ : state) {
    launch();
    if (++launched % kBatch == 0) {
      state.PauseTiming();
      api.check(api.cuStreamSynchronize_fn(g_fixture->stream), "cuStreamSynchronize");
      state.ResumeTiming();
    }
  }
  api.check(api.cuStreamSynchronize_fn(g_fixture->stream), "cuStreamSynchronize");
  state.SetItemsProcessed(launched);
}

void kiln_launch_no_arguments(benchmark::State& state) {
  const kiln::Kernel& kernel = g_fixture->no_arguments;
  run_launches(state, [&] { unwrap(kernel.launch(kiln::Dim3{1}, kiln::Dim3{32}, 0, g_fixture->stream), "launch"); });
}

void cuLaunchKernel_no_arguments(benchmark::State& state) {
  const CudaApi& api = g_fixture->api;
  const auto function = static_cast<CUfunction>(g_fixture->no_arguments.native_handle());
  run_launches(state, [&] {
    api.check(api.cuLaunchKernel_fn(function, 1, 1, 1, 32, 1, 1, 0, g_fixture->stream, nullptr, nullptr),
              "cuLaunchKernel");
  });
}

void kiln_launch_four_arguments(benchmark::State& state) {
  const kiln::Kernel& kernel = g_fixture->four_arguments;
  const CUdeviceptr in = g_fixture->buffer, out = g_fixture->buffer;
  const long long count = 1024;
  const float scale = 2.0f;
  run_launches(state, [&] {
    unwrap(kernel.launch(kiln::Dim3{1}, kiln::Dim3{32}, 0, g_fixture->stream, in, out, count, scale), "launch");
  });
}

void cuLaunchKernel_four_arguments(benchmark::State& state) {
  const CudaApi& api = g_fixture->api;
  const auto function = static_cast<CUfunction>(g_fixture->four_arguments.native_handle());
  CUdeviceptr in = g_fixture->buffer, out = g_fixture->buffer;
  long long count = 1024;
  float scale = 2.0f;
  run_launches(state, [&] {
    void* arguments[] = {&in, &out, &count, &scale};
    api.check(api.cuLaunchKernel_fn(function, 1, 1, 1, 32, 1, 1, 0, g_fixture->stream, arguments, nullptr),
              "cuLaunchKernel");
  });
}

BENCHMARK(kiln_launch_no_arguments)->Unit(benchmark::kNanosecond);
BENCHMARK(cuLaunchKernel_no_arguments)->Unit(benchmark::kNanosecond);
BENCHMARK(kiln_launch_four_arguments)->Unit(benchmark::kNanosecond);
BENCHMARK(cuLaunchKernel_four_arguments)->Unit(benchmark::kNanosecond);

// The console report as usual, plus each benchmark's median time per launch for the summary.
class SummarizingReporter : public benchmark::ConsoleReporter {
 public:
  using ConsoleReporter::ConsoleReporter;

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      const std::string& benchmark = run.run_name.function_name;
      if (run.run_type == Run::RT_Iteration) {
        repetitions_[benchmark].push_back(run.GetAdjustedRealTime());
      } else if (run.aggregate_name == "median") {
        reported_medians_[benchmark] = run.GetAdjustedRealTime();
      }
    }
  }

  // Nanoseconds per launch: the library's median over repetitions where it computed one (it does
  // with --benchmark_repetitions), else the median of the runs; nullopt if it did not run.
  [[nodiscard]] std::optional<double> median_ns(const std::string& benchmark) const {
    if (const auto found = reported_medians_.find(benchmark); found != reported_medians_.end()) return found->second;
    const auto found = repetitions_.find(benchmark);
    if (found == repetitions_.end()) return std::nullopt;
    std::vector<double> values = found->second;
    std::sort(values.begin(), values.end());
    const std::size_t middle = values.size() / 2;
    return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
  }

 private:
  std::map<std::string, std::vector<double>> repetitions_;
  std::map<std::string, double> reported_medians_;
};

// kiln's overhead per launch over cuLaunchKernel: whether it is within the target, or nullopt
// where --benchmark_filter left one of the pair out.
std::optional<bool> summarize(const SummarizingReporter& reporter, const char* arguments) {
  const std::optional<double> kiln = reporter.median_ns(std::string("kiln_launch_") + arguments);
  const std::optional<double> bare = reporter.median_ns(std::string("cuLaunchKernel_") + arguments);
  if (!kiln || !bare) return std::nullopt;
  const double overhead = *kiln - *bare;
  const bool met = overhead <= kTargetOverheadNs;
  std::printf("launch, %-15s kiln %8.1f ns, cuLaunchKernel %8.1f ns, overhead %+7.1f ns (target <= %.0f ns: %s)\n",
              arguments, *kiln, *bare, overhead, kTargetOverheadNs, met ? "met" : "NOT met");
  return met;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  std::unique_ptr<Fixture> fixture;
  try {
    fixture = Fixture::create();
  } catch (const NoGpu& no_gpu) {
    std::fprintf(stderr, "kiln_bench_launch: no GPU: %s; nothing measured\n", no_gpu.what());
    return kExitNoGpu;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kiln_bench_launch: %s\n", error.what());
    return 1;
  }
  g_fixture = fixture.get();
  // Colours only on a terminal: the output is kept in files by bench/run-gpu.sh.
  SummarizingReporter reporter(isatty(STDOUT_FILENO) != 0 ? benchmark::ConsoleReporter::OO_ColorTabular
                                                          : benchmark::ConsoleReporter::OO_Tabular);
  try {
    benchmark::RunSpecifiedBenchmarks(&reporter);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kiln_bench_launch: %s\n", error.what());
    return 1;
  }
  benchmark::Shutdown();
  bool compared = false, all_met = true;
  for (const char* arguments : {"no_arguments", "four_arguments"}) {
    if (const std::optional<bool> met = summarize(reporter, arguments)) {
      compared = true;
      all_met = all_met && *met;
    }
  }
  // A missed target is a finding to report, not a failure of the program.
  std::printf("launch: overhead target %s\n", !compared ? "not measured (a pair was filtered out)"
                                              : all_met ? "met"
                                                        : "NOT met");
  return 0;
}
