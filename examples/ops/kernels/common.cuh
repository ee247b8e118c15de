// Shared by every kernel file of the op library: the element types, their accumulation
// types, conversions, and the launch shapes the host side (ops.cpp) must agree with.
// Compiled by NVRTC: device code only, toolkit headers only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace ops {

// Half types carry too few mantissa bits to accumulate in: sums, dot products and
// statistics run in float for fp32/fp16/bf16 and in double for fp64.
template <class T>
struct Accumulator {
  using type = float;
};
template <>
struct Accumulator<double> {
  using type = double;
};
template <class T>
using acc_t = typename Accumulator<T>::type;

// Element -> accumulation type. bf16 arithmetic has no native instructions before sm_80,
// so all math happens after this conversion.
__device__ __forceinline__ float widen(float value) { return value; }
__device__ __forceinline__ double widen(double value) { return value; }
__device__ __forceinline__ float widen(__half value) { return __half2float(value); }
__device__ __forceinline__ float widen(__nv_bfloat16 value) { return __bfloat162float(value); }

// Accumulation type -> element, rounding to nearest even.
template <class T>
__device__ __forceinline__ T narrow(acc_t<T> value);
template <>
__device__ __forceinline__ float narrow<float>(float value) { return value; }
template <>
__device__ __forceinline__ double narrow<double>(double value) { return value; }
template <>
__device__ __forceinline__ __half narrow<__half>(float value) { return __float2half_rn(value); }
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float value) { return __float2bfloat16_rn(value); }

// Overloads so templated math reads the same for float and double.
__device__ __forceinline__ float exp_of(float x) { return expf(x); }
__device__ __forceinline__ double exp_of(double x) { return exp(x); }
__device__ __forceinline__ float tanh_of(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_of(double x) { return tanh(x); }
__device__ __forceinline__ float rsqrt_of(float x) { return rsqrtf(x); }
__device__ __forceinline__ double rsqrt_of(double x) { return rsqrt(x); }
__device__ __forceinline__ float max_of(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double max_of(double a, double b) { return fmax(a, b); }

// The reduction operator cub::BlockReduce takes for a maximum.
struct Maximum {
  template <class A>
  __device__ __forceinline__ A operator()(A a, A b) const {
    return max_of(a, b);
  }
};

// The identity of max, from its bit pattern: spares every file <cuda/std/limits> (CCCL).
template <class A>
__device__ __forceinline__ A negative_infinity();
template <>
__device__ __forceinline__ float negative_infinity<float>() {
  return __int_as_float(static_cast<int>(0xff800000u));
}
template <>
__device__ __forceinline__ double negative_infinity<double>() {
  return __longlong_as_double(static_cast<long long>(0xfff0000000000000ull));
}

// 16 bytes of elements, moved by one vector load or store (LDG.128 / STG.128).
template <class T>
struct alignas(16) Pack {
  static constexpr int size = 16 / sizeof(T);
  T values[size];
};

__device__ __forceinline__ bool is_16_byte_aligned(const void* pointer) {
  return (reinterpret_cast<unsigned long long>(pointer) & 15u) == 0;
}

// Launch shapes. ops.cpp repeats these numbers (it cannot include this file): keep both in step.
constexpr int kElementwiseThreads = 256;
constexpr int kReduceThreads = 256;
constexpr int kRowThreads = 256;             // softmax, layernorm: one block per row
constexpr int kMatmulTile = 32;              // a 32 x 32 tile of C per block, K in slabs of 32
constexpr int kMatmulRowsPerThread = 4;      // so a block is 32 x 8 threads
constexpr int kTransposeTile = 32;
constexpr int kTransposeRowsPerThread = 4;   // a block is 32 x 8 threads

}  // namespace ops
