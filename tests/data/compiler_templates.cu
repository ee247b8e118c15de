// Compiler test: a templated kernel with explicit instantiations, an extern "C" kernel and
// a device function that must not be listed as a kernel.
template <class T>
__device__ __noinline__ T twice(T value) {
  return value + value;
}

template <class T>
__global__ void scale(T* data, T factor, int count) {
  const int index = blockIdx.x * blockDim.x + threadIdx.x;
  if (index < count) data[index] = twice(data[index]) * factor;
}

template __global__ void scale<float>(float*, float, int);
template __global__ void scale<double>(double*, double, int);
template __global__ void scale<int>(int*, int, int);

extern "C" __global__ void fill(float* data, float value, int count) {
  const int index = blockIdx.x * blockDim.x + threadIdx.x;
  if (index < count) data[index] = value;
}
