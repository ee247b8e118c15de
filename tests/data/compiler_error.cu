// Compiler test: a deliberate compile error on line 5 (an undeclared identifier).
extern "C" __global__ void broken(float* data, int count) {
  const int index = blockIdx.x * blockDim.x + threadIdx.x;
  if (index < count) {
    data[index] = undeclared_value;
  }
}
