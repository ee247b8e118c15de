// Row-wise softmax over a rows x cols row-major matrix, one block per row. Numerically
// stable: exponents are taken of x - max(row), so the largest is exp(0) = 1 and nothing
// overflows, whatever the magnitude of the inputs.
#include "row_reduce.cuh"

namespace ops {

template <class T>
__global__ void __launch_bounds__(kRowThreads) softmax(const T* x, T* out, int cols) {
  using A = acc_t<T>;
  const T* row_in = x + static_cast<long long>(blockIdx.x) * cols;
  T* row_out = out + static_cast<long long>(blockIdx.x) * cols;

  A local_max = negative_infinity<A>();
  for (int c = threadIdx.x; c < cols; c += blockDim.x) local_max = max_of(local_max, widen(row_in[c]));
  const A row_max = block_all_reduce(local_max, Maximum{});

  A local_sum = 0;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) local_sum += exp_of(widen(row_in[c]) - row_max);
  const A inverse_sum = A(1) / block_all_reduce(local_sum, Sum{});

  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    row_out[c] = narrow<T>(exp_of(widen(row_in[c]) - row_max) * inverse_sum);
  }
}

template __global__ void softmax<float>(const float*, float*, int);
template __global__ void softmax<double>(const double*, double*, int);
template __global__ void softmax<__half>(const __half*, __half*, int);
template __global__ void softmax<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, int);

}  // namespace ops
