// Launch overhead: an empty kernel launched through kiln::Kernel::launch against bare
// cuLaunchKernel of the same CUfunction with the same arguments (Google Benchmark).
//
//   kiln_bench_launch [--benchmark_repetitions=10] [--benchmark_out=launch.json --benchmark_out_format=json]
//
// Each benchmark iteration is one launch on one stream; after every kBatch launches the stream is
// synchronized with the timer paused, so the queue never fills and blocks a launch. Time and CPU
// are per launch. At the end a summary prints kiln's overhead over cuLaunchKernel (medians over
// repetitions), which should stay within 100 ns; then a paired measurement, blocks of kiln and
// bare launches alternating, whose median difference and confidence interval settle what the
// separate runs (each with a few hundred ns of spread) cannot.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
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

// What a failed kiln launch throws; the message is made only then, so a launch that succeeds
// costs the harness nothing (the bare side's api.check takes a C string for the same reason).
void check_launch(const kiln::Result<void>& result) {
  if (!result) throw std::runtime_error("kiln::Kernel::launch: " + result.error().describe());
}

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
  run_launches(state, [&] { check_launch(kernel.launch(kiln::Dim3{1}, kiln::Dim3{32}, 0, g_fixture->stream)); });
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
    check_launch(kernel.launch(kiln::Dim3{1}, kiln::Dim3{32}, 0, g_fixture->stream, in, out, count, scale));
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

// Prints kiln's overhead per launch over cuLaunchKernel from the separate runs' medians;
// nothing where --benchmark_filter left one of the pair out.
void summarize(const SummarizingReporter& reporter, const char* arguments) {
  const std::optional<double> kiln = reporter.median_ns(std::string("kiln_launch_") + arguments);
  const std::optional<double> bare = reporter.median_ns(std::string("cuLaunchKernel_") + arguments);
  if (!kiln || !bare) return;
  const double overhead = *kiln - *bare;
  std::printf("launch, %-15s kiln %8.1f ns, cuLaunchKernel %8.1f ns, overhead %+7.1f ns (target <= %.0f ns: %s)\n",
              arguments, *kiln, *bare, overhead, kTargetOverheadNs, overhead <= kTargetOverheadNs ? "met" : "NOT met");
}

// kiln minus bare, in ns per launch: rounds of one block of each, the order swapped every round
// and the stream drained after each block, so a drift of the machine falls on both sides. The
// median of the rounds' differences, with a 95% confidence interval from order statistics.
struct PairedResult {
  double median = 0;
  double low = 0;
  double high = 0;
};
template <class Kiln, class Bare>
PairedResult paired(const Kiln& kiln_launch, const Bare& bare_launch) {
  using Clock = std::chrono::steady_clock;
  constexpr int kRounds = 2000;
  constexpr int kBlock = 64;
  const CudaApi& api = g_fixture->api;
  auto block = [&](bool kiln_side) {
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < kBlock; ++i) kiln_side ? kiln_launch() : bare_launch();
    const double nanoseconds = std::chrono::duration<double, std::nano>(Clock::now() - start).count() / kBlock;
    api.check(api.cuStreamSynchronize_fn(g_fixture->stream), "cuStreamSynchronize");
    return nanoseconds;
  };
  std::vector<double> differences;
  for (int round = 0; round < kRounds; ++round) {
    const bool kiln_first = round % 2 == 0;
    const double first = block(kiln_first);
    const double second = block(!kiln_first);
    differences.push_back(kiln_first ? first - second : second - first);
  }
  std::sort(differences.begin(), differences.end());
  const auto n = static_cast<double>(differences.size());
  const auto half_width = static_cast<std::size_t>(std::ceil(1.96 * std::sqrt(n) / 2));
  const std::size_t middle = differences.size() / 2;
  return {differences[middle], differences[middle - half_width], differences[middle + half_width]};
}

// Prints the paired result for one argument list; whether its median is within the target.
bool report_paired(const char* arguments, const PairedResult& result) {
  const bool met = result.median <= kTargetOverheadNs;
  std::printf("launch paired, %-15s kiln - cuLaunchKernel %+7.1f ns per launch (95%% CI %+.1f .. %+.1f ns; "
              "2000 rounds of 64) (target <= %.0f ns: %s)\n",
              arguments, result.median, result.low, result.high, kTargetOverheadNs, met ? "met" : "NOT met");
  return met;
}

bool run_paired() {
  const CudaApi& api = g_fixture->api;
  const kiln::Kernel& none = g_fixture->no_arguments;
  const auto none_function = static_cast<CUfunction>(none.native_handle());
  const bool none_met = report_paired(
      "no_arguments",
      paired([&] { check_launch(none.launch(kiln::Dim3{1}, kiln::Dim3{32}, 0, g_fixture->stream)); },
             [&] {
               api.check(api.cuLaunchKernel_fn(none_function, 1, 1, 1, 32, 1, 1, 0, g_fixture->stream, nullptr, nullptr),
                         "cuLaunchKernel");
             }));
  const kiln::Kernel& four = g_fixture->four_arguments;
  const auto four_function = static_cast<CUfunction>(four.native_handle());
  CUdeviceptr in = g_fixture->buffer, out = g_fixture->buffer;
  long long count = 1024;
  float scale = 2.0f;
  const bool four_met = report_paired(
      "four_arguments",
      paired([&] { check_launch(four.launch(kiln::Dim3{1}, kiln::Dim3{32}, 0, g_fixture->stream, in, out, count, scale)); },
             [&] {
               void* arguments[] = {&in, &out, &count, &scale};
               api.check(api.cuLaunchKernel_fn(four_function, 1, 1, 1, 32, 1, 1, 0, g_fixture->stream, arguments, nullptr),
                         "cuLaunchKernel");
             }));
  return none_met && four_met;
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
  for (const char* arguments : {"no_arguments", "four_arguments"}) summarize(reporter, arguments);
  bool paired_met = false;
  try {
    paired_met = run_paired();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kiln_bench_launch: %s\n", error.what());
    return 1;
  }
  // A missed target is a finding to report, not a failure of the program. The paired figures
  // decide: the separate runs' spread is larger than the difference sought.
  std::printf("launch: overhead target %s (paired medians)\n", paired_met ? "met" : "NOT met");
  return 0;
}
