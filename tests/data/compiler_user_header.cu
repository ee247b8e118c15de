// Compiler test: a user header found through an -I directory, which itself includes a
// header relative to its own directory; SCALE_BIAS comes from a -D define.
#include "scale.cuh"

#ifndef SCALE_BIAS
#error "SCALE_BIAS must be defined (-DSCALE_BIAS=...)"
#endif

extern "C" __global__ void biased_scale(float* data, int count) {
  const int index = blockIdx.x * blockDim.x + threadIdx.x;
  if (index < count) data[index] = kiln_test::scaled(data[index]) + SCALE_BIAS;
}
