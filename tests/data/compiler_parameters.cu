// Compiler test: kernels whose parameter sizes the cubin records (elf::parameter_sizes), with
// parameters of every kind a launch can pass: scalars of each width, pointers, an array (a
// pointer), small and large structs by value, none at all.
struct Pair {
  double first;
  char second;  // padded to 16 bytes
};
struct Large {
  float values[64];  // 256 bytes
};

extern "C" __global__ void no_parameters() {}

extern "C" __global__ void scalars(char c, short s, int i, long long l, float f, double d, bool* out) {
  out[0] = c + s + i + l + f + d > 0;
}

extern "C" __global__ void by_value(Pair pair, char tail, Large large, int values[3]) {
  values[0] = static_cast<int>(pair.first) + pair.second + tail + static_cast<int>(large.values[63]);
}

template <class T>
__global__ void axpy(T* y, const T* x, T a, int count) {
  const int index = blockIdx.x * blockDim.x + threadIdx.x;
  if (index < count) y[index] += a * x[index];
}
template __global__ void axpy<float>(float*, const float*, float, int);
template __global__ void axpy<double>(double*, const double*, double, int);
