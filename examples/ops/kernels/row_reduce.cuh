// Block-wide reductions for the row kernels (softmax, layernorm: one block of kRowThreads per
// row), whose result every thread of the block needs.
#pragma once

#include <cub/block/block_reduce.cuh>

#include "common.cuh"

namespace ops {

// The reduction operator for a sum (cub's Sum() is a method of BlockReduce, not an operator).
struct Sum {
  template <class A>
  __device__ __forceinline__ A operator()(A a, A b) const {
    return a + b;
  }
};

// Reduces one value per thread over the block and gives the result to every thread.
template <class A, class Reduce>
__device__ A block_all_reduce(A value, Reduce reduce) {
  using BlockReduce = cub::BlockReduce<A, kRowThreads>;
  __shared__ typename BlockReduce::TempStorage scratch;
  __shared__ A result;
  const A block_value = BlockReduce(scratch).Reduce(value, reduce);
  if (threadIdx.x == 0) result = block_value;
  __syncthreads();
  const A broadcast = result;
  __syncthreads();  // the next call reuses scratch and result
  return broadcast;
}

}  // namespace ops
