// out (cols x rows) = transpose of in (rows x cols), both row-major. A 32 x 32 tile goes
// through shared memory so that both the global reads and the global writes are coalesced;
// 32 x 8 threads, each moving 4 elements.
#include "common.cuh"

namespace ops {

template <class T>
__global__ void __launch_bounds__(kTransposeTile * kTransposeTile / kTransposeRowsPerThread)
    transpose(const T* in, T* out, int rows, int cols) {
  constexpr int kRowStep = kTransposeTile / kTransposeRowsPerThread;  // == blockDim.y
  // The extra column staggers the tile's columns across banks: reading tile[x][r] down a
  // column would otherwise hit one bank 32 times.
  __shared__ T tile[kTransposeTile][kTransposeTile + 1];

  const int x = threadIdx.x;
  const int in_col = blockIdx.x * kTransposeTile + x;
  for (int r = threadIdx.y; r < kTransposeTile; r += kRowStep) {
    const int in_row = blockIdx.y * kTransposeTile + r;
    if (in_row < rows && in_col < cols) tile[r][x] = in[static_cast<long long>(in_row) * cols + in_col];
  }
  __syncthreads();

  const int out_col = blockIdx.y * kTransposeTile + x;
  for (int r = threadIdx.y; r < kTransposeTile; r += kRowStep) {
    const int out_row = blockIdx.x * kTransposeTile + r;
    if (out_row < cols && out_col < rows) out[static_cast<long long>(out_row) * rows + out_col] = tile[x][r];
  }
}

template __global__ void transpose<float>(const float*, float*, int, int);
template __global__ void transpose<double>(const double*, double*, int, int);
template __global__ void transpose<__half>(const __half*, __half*, int, int);
template __global__ void transpose<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, int, int);

}  // namespace ops
