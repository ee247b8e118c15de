// kiln_ops: a small GPU op library whose kernels (examples/ops/kernels/*.cu) kiln compiled
// ahead of time into a bundle embedded in this library. Each call picks the kernel for its
// element type; kiln loads the image that fits the GPU (or JIT-compiles it, once) on first use.
//
// Pointers are device pointers (cudaMalloc or cuMemAlloc: kiln works in the device's primary
// context, as the CUDA runtime does). Calls are asynchronous on `stream`; errors in the
// arguments or in readying or launching a kernel come back as kiln::Error values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <kiln/bundle_view.hpp>
#include <kiln/error.hpp>
#include <kiln/runtime.hpp>

#include "ops/types.hpp"

namespace ops {

// A CUDA stream: cudaStream_t and CUstream are the same type. nullptr is the legacy default stream.
using Stream = CUstream;

// The bundle kiln built from the kernels, embedded in this library.
[[nodiscard]] kiln::BundleView embedded_bundle() noexcept;

// The kernels `op` launches for `dtype`, in launch order, by the readable names the bundle
// lists: {"ops::add<float>"}, {"ops::reduce_sum_partials<__half>", "ops::reduce_sum_finish<__half>"}.
[[nodiscard]] std::vector<std::string> kernel_names(Op op, DType dtype);

// Scratch that sum() and max() need for `n` elements of `dtype`.
[[nodiscard]] std::size_t reduce_workspace_bytes(DType dtype, std::int64_t n);

class Context {
 public:
  // A runtime configured from the KILN_* environment, with the embedded bundle loaded.
  [[nodiscard]] static kiln::Result<Context> create();
  // Shares an existing runtime (and so its caches and JIT threads).
  [[nodiscard]] static kiln::Result<Context> create(const kiln::Runtime& runtime);

  [[nodiscard]] const kiln::Runtime& runtime() const noexcept { return runtime_; }
  [[nodiscard]] const kiln::Module& module() const noexcept { return module_; }

  // Element-wise over n elements; out may alias an input.
  kiln::Result<void> add(DType dtype, const void* a, const void* b, void* out, std::int64_t n,
                         Stream stream = nullptr) const;
  kiln::Result<void> mul(DType dtype, const void* a, const void* b, void* out, std::int64_t n,
                         Stream stream = nullptr) const;
  // out = x * scale + bias (scale and bias applied in float, or double for F64).
  kiln::Result<void> scale_bias(DType dtype, const void* x, void* out, double scale, double bias, std::int64_t n,
                                Stream stream = nullptr) const;
  kiln::Result<void> relu(DType dtype, const void* x, void* out, std::int64_t n, Stream stream = nullptr) const;
  // The tanh approximation.
  kiln::Result<void> gelu(DType dtype, const void* x, void* out, std::int64_t n, Stream stream = nullptr) const;
  kiln::Result<void> silu(DType dtype, const void* x, void* out, std::int64_t n, Stream stream = nullptr) const;

  // One element of `dtype` at `out`: the sum (0 for n = 0) or the maximum (-inf for n = 0) of x.
  // Deterministic (no atomics). `workspace` holds at least reduce_workspace_bytes(dtype, n).
  kiln::Result<void> sum(DType dtype, const void* x, void* out, std::int64_t n, void* workspace,
                         std::size_t workspace_bytes, Stream stream = nullptr) const;
  kiln::Result<void> max(DType dtype, const void* x, void* out, std::int64_t n, void* workspace,
                         std::size_t workspace_bytes, Stream stream = nullptr) const;

  // Row-wise over a rows x cols row-major matrix.
  kiln::Result<void> softmax(DType dtype, const void* x, void* out, std::int64_t rows, std::int64_t cols,
                             Stream stream = nullptr) const;
  // gamma and beta: cols elements each.
  kiln::Result<void> layernorm(DType dtype, const void* x, const void* gamma, const void* beta, void* out,
                               std::int64_t rows, std::int64_t cols, double epsilon = 1e-5,
                               Stream stream = nullptr) const;

  // c (m x n) = a (m x k) b (k x n), all row-major; c must not alias a or b.
  kiln::Result<void> matmul(DType dtype, const void* a, const void* b, void* c, std::int64_t m, std::int64_t n,
                            std::int64_t k, Stream stream = nullptr) const;
  // out (cols x rows) = transpose of in (rows x cols); out must not alias in.
  kiln::Result<void> transpose(DType dtype, const void* in, void* out, std::int64_t rows, std::int64_t cols,
                               Stream stream = nullptr) const;

  // How each kernel of `op` became ready on the current device: the path kiln took (AOT
  // exact, AOT compatible, JIT, cache hit) and its milliseconds. Readies them if no call has.
  [[nodiscard]] kiln::Result<std::vector<kiln::KernelRecord>> records(Op op, DType dtype) const;

 private:
  Context(kiln::Runtime runtime, kiln::Module module) : runtime_(std::move(runtime)), module_(std::move(module)) {}

  kiln::Runtime runtime_;
  kiln::Module module_;
};

}  // namespace ops
