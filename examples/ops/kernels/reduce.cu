// Whole-array reductions (sum, max) in two passes, so the result is deterministic (no
// atomics): pass 1 reduces a grid-stride slice per block into a partial in the accumulation
// type; pass 2, one block, reduces the partials and rounds once to the element type.
#include <cub/block/block_reduce.cuh>

#include "common.cuh"

namespace ops {

template <class T>
__global__ void __launch_bounds__(kReduceThreads) reduce_sum_partials(const T* x, acc_t<T>* partials, long long n) {
  using BlockReduce = cub::BlockReduce<acc_t<T>, kReduceThreads>;
  __shared__ typename BlockReduce::TempStorage scratch;
  acc_t<T> sum = 0;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    sum += widen(x[i]);
  }
  const acc_t<T> block_sum = BlockReduce(scratch).Sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = block_sum;
}

template <class T>
__global__ void __launch_bounds__(kReduceThreads) reduce_max_partials(const T* x, acc_t<T>* partials, long long n) {
  using BlockReduce = cub::BlockReduce<acc_t<T>, kReduceThreads>;
  __shared__ typename BlockReduce::TempStorage scratch;
  acc_t<T> largest = negative_infinity<acc_t<T>>();
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    largest = max_of(largest, widen(x[i]));
  }
  const acc_t<T> block_max = BlockReduce(scratch).Reduce(largest, Maximum{});
  if (threadIdx.x == 0) partials[blockIdx.x] = block_max;
}

// Launched with one block.
template <class T>
__global__ void __launch_bounds__(kReduceThreads) reduce_sum_finish(const acc_t<T>* partials, T* out, int count) {
  using BlockReduce = cub::BlockReduce<acc_t<T>, kReduceThreads>;
  __shared__ typename BlockReduce::TempStorage scratch;
  acc_t<T> sum = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) sum += partials[i];
  const acc_t<T> total = BlockReduce(scratch).Sum(sum);
  if (threadIdx.x == 0) *out = narrow<T>(total);
}

// Launched with one block.
template <class T>
__global__ void __launch_bounds__(kReduceThreads) reduce_max_finish(const acc_t<T>* partials, T* out, int count) {
  using BlockReduce = cub::BlockReduce<acc_t<T>, kReduceThreads>;
  __shared__ typename BlockReduce::TempStorage scratch;
  acc_t<T> largest = negative_infinity<acc_t<T>>();
  for (int i = threadIdx.x; i < count; i += blockDim.x) largest = max_of(largest, partials[i]);
  const acc_t<T> total = BlockReduce(scratch).Reduce(largest, Maximum{});
  if (threadIdx.x == 0) *out = narrow<T>(total);
}

template __global__ void reduce_sum_partials<float>(const float*, float*, long long);
template __global__ void reduce_sum_partials<double>(const double*, double*, long long);
template __global__ void reduce_sum_partials<__half>(const __half*, float*, long long);
template __global__ void reduce_sum_partials<__nv_bfloat16>(const __nv_bfloat16*, float*, long long);

template __global__ void reduce_max_partials<float>(const float*, float*, long long);
template __global__ void reduce_max_partials<double>(const double*, double*, long long);
template __global__ void reduce_max_partials<__half>(const __half*, float*, long long);
template __global__ void reduce_max_partials<__nv_bfloat16>(const __nv_bfloat16*, float*, long long);

template __global__ void reduce_sum_finish<float>(const float*, float*, int);
template __global__ void reduce_sum_finish<double>(const double*, double*, int);
template __global__ void reduce_sum_finish<__half>(const float*, __half*, int);
template __global__ void reduce_sum_finish<__nv_bfloat16>(const float*, __nv_bfloat16*, int);

template __global__ void reduce_max_finish<float>(const float*, float*, int);
template __global__ void reduce_max_finish<double>(const double*, double*, int);
template __global__ void reduce_max_finish<__half>(const float*, __half*, int);
template __global__ void reduce_max_finish<__nv_bfloat16>(const float*, __nv_bfloat16*, int);

}  // namespace ops
