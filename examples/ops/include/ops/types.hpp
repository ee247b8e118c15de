// The element types and operations of the op library, as plain values: shared by the
// GPU library (ops.hpp) and the CPU reference (reference.hpp), which needs no kiln.
#pragma once

#include <array>
#include <cstddef>

namespace ops {

enum class DType { F32, F64, F16, BF16 };
inline constexpr std::array<DType, 4> kDTypes = {DType::F32, DType::F64, DType::F16, DType::BF16};

// "f32", "f64", "f16", "bf16".
[[nodiscard]] constexpr const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
  }
  return "?";
}

[[nodiscard]] constexpr std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::F16: return 2;
    case DType::BF16: return 2;
  }
  return 0;
}

enum class Op { Add, Mul, ScaleBias, Relu, Gelu, Silu, Sum, Max, Softmax, LayerNorm, Matmul, Transpose };
inline constexpr std::array<Op, 12> kOps = {Op::Add, Op::Mul, Op::ScaleBias, Op::Relu,      Op::Gelu,   Op::Silu,
                                            Op::Sum, Op::Max, Op::Softmax,   Op::LayerNorm, Op::Matmul, Op::Transpose};

// "add", "mul", "scale_bias", "relu", "gelu", "silu", "sum", "max", "softmax", "layernorm", "matmul", "transpose".
[[nodiscard]] constexpr const char* op_name(Op op) noexcept {
  switch (op) {
    case Op::Add: return "add";
    case Op::Mul: return "mul";
    case Op::ScaleBias: return "scale_bias";
    case Op::Relu: return "relu";
    case Op::Gelu: return "gelu";
    case Op::Silu: return "silu";
    case Op::Sum: return "sum";
    case Op::Max: return "max";
    case Op::Softmax: return "softmax";
    case Op::LayerNorm: return "layernorm";
    case Op::Matmul: return "matmul";
    case Op::Transpose: return "transpose";
  }
  return "?";
}

}  // namespace ops
