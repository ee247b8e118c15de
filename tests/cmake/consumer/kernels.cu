// Two small kernels: one extern "C", one a C++ template (a mangled name).
extern "C" __global__ void consumer_axpy(float a, const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

template <class T>
__global__ void consumer_scale(T* data, T factor, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] *= factor;
}
template __global__ void consumer_scale<float>(float*, float, int);
