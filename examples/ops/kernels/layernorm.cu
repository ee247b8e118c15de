// Row-wise layer normalization over a rows x cols row-major matrix, one block per row:
// out = (x - mean) / sqrt(variance + epsilon) * gamma + beta, gamma and beta per column.
// Statistics in the accumulation type; the variance from a second pass over x - mean
// rather than E[x^2] - mean^2, which cancels catastrophically when |mean| >> stddev.
#include "row_reduce.cuh"

namespace ops {

template <class T>
__global__ void __launch_bounds__(kRowThreads)
    layernorm(const T* x, const T* gamma, const T* beta, T* out, int cols, acc_t<T> epsilon) {
  using A = acc_t<T>;
  const T* row_in = x + static_cast<long long>(blockIdx.x) * cols;
  T* row_out = out + static_cast<long long>(blockIdx.x) * cols;

  A local_sum = 0;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) local_sum += widen(row_in[c]);
  const A mean = block_all_reduce(local_sum, Sum{}) / A(cols);

  A local_squares = 0;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const A centred = widen(row_in[c]) - mean;
    local_squares += centred * centred;
  }
  const A inverse_stddev = rsqrt_of(block_all_reduce(local_squares, Sum{}) / A(cols) + epsilon);

  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const A normalized = (widen(row_in[c]) - mean) * inverse_stddev;
    row_out[c] = narrow<T>(normalized * widen(gamma[c]) + widen(beta[c]));
  }
}

template __global__ void layernorm<float>(const float*, const float*, const float*, float*, int, float);
template __global__ void layernorm<double>(const double*, const double*, const double*, double*, int, double);
template __global__ void layernorm<__half>(const __half*, const __half*, const __half*, __half*, int, float);
template __global__ void layernorm<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                                  __nv_bfloat16*, int, float);

}  // namespace ops
