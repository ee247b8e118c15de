#include "beta_common.cuh"

extern "C" __global__ void beta_scale_all(float* data, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] = beta_scale(data[i]);
}
