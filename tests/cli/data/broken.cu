__global__ void broken(float* data) {
  data[0] = undeclared_name;
}
