// C = A B for row-major A (m x k), B (k x n), C (m x n), tiled through shared memory.
// A block computes a 32 x 32 tile of C with 32 x 8 threads, each thread 4 rows of one column,
// so each shared value read feeds 4 multiply-adds. Tiles are held in the accumulation type
// (half types are widened once, on load) and the dot products accumulate in it.
#include "common.cuh"

namespace ops {

template <class T>
__global__ void __launch_bounds__(kMatmulTile * kMatmulTile / kMatmulRowsPerThread)
    matmul(const T* a, const T* b, T* c, int m, int n, int k) {
  using A = acc_t<T>;
  constexpr int kRowStep = kMatmulTile / kMatmulRowsPerThread;  // == blockDim.y
  // A warp is one threadIdx.y: it reads a_tile[row][i] as a broadcast and b_tile[i][x]
  // as 32 consecutive words, so neither tile needs padding against bank conflicts.
  __shared__ A a_tile[kMatmulTile][kMatmulTile];
  __shared__ A b_tile[kMatmulTile][kMatmulTile];

  const int x = threadIdx.x;
  const int y = threadIdx.y;
  const int first_row = blockIdx.y * kMatmulTile;
  const int col = blockIdx.x * kMatmulTile + x;

  A sums[kMatmulRowsPerThread] = {};
  for (int slab = 0; slab < k; slab += kMatmulTile) {
    // Out-of-range elements load as zero, so edge tiles need no special inner loop.
#pragma unroll
    for (int r = 0; r < kMatmulRowsPerThread; ++r) {
      const int tile_row = y + r * kRowStep;
      const int a_row = first_row + tile_row;
      const int a_col = slab + x;
      a_tile[tile_row][x] = (a_row < m && a_col < k) ? widen(a[static_cast<long long>(a_row) * k + a_col]) : A(0);
      const int b_row = slab + tile_row;
      b_tile[tile_row][x] = (b_row < k && col < n) ? widen(b[static_cast<long long>(b_row) * n + col]) : A(0);
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kMatmulTile; ++i) {
      const A b_value = b_tile[i][x];
#pragma unroll
      for (int r = 0; r < kMatmulRowsPerThread; ++r) sums[r] += a_tile[y + r * kRowStep][i] * b_value;
    }
    __syncthreads();  // before the next slab overwrites the tiles
  }

#pragma unroll
  for (int r = 0; r < kMatmulRowsPerThread; ++r) {
    const int row = first_row + y + r * kRowStep;
    if (row < m && col < n) c[static_cast<long long>(row) * n + col] = narrow<T>(sums[r]);
  }
}

template __global__ void matmul<float>(const float*, const float*, float*, int, int, int);
template __global__ void matmul<double>(const double*, const double*, double*, int, int, int);
template __global__ void matmul<__half>(const __half*, const __half*, __half*, int, int, int);
template __global__ void matmul<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int, int,
                                               int);

}  // namespace ops
