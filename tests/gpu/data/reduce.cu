// A block reduction with cub: one partial sum per block of 256 threads.
#include <cub/block/block_reduce.cuh>

constexpr int kBlockThreads = 256;

extern "C" __global__ void block_sum(const float* in, float* partial_sums, int n) {
  using BlockReduce = cub::BlockReduce<float, kBlockThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  const int i = blockIdx.x * kBlockThreads + threadIdx.x;
  const float sum = BlockReduce(temp).Sum(i < n ? in[i] : 0.0f);
  if (threadIdx.x == 0) partial_sums[blockIdx.x] = sum;
}
