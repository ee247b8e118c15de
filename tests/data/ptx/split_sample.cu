// Source of split_sample.ptx, the PTX that tests/unit/test_ptx_split.cpp splits per kernel.
// Regenerate: nvcc -ptx -arch=compute_80 -o split_sample.ptx split_sample.cu
// Each kernel reaches a different part of the module, so a split that keeps too much or too
// little shows.
#include <cstdio>

__device__ int launches;                       // mutable state: only bump_launches reaches it
__constant__ float coefficients[4];            // a constant bank table: only polynomial reaches it
__device__ const float weights[3] = {0.25f, 0.5f, 0.25f};  // initialized global: only smooth

__device__ __noinline__ float square(float x) { return x * x; }
__device__ __noinline__ float cube(float x) { return square(x) * x; }  // calls square: transitive
__device__ __noinline__ float unused_helper(float x) { return x + 1.0f; }

extern "C" __global__ void polynomial(const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = coefficients[0] + coefficients[1] * x[i] + coefficients[2] * square(x[i]) + coefficients[3] * cube(x[i]);
}

extern "C" __global__ void squares(const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = square(x[i]);
}

extern "C" __global__ void bump_launches() {
  if (threadIdx.x == 0 && blockIdx.x == 0) atomicAdd(&launches, 1);
}

extern "C" __global__ void smooth(const float* x, float* y, int n) {
  extern __shared__ float tile[];  // dynamic shared memory: an .extern .shared declaration
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  tile[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  if (i > 0 && i + 1 < n && threadIdx.x > 0 && threadIdx.x + 1 < blockDim.x) {
    // Indexed at run time, so the table stays in memory instead of being folded into constants.
    y[i] = weights[i % 3] * (tile[threadIdx.x - 1] + tile[threadIdx.x] + tile[threadIdx.x + 1]);
  }
}

extern "C" __global__ void say_hello(int value) {
  printf("hello \"%d\" /* not a comment */ { not a brace\n", value);  // vprintf, and a string with tricky text
}

template <class T>
__global__ void scale(T* data, T factor, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] = data[i] * factor;
}
template __global__ void scale<float>(float*, float, int);
template __global__ void scale<double>(double*, double, int);
