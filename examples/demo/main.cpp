// The kiln demo: runs every op of the example library (kiln_ops) in every element type on
// the GPU, checks each result against the CPU reference, and shows how kiln readied each
// kernel (the path it took and what that cost). Without a GPU it says why, in one line, and
// shows what common GPUs would get from the bundle embedded in kiln_ops.
//
// Exit status: 0 when every op matched its reference (or there is no GPU to run on),
// 1 when any op failed or the demo could not start.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <kiln/bundle.hpp>
#include <kiln/catalog.hpp>
#include <kiln/runtime.hpp>
#include <kiln/select.hpp>
#include <ops/ops.hpp>
#include <ops/reference.hpp>

extern char** environ;  // NOLINT: POSIX provides it, no header declares it

namespace {

// Problem sizes: large enough to time, small enough for the double-precision CPU reference.
constexpr std::int64_t kElements = (1 << 20) + 3;  // + 3: a tail the 16-byte packs don't cover
constexpr std::int64_t kReduceElements = (1 << 20) + 5;
constexpr std::int64_t kRows = 512;  // softmax, layernorm
constexpr std::int64_t kCols = 1000;
constexpr std::int64_t kMatmulM = 250;  // none a multiple of the 32-wide tiles
constexpr std::int64_t kMatmulN = 380;
constexpr std::int64_t kMatmulK = 300;
constexpr std::int64_t kTransposeRows = 1000;
constexpr std::int64_t kTransposeCols = 777;
constexpr double kScale = 0.75;
constexpr double kBias = 0.25;
constexpr double kEpsilon = 1e-5;
constexpr int kTimedRuns = 5;  // the table shows the median
constexpr unsigned kSeed = 20240611;

// Largest error allowed, relative to the largest reference value: the unit roundoff of the
// element type with room for the accumulation and the device's exp/tanh.
double base_tolerance(ops::DType dtype) {
  switch (dtype) {
    case ops::DType::F32: return 1e-4;
    case ops::DType::F64: return 1e-9;
    case ops::DType::F16: return 1e-2;
    case ops::DType::BF16: return 3e-2;
  }
  return 0;
}

// Dot products of length K accumulate up to K rounding errors: past the K = 256 the base
// tolerances are set for, the bound grows with K.
double matmul_tolerance_scale(std::int64_t k) { return std::max(1.0, static_cast<double>(k) / 256.0); }

// ---------------------------------------------------------------------------------------
// The CUDA runtime, for memory, streams and timing: failures become a FAIL row.

struct CudaFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw CudaFailure(std::string(what) + ": " + cudaGetErrorString(status));
}

class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::span<const std::byte> host) : bytes_(host.size()) {
    check(cudaMalloc(&pointer_, std::max<std::size_t>(bytes_, 1)), "cudaMalloc");
    check(cudaMemcpy(pointer_, host.data(), bytes_, cudaMemcpyHostToDevice), "cudaMemcpy to the device");
  }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : pointer_(std::exchange(other.pointer_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;
  ~DeviceBuffer() { cudaFree(pointer_); }

  [[nodiscard]] void* get() const { return pointer_; }
  [[nodiscard]] std::vector<std::byte> download() const {
    std::vector<std::byte> host(bytes_);
    check(cudaMemcpy(host.data(), pointer_, bytes_, cudaMemcpyDeviceToHost), "cudaMemcpy from the device");
    return host;
  }

 private:
  void* pointer_ = nullptr;
  std::size_t bytes_ = 0;
};

class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { cudaStreamDestroy(stream_); }
  [[nodiscard]] cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event() { check(cudaEventCreate(&event_), "cudaEventCreate"); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() { cudaEventDestroy(event_); }
  [[nodiscard]] cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// ---------------------------------------------------------------------------------------
// One op in one element type, set up on the device.

struct Problem {
  std::vector<DeviceBuffer> buffers;  // inputs, output, workspace
  std::size_t output = 0;             // which buffer the op writes
  std::vector<double> expected;       // the CPU reference's output
  double tolerance_scale = 1;
  std::function<kiln::Result<void>(ops::Stream)> run;
};

class ProblemBuilder {
 public:
  ProblemBuilder(ops::DType dtype, std::uint64_t seed) : dtype_(dtype), random_(seed) {}

  // `count` uniform values in [low, high), rounded to the element type so that the
  // reference computes on exactly what the GPU reads.
  std::vector<double> draw(std::int64_t count, double low, double high) {
    std::uniform_real_distribution<double> distribution(low, high);
    std::vector<double> values(static_cast<std::size_t>(count));
    for (double& value : values) value = distribution(random_);
    return ops::reference::quantize(dtype_, values);
  }
  // A device copy of `values`, alive as long as the problem.
  void* upload(std::span<const double> values) {
    problem_.buffers.emplace_back(ops::reference::encode(dtype_, values));
    return problem_.buffers.back().get();
  }
  void* output(std::int64_t count) {
    upload(std::vector<double>(static_cast<std::size_t>(count), 0.0));
    problem_.output = problem_.buffers.size() - 1;
    return problem_.buffers.back().get();
  }
  void* scratch(std::size_t bytes) {
    problem_.buffers.emplace_back(std::vector<std::byte>(bytes));
    return problem_.buffers.back().get();
  }
  Problem finish(std::vector<double> expected, std::function<kiln::Result<void>(ops::Stream)> run,
                 double tolerance_scale = 1) {
    problem_.expected = std::move(expected);
    problem_.run = std::move(run);
    problem_.tolerance_scale = tolerance_scale;
    return std::move(problem_);
  }

 private:
  ops::DType dtype_;
  std::mt19937_64 random_;
  Problem problem_;
};

Problem make_problem(const ops::Context& context, ops::Op op, ops::DType dtype, std::uint64_t seed) {
  namespace reference = ops::reference;
  using ops::Op;
  using ops::Stream;
  ProblemBuilder builder(dtype, seed);
  switch (op) {
    case Op::Add:
    case Op::Mul: {
      const auto a = builder.draw(kElements, -1, 1);
      const auto b = builder.draw(kElements, -1, 1);
      void* a_device = builder.upload(a);
      void* b_device = builder.upload(b);
      void* out = builder.output(kElements);
      if (op == Op::Add) {
        return builder.finish(reference::add(a, b), [&context, dtype, a_device, b_device, out](Stream stream) {
          return context.add(dtype, a_device, b_device, out, kElements, stream);
        });
      }
      return builder.finish(reference::mul(a, b), [&context, dtype, a_device, b_device, out](Stream stream) {
        return context.mul(dtype, a_device, b_device, out, kElements, stream);
      });
    }
    case Op::ScaleBias: {
      const auto x = builder.draw(kElements, -1, 1);
      void* x_device = builder.upload(x);
      void* out = builder.output(kElements);
      return builder.finish(reference::scale_bias(x, kScale, kBias), [&context, dtype, x_device, out](Stream stream) {
        return context.scale_bias(dtype, x_device, out, kScale, kBias, kElements, stream);
      });
    }
    case Op::Relu:
    case Op::Gelu:
    case Op::Silu: {
      const auto x = builder.draw(kElements, -4, 4);
      void* x_device = builder.upload(x);
      void* out = builder.output(kElements);
      using Activation =
          kiln::Result<void> (ops::Context::*)(ops::DType, const void*, void*, std::int64_t, Stream) const;
      const Activation activation = op == Op::Relu   ? &ops::Context::relu
                                    : op == Op::Gelu ? &ops::Context::gelu
                                                     : &ops::Context::silu;
      auto expected = op == Op::Relu ? reference::relu(x) : op == Op::Gelu ? reference::gelu(x) : reference::silu(x);
      return builder.finish(std::move(expected), [&context, activation, dtype, x_device, out](Stream stream) {
        return (context.*activation)(dtype, x_device, out, kElements, stream);
      });
    }
    case Op::Sum:
    case Op::Max: {
      // Non-negative and small, so the sum neither cancels to near zero (where a relative
      // error means nothing) nor passes fp16's largest value, 65504.
      const auto x = builder.draw(kReduceElements, 0, 0.05);
      void* x_device = builder.upload(x);
      void* out = builder.output(1);
      const std::size_t workspace_bytes = ops::reduce_workspace_bytes(dtype, kReduceElements);
      void* workspace = builder.scratch(workspace_bytes);
      if (op == Op::Sum) {
        return builder.finish(
            {reference::sum(x)}, [&context, dtype, x_device, out, workspace, workspace_bytes](Stream stream) {
              return context.sum(dtype, x_device, out, kReduceElements, workspace, workspace_bytes, stream);
            });
      }
      return builder.finish(
          {reference::max(x)}, [&context, dtype, x_device, out, workspace, workspace_bytes](Stream stream) {
            return context.max(dtype, x_device, out, kReduceElements, workspace, workspace_bytes, stream);
          });
    }
    case Op::Softmax: {
      const auto x = builder.draw(kRows * kCols, -8, 8);
      void* x_device = builder.upload(x);
      void* out = builder.output(kRows * kCols);
      return builder.finish(reference::softmax(x, kRows, kCols), [&context, dtype, x_device, out](Stream stream) {
        return context.softmax(dtype, x_device, out, kRows, kCols, stream);
      });
    }
    case Op::LayerNorm: {
      // An offset mean, as real activations have: a one-pass variance would lose it.
      const auto x = builder.draw(kRows * kCols, 1, 5);
      const auto gamma = builder.draw(kCols, 0.5, 1.5);
      const auto beta = builder.draw(kCols, -0.5, 0.5);
      void* x_device = builder.upload(x);
      void* gamma_device = builder.upload(gamma);
      void* beta_device = builder.upload(beta);
      void* out = builder.output(kRows * kCols);
      return builder.finish(reference::layernorm(x, gamma, beta, kRows, kCols, kEpsilon),
                            [&context, dtype, x_device, gamma_device, beta_device, out](Stream stream) {
                              return context.layernorm(dtype, x_device, gamma_device, beta_device, out, kRows, kCols,
                                                       kEpsilon, stream);
                            });
    }
    case Op::Matmul: {
      const auto a = builder.draw(kMatmulM * kMatmulK, -1, 1);
      const auto b = builder.draw(kMatmulK * kMatmulN, -1, 1);
      void* a_device = builder.upload(a);
      void* b_device = builder.upload(b);
      void* c = builder.output(kMatmulM * kMatmulN);
      return builder.finish(
          reference::matmul(a, b, kMatmulM, kMatmulN, kMatmulK),
          [&context, dtype, a_device, b_device, c](Stream stream) {
            return context.matmul(dtype, a_device, b_device, c, kMatmulM, kMatmulN, kMatmulK, stream);
          },
          matmul_tolerance_scale(kMatmulK));
    }
    case Op::Transpose: {
      const auto x = builder.draw(kTransposeRows * kTransposeCols, -1, 1);
      void* x_device = builder.upload(x);
      void* out = builder.output(kTransposeRows * kTransposeCols);
      return builder.finish(reference::transpose(x, kTransposeRows, kTransposeCols),
                            [&context, dtype, x_device, out](Stream stream) {
                              return context.transpose(dtype, x_device, out, kTransposeRows, kTransposeCols, stream);
                            });
    }
  }
  throw std::logic_error("make_problem: an op without a problem");
}

// ---------------------------------------------------------------------------------------
// Running, checking and timing one problem.

struct Outcome {
  std::string path;      // as kiln::path_name says; "a+b" when an op's kernels took different paths
  double load_ms = 0;    // loading or compiling the op's kernels: kiln's own records
  double kernel_ms = 0;  // the op on the GPU, median of kTimedRuns
  double max_error = 0;  // max |gpu - cpu| / max |cpu|
  double tolerance = 0;
  std::string failure;  // empty when the result matched
};

// max |actual - expected| over max |expected|: relative to the output's scale, so a wrong
// softmax (values near 1e-3) fails as clearly as a wrong matmul (values near 10). NaN if the
// lengths differ or any value is NaN, which fails every comparison.
double max_relative_error(std::span<const double> actual, std::span<const double> expected) {
  if (actual.size() != expected.size()) return std::nan("");
  double largest_error = 0;
  double scale = 0;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const double error = std::abs(actual[i] - expected[i]);
    if (std::isnan(error)) return error;
    largest_error = std::max(largest_error, error);
    scale = std::max(scale, std::abs(expected[i]));
  }
  return largest_error / (scale > 0 ? scale : 1);
}

std::string describe_paths(const std::vector<kiln::KernelRecord>& records) {
  std::string text;
  for (const kiln::KernelRecord& record : records) {
    const std::string name = kiln::path_name(record.path);
    if (text.find(name) == std::string::npos) text += (text.empty() ? "" : "+") + name;
  }
  return text;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

Outcome run_problem(const ops::Context& context, ops::Op op, ops::DType dtype, cudaStream_t stream) {
  Outcome outcome;
  outcome.tolerance = base_tolerance(dtype);
  try {
    const auto seed = kSeed + static_cast<std::uint64_t>(op) * 16 + static_cast<std::uint64_t>(dtype);
    Problem problem = make_problem(context, op, dtype, seed);
    outcome.tolerance *= problem.tolerance_scale;

    // The first call readies the kernels (load, or JIT): its cost is in kiln's records.
    if (auto first = problem.run(stream); !first) {
      outcome.failure = first.error().describe();
      return outcome;
    }
    check(cudaStreamSynchronize(stream), "the first run");
    kiln::Result<std::vector<kiln::KernelRecord>> records = context.records(op, dtype);
    if (!records) {
      outcome.failure = records.error().describe();
      return outcome;
    }
    outcome.path = describe_paths(*records);
    for (const kiln::KernelRecord& record : *records) outcome.load_ms += record.milliseconds;

    Event start;
    Event stop;
    std::vector<double> timings;
    for (int run = 0; run < kTimedRuns; ++run) {
      check(cudaEventRecord(start.get(), stream), "cudaEventRecord");
      if (auto launched = problem.run(stream); !launched) {
        outcome.failure = launched.error().describe();
        return outcome;
      }
      check(cudaEventRecord(stop.get(), stream), "cudaEventRecord");
      check(cudaEventSynchronize(stop.get()), "a timed run");
      float milliseconds = 0;
      check(cudaEventElapsedTime(&milliseconds, start.get(), stop.get()), "cudaEventElapsedTime");
      timings.push_back(milliseconds);
    }
    outcome.kernel_ms = median(std::move(timings));

    const std::vector<double> actual = ops::reference::decode(dtype, problem.buffers[problem.output].download());
    outcome.max_error = max_relative_error(actual, problem.expected);
    if (!(outcome.max_error <= outcome.tolerance)) outcome.failure = "the result differs from the CPU reference";
  } catch (const CudaFailure& failure) {
    outcome.failure = failure.what();
    // Clear a non-sticky error so that the next row starts clean. (A sticky one, such as an
    // illegal address, ruins the context: the rows after it fail too, each saying so.)
    cudaGetLastError();
  }
  return outcome;
}

// ---------------------------------------------------------------------------------------
// What the demo prints before the table.

void print_environment(const kiln::RuntimeOptions& options) {
  std::string variables;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (std::string_view(*entry).starts_with("KILN_")) variables += std::string(variables.empty() ? "" : " ") + *entry;
  }
  std::printf("Environment: %s\n", variables.empty() ? "no KILN_* variables set (defaults)" : variables.c_str());
  std::printf("JIT cache:   %s\n", options.cache_disabled ? "disabled" : options.cache_dir.string().c_str());
  if (options.force_jit) std::printf("             KILN_FORCE_JIT: cubins ignored, every kernel JIT-compiled\n");
  if (options.disable_jit) std::printf("             KILN_DISABLE_JIT: no JIT; a GPU without a fitting cubin fails\n");
}

// Images grouped by target: the compiler writes one image per source file and target.
void print_bundle(const kiln::Bundle& bundle) {
  struct Totals {
    kiln::ImageKind kind = kiln::ImageKind::Cubin;
    int images = 0;
    std::uint64_t raw = 0;
    std::uint64_t stored = 0;
    std::set<std::string> kernels;
  };
  std::map<std::string, Totals> by_target;
  std::vector<std::string> order;  // as the bundle lists them
  std::set<std::string> all_kernels;
  for (const kiln::ImageInfo& image : bundle.images()) {
    const std::string target = image.target.name();
    if (!by_target.contains(target)) order.push_back(target);
    Totals& totals = by_target[target];
    totals.kind = image.target.kind;
    totals.images += 1;
    totals.raw += image.raw_size;
    totals.stored += image.stored_size;
    totals.kernels.insert(image.kernels.begin(), image.kernels.end());
    all_kernels.insert(image.kernels.begin(), image.kernels.end());
  }
  std::printf("Bundle %s: %zu kernels, %zu images, %.1f KiB, format version %u\n", bundle.name().c_str(),
              all_kernels.size(), bundle.images().size(), static_cast<double>(bundle.file_size()) / 1024,
              bundle.format_version());
  std::printf("  %-12s %-7s %6s %10s %11s %8s\n", "target", "kind", "images", "raw KiB", "stored KiB", "kernels");
  for (const std::string& target : order) {
    const Totals& totals = by_target[target];
    std::printf("  %-12s %-7s %6d %10.1f %11.1f %8zu\n", target.c_str(), kiln::kind_name(totals.kind), totals.images,
                static_cast<double>(totals.raw) / 1024, static_cast<double>(totals.stored) / 1024,
                totals.kernels.size());
  }
}

std::string cc_text(kiln::ComputeCapability cc) { return std::to_string(cc.major) + "." + std::to_string(cc.minor); }

kiln::SelectOptions select_options(const kiln::RuntimeOptions& options) {
  return {.force_jit = options.force_jit, .disable_jit = options.disable_jit};
}

// What kiln would load on each of a few common GPUs: the same rule the runtime applies.
void print_what_devices_get(const kiln::Bundle& bundle, const kiln::RuntimeOptions& options) {
  static constexpr const char* kCommonDevices[] = {"t4", "a100", "l4", "h100", "b200", "rtx5090"};
  const std::vector<kiln::ImageTarget> targets = bundle.targets();
  std::printf("What common GPUs would get from this bundle:\n");
  std::printf("  %-8s %-24s %-5s %-15s %-12s %s\n", "device", "product", "cc", "path", "image", "why");
  for (const char* name : kCommonDevices) {
    const kiln::Device* device = kiln::find_device(name);
    if (device == nullptr) continue;  // the catalog names them all; nothing to show otherwise
    const std::string product(device->product);
    kiln::Result<kiln::Selection> selection = kiln::select_image(targets, device->cc, name, select_options(options));
    if (selection) {
      std::printf("  %-8s %-24s %-5s %-15s %-12s %s\n", name, product.c_str(), cc_text(device->cc).c_str(),
                  kiln::path_name(selection->path), selection->target.name().c_str(), selection->reason.c_str());
    } else {
      std::printf("  %-8s %-24s %-5s %-15s %-12s %s\n", name, product.c_str(), cc_text(device->cc).c_str(), "none", "-",
                  selection.error().message.c_str());
    }
  }
}

void print_gpus(const kiln::Runtime& runtime, const kiln::Bundle& bundle) {
  const int driver = runtime.driver_version();
  std::printf("Driver:      CUDA %d.%d\n", driver / 1000, driver % 1000 / 10);
  const std::vector<kiln::ImageTarget> targets = bundle.targets();
  for (const kiln::GpuInfo& gpu : runtime.gpus()) {
    const std::string arch = kiln::Arch{gpu.cc, kiln::ArchVariant::Plain}.sm_name();
    std::printf("GPU %d:       %s, compute capability %s (%s)\n", gpu.ordinal, gpu.name.c_str(),
                cc_text(gpu.cc).c_str(), arch.c_str());
    kiln::Result<kiln::Selection> selection =
        kiln::select_image(targets, gpu.cc, gpu.name, select_options(runtime.options()));
    if (selection) {
      std::printf("             gets %s: %s\n", kiln::path_name(selection->path), selection->reason.c_str());
    } else {
      std::printf("             gets nothing: %s\n", selection.error().describe().c_str());
    }
  }
}

// ---------------------------------------------------------------------------------------

int run_everything(const kiln::Runtime& runtime) {
  kiln::Result<ops::Context> context = ops::Context::create(runtime);
  if (!context) {
    std::printf("Could not load the kiln_ops bundle: %s\n", context.error().describe().c_str());
    return 1;
  }
  // Kernels go to the calling thread's current device: make it GPU 0, through the primary
  // context that both the CUDA runtime and kiln use.
  if (const cudaError_t status = cudaSetDevice(0); status != cudaSuccess) {
    std::printf("CUDA runtime: cudaSetDevice(0) failed: %s\n", cudaGetErrorString(status));
    return 1;
  }

  std::printf("\nRunning on GPU 0. max error = max|gpu - cpu| / max|cpu|; kernel ms = median of %d runs.\n",
              kTimedRuns);
  std::printf("%-11s %-5s %-16s %10s %10s %10s %9s  %s\n", "op", "dtype", "path", "load ms", "kernel ms", "max error",
              "tolerance", "result");
  int failures = 0;
  try {
    Stream stream;
    for (ops::Op op : ops::kOps) {
      for (ops::DType dtype : ops::kDTypes) {
        const Outcome outcome = run_problem(*context, op, dtype, stream.get());
        const bool ok = outcome.failure.empty();
        failures += ok ? 0 : 1;
        std::printf("%-11s %-5s %-16s %10.3f %10.4f %10.2e %9.1e  %s\n", ops::op_name(op), ops::dtype_name(dtype),
                    outcome.path.empty() ? "-" : outcome.path.c_str(), outcome.load_ms, outcome.kernel_ms,
                    outcome.max_error, outcome.tolerance, ok ? "OK" : "FAIL");
        if (!ok) std::printf("    %s\n", outcome.failure.c_str());
        std::fflush(stdout);
      }
    }
  } catch (const CudaFailure& failure) {
    std::printf("CUDA runtime: %s\n", failure.what());
    return 1;
  }
  const std::size_t total = ops::kOps.size() * ops::kDTypes.size();
  std::printf("\n%zu of %zu passed.\n", total - static_cast<std::size_t>(failures), total);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main() {
  std::printf("kiln demo: the example op library (kiln_ops), every op in every element type, checked on the CPU\n\n");
  const kiln::RuntimeOptions options = kiln::RuntimeOptions::from_environment();
  print_environment(options);

  kiln::Result<kiln::Bundle> bundle = kiln::Bundle::open(ops::embedded_bundle(), "kiln_ops");
  if (!bundle) {
    std::printf("The embedded bundle is unreadable: %s\n", bundle.error().describe().c_str());
    return 1;
  }
  print_bundle(*bundle);
  std::printf("\n");

  kiln::Result<kiln::Runtime> runtime = kiln::Runtime::create(options);
  if (!runtime || runtime->gpus().empty()) {
    const std::string reason = runtime ? "the CUDA driver reports no device" : runtime.error().message;
    std::printf("No GPU: %s. Nothing to run; showing what the bundle offers instead.\n\n", reason.c_str());
    print_what_devices_get(*bundle, options);
    return 0;
  }
  print_gpus(*runtime, *bundle);
  return run_everything(*runtime);
}
