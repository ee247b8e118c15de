#include "ops/ops.hpp"

#include <algorithm>
#include <string>
#include <utility>

#include <kiln/bundles/kiln_ops.hpp>

namespace ops {
namespace {

// Launch shapes: the numbers in kernels/common.cuh, which is device code and can't be shared.
constexpr unsigned kElementwiseThreads = 256;
constexpr unsigned kReduceThreads = 256;
constexpr unsigned kRowThreads = 256;
constexpr unsigned kMatmulTile = 32;
constexpr unsigned kMatmulRowsPerThread = 4;
constexpr unsigned kTransposeTile = 32;
constexpr unsigned kTransposeRowsPerThread = 4;

// The kernels loop over the grid, so blocks beyond what fills any GPU only add scheduling.
constexpr std::int64_t kMaxElementwiseBlocks = 65535;
// Each reduction thread sums this many elements before the block reduces; the block count
// (so the number of partials the finishing block reads) stays at most kMaxReduceBlocks.
constexpr std::int64_t kReduceItemsPerThread = 8;
constexpr std::int64_t kMaxReduceBlocks = 1024;
// Far beyond any GPU's memory, and far enough from 2^63 that no index arithmetic overflows.
constexpr std::int64_t kMaxElements = std::int64_t{1} << 40;
// CUDA's limits on gridDim.x and gridDim.y, and the kernels' int indices.
constexpr std::int64_t kMaxGridX = 2147483647;
constexpr std::int64_t kMaxGridY = 65535;
constexpr std::int64_t kMaxInt = 2147483647;

// The template argument as the bundle's readable kernel names spell it.
const char* device_type_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "float";
    case DType::F64: return "double";
    case DType::F16: return "__half";
    case DType::BF16: return "__nv_bfloat16";
  }
  return "?";
}

std::string kernel_name(const char* base, DType dtype) {
  return std::string("ops::") + base + "<" + device_type_name(dtype) + ">";
}

std::int64_t ceil_div(std::int64_t numerator, std::int64_t denominator) {
  return (numerator + denominator - 1) / denominator;
}

// Half types are computed in float, so their reductions leave float partials.
std::size_t accumulator_size(DType dtype) { return dtype == DType::F64 ? sizeof(double) : sizeof(float); }

std::int64_t reduce_blocks(std::int64_t n) {
  return std::clamp<std::int64_t>(ceil_div(n, kReduceThreads * kReduceItemsPerThread), 1, kMaxReduceBlocks);
}

kiln::Error invalid_argument(Op op, const std::string& message) {
  return kiln::usage_error(std::string("ops::") + op_name(op) + ": " + message);
}

// A size argument in [0, limit]; `name` as the parameter is called.
kiln::Result<void> check_size(Op op, const char* name, std::int64_t value, std::int64_t limit) {
  if (value >= 0 && value <= limit) return {};
  return invalid_argument(
      op, std::string(name) + " is " + std::to_string(value) + "; it must be between 0 and " + std::to_string(limit));
}

template <class... Args>
kiln::Result<void> launch(const kiln::Module& module, const std::string& name, kiln::Dim3 grid, kiln::Dim3 block,
                          Stream stream, const Args&... args) {
  kiln::Result<kiln::Kernel> kernel = module.kernel(name);
  if (!kernel) return std::move(kernel).error();
  return kernel->launch(grid, block, 0, stream, args...);
}

// One thread per 16-byte pack (the kernels' vector width), so small types get fewer threads.
kiln::Dim3 elementwise_grid(DType dtype, std::int64_t n) {
  const auto pack = static_cast<std::int64_t>(16 / dtype_size(dtype));
  return {static_cast<unsigned>(
      std::clamp<std::int64_t>(ceil_div(ceil_div(n, pack), kElementwiseThreads), 1, kMaxElementwiseBlocks))};
}

kiln::Result<void> unary(const kiln::Module& module, Op op, DType dtype, const void* x, void* out, std::int64_t n,
                         Stream stream) {
  if (auto valid = check_size(op, "n", n, kMaxElements); !valid) return valid;
  if (n == 0) return {};
  return launch(module, kernel_names(op, dtype).front(), elementwise_grid(dtype, n), {kElementwiseThreads}, stream, x,
                out, static_cast<long long>(n));
}

kiln::Result<void> binary(const kiln::Module& module, Op op, DType dtype, const void* a, const void* b, void* out,
                          std::int64_t n, Stream stream) {
  if (auto valid = check_size(op, "n", n, kMaxElements); !valid) return valid;
  if (n == 0) return {};
  return launch(module, kernel_names(op, dtype).front(), elementwise_grid(dtype, n), {kElementwiseThreads}, stream, a,
                b, out, static_cast<long long>(n));
}

kiln::Result<void> reduce(const kiln::Module& module, Op op, DType dtype, const void* x, void* out, std::int64_t n,
                          void* workspace, std::size_t workspace_bytes, Stream stream) {
  if (auto valid = check_size(op, "n", n, kMaxElements); !valid) return valid;
  const std::size_t needed = reduce_workspace_bytes(dtype, n);
  if (workspace == nullptr || workspace_bytes < needed) {
    return invalid_argument(op, "the workspace has " + std::to_string(workspace_bytes) + " bytes; " +
                                    std::to_string(needed) + " are needed (see reduce_workspace_bytes)");
  }
  const std::vector<std::string> names = kernel_names(op, dtype);  // partials, then finish
  const std::int64_t blocks = reduce_blocks(n);
  if (auto partials = launch(module, names[0], {static_cast<unsigned>(blocks)}, {kReduceThreads}, stream, x, workspace,
                             static_cast<long long>(n));
      !partials) {
    return partials;
  }
  const void* partial_values = workspace;
  return launch(module, names[1], {1}, {kReduceThreads}, stream, partial_values, out, static_cast<int>(blocks));
}

}  // namespace

kiln::BundleView embedded_bundle() noexcept { return kiln::bundles::kiln_ops(); }

std::vector<std::string> kernel_names(Op op, DType dtype) {
  switch (op) {
    case Op::Add: return {kernel_name("add", dtype)};
    case Op::Mul: return {kernel_name("mul", dtype)};
    case Op::ScaleBias: return {kernel_name("scale_bias", dtype)};
    case Op::Relu: return {kernel_name("relu", dtype)};
    case Op::Gelu: return {kernel_name("gelu", dtype)};
    case Op::Silu: return {kernel_name("silu", dtype)};
    case Op::Sum: return {kernel_name("reduce_sum_partials", dtype), kernel_name("reduce_sum_finish", dtype)};
    case Op::Max: return {kernel_name("reduce_max_partials", dtype), kernel_name("reduce_max_finish", dtype)};
    case Op::Softmax: return {kernel_name("softmax", dtype)};
    case Op::LayerNorm: return {kernel_name("layernorm", dtype)};
    case Op::Matmul: return {kernel_name("matmul", dtype)};
    case Op::Transpose: return {kernel_name("transpose", dtype)};
  }
  return {};
}

std::size_t reduce_workspace_bytes(DType dtype, std::int64_t n) {
  return static_cast<std::size_t>(reduce_blocks(n)) * accumulator_size(dtype);
}

kiln::Result<Context> Context::create() {
  kiln::Result<kiln::Runtime> runtime = kiln::Runtime::create();
  if (!runtime) return std::move(runtime).error();
  return create(*runtime);
}

kiln::Result<Context> Context::create(const kiln::Runtime& runtime) {
  kiln::Result<kiln::Module> module = runtime.load(embedded_bundle(), "kiln_ops");
  if (!module) return std::move(module).error();
  return Context(runtime, std::move(*module));
}

kiln::Result<void> Context::add(DType dtype, const void* a, const void* b, void* out, std::int64_t n,
                                Stream stream) const {
  return binary(module_, Op::Add, dtype, a, b, out, n, stream);
}

kiln::Result<void> Context::mul(DType dtype, const void* a, const void* b, void* out, std::int64_t n,
                                Stream stream) const {
  return binary(module_, Op::Mul, dtype, a, b, out, n, stream);
}

kiln::Result<void> Context::scale_bias(DType dtype, const void* x, void* out, double scale, double bias, std::int64_t n,
                                       Stream stream) const {
  if (auto valid = check_size(Op::ScaleBias, "n", n, kMaxElements); !valid) return valid;
  if (n == 0) return {};
  const std::string name = kernel_names(Op::ScaleBias, dtype).front();
  const kiln::Dim3 grid = elementwise_grid(dtype, n);
  const auto count = static_cast<long long>(n);
  // The kernel takes its scalars in its accumulation type.
  if (dtype == DType::F64)
    return launch(module_, name, grid, {kElementwiseThreads}, stream, x, out, scale, bias, count);
  return launch(module_, name, grid, {kElementwiseThreads}, stream, x, out, static_cast<float>(scale),
                static_cast<float>(bias), count);
}

kiln::Result<void> Context::relu(DType dtype, const void* x, void* out, std::int64_t n, Stream stream) const {
  return unary(module_, Op::Relu, dtype, x, out, n, stream);
}

kiln::Result<void> Context::gelu(DType dtype, const void* x, void* out, std::int64_t n, Stream stream) const {
  return unary(module_, Op::Gelu, dtype, x, out, n, stream);
}

kiln::Result<void> Context::silu(DType dtype, const void* x, void* out, std::int64_t n, Stream stream) const {
  return unary(module_, Op::Silu, dtype, x, out, n, stream);
}

kiln::Result<void> Context::sum(DType dtype, const void* x, void* out, std::int64_t n, void* workspace,
                                std::size_t workspace_bytes, Stream stream) const {
  return reduce(module_, Op::Sum, dtype, x, out, n, workspace, workspace_bytes, stream);
}

kiln::Result<void> Context::max(DType dtype, const void* x, void* out, std::int64_t n, void* workspace,
                                std::size_t workspace_bytes, Stream stream) const {
  return reduce(module_, Op::Max, dtype, x, out, n, workspace, workspace_bytes, stream);
}

kiln::Result<void> Context::softmax(DType dtype, const void* x, void* out, std::int64_t rows, std::int64_t cols,
                                    Stream stream) const {
  if (auto valid = check_size(Op::Softmax, "rows", rows, kMaxGridX); !valid) return valid;
  if (auto valid = check_size(Op::Softmax, "cols", cols, kMaxInt); !valid) return valid;
  if (rows == 0 || cols == 0) return {};
  return launch(module_, kernel_names(Op::Softmax, dtype).front(), {static_cast<unsigned>(rows)}, {kRowThreads}, stream,
                x, out, static_cast<int>(cols));
}

kiln::Result<void> Context::layernorm(DType dtype, const void* x, const void* gamma, const void* beta, void* out,
                                      std::int64_t rows, std::int64_t cols, double epsilon, Stream stream) const {
  if (auto valid = check_size(Op::LayerNorm, "rows", rows, kMaxGridX); !valid) return valid;
  if (auto valid = check_size(Op::LayerNorm, "cols", cols, kMaxInt); !valid) return valid;
  if (rows == 0 || cols == 0) return {};
  const std::string name = kernel_names(Op::LayerNorm, dtype).front();
  const kiln::Dim3 grid{static_cast<unsigned>(rows)};
  const int count = static_cast<int>(cols);
  // The kernel takes epsilon in its accumulation type.
  if (dtype == DType::F64)
    return launch(module_, name, grid, {kRowThreads}, stream, x, gamma, beta, out, count, epsilon);
  return launch(module_, name, grid, {kRowThreads}, stream, x, gamma, beta, out, count, static_cast<float>(epsilon));
}

kiln::Result<void> Context::matmul(DType dtype, const void* a, const void* b, void* c, std::int64_t m, std::int64_t n,
                                   std::int64_t k, Stream stream) const {
  if (auto valid = check_size(Op::Matmul, "m", m, kMaxGridY * kMatmulTile); !valid) return valid;
  if (auto valid = check_size(Op::Matmul, "n", n, kMaxInt); !valid) return valid;
  if (auto valid = check_size(Op::Matmul, "k", k, kMaxInt); !valid) return valid;
  if (m == 0 || n == 0) return {};
  const kiln::Dim3 grid{static_cast<unsigned>(ceil_div(n, kMatmulTile)),
                        static_cast<unsigned>(ceil_div(m, kMatmulTile))};
  const kiln::Dim3 block{kMatmulTile, kMatmulTile / kMatmulRowsPerThread};
  return launch(module_, kernel_names(Op::Matmul, dtype).front(), grid, block, stream, a, b, c, static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k));
}

kiln::Result<void> Context::transpose(DType dtype, const void* in, void* out, std::int64_t rows, std::int64_t cols,
                                      Stream stream) const {
  if (auto valid = check_size(Op::Transpose, "rows", rows, kMaxGridY * kTransposeTile); !valid) return valid;
  if (auto valid = check_size(Op::Transpose, "cols", cols, kMaxInt); !valid) return valid;
  if (rows == 0 || cols == 0) return {};
  const kiln::Dim3 grid{static_cast<unsigned>(ceil_div(cols, kTransposeTile)),
                        static_cast<unsigned>(ceil_div(rows, kTransposeTile))};
  const kiln::Dim3 block{kTransposeTile, kTransposeTile / kTransposeRowsPerThread};
  return launch(module_, kernel_names(Op::Transpose, dtype).front(), grid, block, stream, in, out,
                static_cast<int>(rows), static_cast<int>(cols));
}

kiln::Result<std::vector<kiln::KernelRecord>> Context::records(Op op, DType dtype) const {
  std::vector<kiln::KernelRecord> records;
  for (const std::string& name : kernel_names(op, dtype)) {
    kiln::Result<kiln::Kernel> kernel = module_.kernel(name);
    if (!kernel) return std::move(kernel).error();
    records.push_back(kernel->record());
  }
  return records;
}

}  // namespace ops
