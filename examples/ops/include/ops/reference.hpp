// CPU references for every op of kiln_ops, in double, and the host-side encoding of the
// element types: what the demo and the tests check the GPU against.
//
// The intended use: draw inputs as doubles, quantize() them to the element type (so the
// reference sees exactly what the GPU sees), encode() them for the upload, decode() the
// GPU's output, and compare it with the reference computed from the quantized inputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ops/types.hpp"

namespace ops::reference {

// Values -> the bytes of `dtype` elements, rounding to nearest even (fp16/bf16 through float,
// as the GPU's conversions round).
[[nodiscard]] std::vector<std::byte> encode(DType dtype, std::span<const double> values);
// The bytes of `dtype` elements -> values; a trailing partial element is ignored.
[[nodiscard]] std::vector<double> decode(DType dtype, std::span<const std::byte> bytes);
// What `dtype` makes of each value: decode(encode(values)).
[[nodiscard]] std::vector<double> quantize(DType dtype, std::span<const double> values);

// Element-wise; binary ops take equal-length inputs.
[[nodiscard]] std::vector<double> add(std::span<const double> a, std::span<const double> b);
[[nodiscard]] std::vector<double> mul(std::span<const double> a, std::span<const double> b);
[[nodiscard]] std::vector<double> scale_bias(std::span<const double> x, double scale, double bias);
[[nodiscard]] std::vector<double> relu(std::span<const double> x);
[[nodiscard]] std::vector<double> gelu(std::span<const double> x);  // the tanh approximation, as the kernel
[[nodiscard]] std::vector<double> silu(std::span<const double> x);

[[nodiscard]] double sum(std::span<const double> x);
[[nodiscard]] double max(std::span<const double> x);  // -inf when empty

// Row-major matrices.
[[nodiscard]] std::vector<double> softmax(std::span<const double> x, std::int64_t rows, std::int64_t cols);
[[nodiscard]] std::vector<double> layernorm(std::span<const double> x, std::span<const double> gamma,
                                            std::span<const double> beta, std::int64_t rows, std::int64_t cols,
                                            double epsilon);
[[nodiscard]] std::vector<double> matmul(std::span<const double> a, std::span<const double> b, std::int64_t m,
                                         std::int64_t n, std::int64_t k);
[[nodiscard]] std::vector<double> transpose(std::span<const double> x, std::int64_t rows, std::int64_t cols);

}  // namespace ops::reference
