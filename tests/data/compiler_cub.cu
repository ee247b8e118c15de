// Compiler test and timing input: block-wide reductions and scans with CUB, found without
// -I the way nvcc finds the toolkit's headers.
#include <cub/block/block_load.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda/std/limits>

template <class T, int BlockThreads, int ItemsPerThread>
__global__ void block_sum(const T* input, T* block_sums, int count) {
  using Load = cub::BlockLoad<T, BlockThreads, ItemsPerThread, cub::BLOCK_LOAD_WARP_TRANSPOSE>;
  using Reduce = cub::BlockReduce<T, BlockThreads>;
  __shared__ union {
    typename Load::TempStorage load;
    typename Reduce::TempStorage reduce;
  } storage;
  T items[ItemsPerThread];
  const int offset = blockIdx.x * BlockThreads * ItemsPerThread;
  Load(storage.load).Load(input + offset, items, count - offset, T{});
  __syncthreads();
  const T sum = Reduce(storage.reduce).Sum(items);
  if (threadIdx.x == 0) block_sums[blockIdx.x] = sum;
}

template <class T, int BlockThreads>
__global__ void block_max(const T* input, T* block_max_values, int count) {
  using Reduce = cub::BlockReduce<T, BlockThreads>;
  __shared__ typename Reduce::TempStorage storage;
  const int index = blockIdx.x * BlockThreads + threadIdx.x;
  const T value = index < count ? input[index] : cuda::std::numeric_limits<T>::lowest();
  const T result = Reduce(storage).Reduce(value, cuda::maximum<>{});
  if (threadIdx.x == 0) block_max_values[blockIdx.x] = result;
}

template <class T, int BlockThreads>
__global__ void block_exclusive_scan(const T* input, T* output, int count) {
  using Scan = cub::BlockScan<T, BlockThreads>;
  __shared__ typename Scan::TempStorage storage;
  const int index = blockIdx.x * BlockThreads + threadIdx.x;
  T value = index < count ? input[index] : T{};
  Scan(storage).ExclusiveSum(value, value);
  if (index < count) output[index] = value;
}

template __global__ void block_sum<float, 256, 4>(const float*, float*, int);
template __global__ void block_sum<double, 256, 4>(const double*, double*, int);
template __global__ void block_sum<int, 128, 8>(const int*, int*, int);
template __global__ void block_max<float, 256>(const float*, float*, int);
template __global__ void block_max<int, 256>(const int*, int*, int);
template __global__ void block_exclusive_scan<float, 256>(const float*, float*, int);
template __global__ void block_exclusive_scan<int, 512>(const int*, int*, int);
