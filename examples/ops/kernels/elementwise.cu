// Element-wise ops: out[i] = f(a[i], b[i]) or f(x[i]), computed in the accumulation type.
// Grid-stride loops, 16-byte vector loads and stores when every pointer allows them,
// a scalar loop for the tail (and for misaligned views into a buffer).
#include "common.cuh"

namespace ops {

template <class T, class Function>
__device__ __forceinline__ void map_unary(const T* x, T* out, long long n, Function f) {
  const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  long long scalar_start = 0;
  if (is_16_byte_aligned(x) && is_16_byte_aligned(out)) {
    using P = Pack<T>;
    const long long packs = n / P::size;
    for (long long i = first; i < packs; i += stride) {
      P pack = reinterpret_cast<const P*>(x)[i];
#pragma unroll
      for (int j = 0; j < P::size; ++j) pack.values[j] = narrow<T>(f(widen(pack.values[j])));
      reinterpret_cast<P*>(out)[i] = pack;
    }
    scalar_start = packs * P::size;
  }
  for (long long i = scalar_start + first; i < n; i += stride) out[i] = narrow<T>(f(widen(x[i])));
}

template <class T, class Function>
__device__ __forceinline__ void map_binary(const T* a, const T* b, T* out, long long n, Function f) {
  const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  long long scalar_start = 0;
  if (is_16_byte_aligned(a) && is_16_byte_aligned(b) && is_16_byte_aligned(out)) {
    using P = Pack<T>;
    const long long packs = n / P::size;
    for (long long i = first; i < packs; i += stride) {
      P left = reinterpret_cast<const P*>(a)[i];
      const P right = reinterpret_cast<const P*>(b)[i];
#pragma unroll
      for (int j = 0; j < P::size; ++j) {
        left.values[j] = narrow<T>(f(widen(left.values[j]), widen(right.values[j])));
      }
      reinterpret_cast<P*>(out)[i] = left;
    }
    scalar_start = packs * P::size;
  }
  for (long long i = scalar_start + first; i < n; i += stride) out[i] = narrow<T>(f(widen(a[i]), widen(b[i])));
}

template <class T>
__global__ void __launch_bounds__(kElementwiseThreads) add(const T* a, const T* b, T* out, long long n) {
  map_binary(a, b, out, n, [](acc_t<T> x, acc_t<T> y) { return x + y; });
}

template <class T>
__global__ void __launch_bounds__(kElementwiseThreads) mul(const T* a, const T* b, T* out, long long n) {
  map_binary(a, b, out, n, [](acc_t<T> x, acc_t<T> y) { return x * y; });
}

// out = x * scale + bias: the scalars come in the accumulation type, so fp16 callers keep
// a full-precision scale.
template <class T>
__global__ void __launch_bounds__(kElementwiseThreads)
    scale_bias(const T* x, T* out, acc_t<T> scale, acc_t<T> bias, long long n) {
  map_unary(x, out, n, [scale, bias](acc_t<T> v) { return v * scale + bias; });
}

template <class T>
__global__ void __launch_bounds__(kElementwiseThreads) relu(const T* x, T* out, long long n) {
  map_unary(x, out, n, [](acc_t<T> v) { return v > acc_t<T>(0) ? v : acc_t<T>(0); });
}

// The tanh approximation used by GPT-2 and BERT: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <class T>
__global__ void __launch_bounds__(kElementwiseThreads) gelu(const T* x, T* out, long long n) {
  map_unary(x, out, n, [](acc_t<T> v) {
    using A = acc_t<T>;
    const A sqrt_2_over_pi = A(0.7978845608028654);
    return A(0.5) * v * (A(1) + tanh_of(sqrt_2_over_pi * (v + A(0.044715) * v * v * v)));
  });
}

// SiLU (swish): x * sigmoid(x).
template <class T>
__global__ void __launch_bounds__(kElementwiseThreads) silu(const T* x, T* out, long long n) {
  map_unary(x, out, n, [](acc_t<T> v) { return v / (acc_t<T>(1) + exp_of(-v)); });
}

template __global__ void add<float>(const float*, const float*, float*, long long);
template __global__ void add<double>(const double*, const double*, double*, long long);
template __global__ void add<__half>(const __half*, const __half*, __half*, long long);
template __global__ void add<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, long long);

template __global__ void mul<float>(const float*, const float*, float*, long long);
template __global__ void mul<double>(const double*, const double*, double*, long long);
template __global__ void mul<__half>(const __half*, const __half*, __half*, long long);
template __global__ void mul<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, long long);

template __global__ void scale_bias<float>(const float*, float*, float, float, long long);
template __global__ void scale_bias<double>(const double*, double*, double, double, long long);
template __global__ void scale_bias<__half>(const __half*, __half*, float, float, long long);
template __global__ void scale_bias<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, float, float, long long);

template __global__ void relu<float>(const float*, float*, long long);
template __global__ void relu<double>(const double*, double*, long long);
template __global__ void relu<__half>(const __half*, __half*, long long);
template __global__ void relu<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, long long);

template __global__ void gelu<float>(const float*, float*, long long);
template __global__ void gelu<double>(const double*, double*, long long);
template __global__ void gelu<__half>(const __half*, __half*, long long);
template __global__ void gelu<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, long long);

template __global__ void silu<float>(const float*, float*, long long);
template __global__ void silu<double>(const double*, double*, long long);
template __global__ void silu<__half>(const __half*, __half*, long long);
template __global__ void silu<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, long long);

}  // namespace ops
