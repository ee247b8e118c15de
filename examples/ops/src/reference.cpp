#include "ops/reference.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

// Host-side conversions with the same rounding as the device's.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace ops::reference {
namespace {

template <class Element>
void store(std::byte* destination, Element value) {
  std::memcpy(destination, &value, sizeof value);
}

template <class Element>
Element load(const std::byte* source) {
  Element value;
  std::memcpy(&value, source, sizeof value);
  return value;
}

template <class Function>
std::vector<double> map(std::span<const double> x, Function f) {
  std::vector<double> out(x.size());
  std::transform(x.begin(), x.end(), out.begin(), f);
  return out;
}

template <class Function>
std::vector<double> map(std::span<const double> a, std::span<const double> b, Function f) {
  std::vector<double> out(std::min(a.size(), b.size()));
  std::transform(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(out.size()), b.begin(), out.begin(), f);
  return out;
}

}  // namespace

std::vector<std::byte> encode(DType dtype, std::span<const double> values) {
  const std::size_t size = dtype_size(dtype);
  std::vector<std::byte> bytes(values.size() * size);
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::byte* destination = bytes.data() + i * size;
    const double value = values[i];
    switch (dtype) {
      case DType::F32: store(destination, static_cast<float>(value)); break;
      case DType::F64: store(destination, value); break;
      case DType::F16: store(destination, __float2half_rn(static_cast<float>(value))); break;
      case DType::BF16: store(destination, __float2bfloat16_rn(static_cast<float>(value))); break;
    }
  }
  return bytes;
}

std::vector<double> decode(DType dtype, std::span<const std::byte> bytes) {
  const std::size_t size = dtype_size(dtype);
  std::vector<double> values(bytes.size() / size);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::byte* source = bytes.data() + i * size;
    switch (dtype) {
      case DType::F32: values[i] = load<float>(source); break;
      case DType::F64: values[i] = load<double>(source); break;
      case DType::F16: values[i] = __half2float(load<__half>(source)); break;
      case DType::BF16: values[i] = __bfloat162float(load<__nv_bfloat16>(source)); break;
    }
  }
  return values;
}

std::vector<double> quantize(DType dtype, std::span<const double> values) {
  return decode(dtype, encode(dtype, values));
}

std::vector<double> add(std::span<const double> a, std::span<const double> b) {
  return map(a, b, [](double x, double y) { return x + y; });
}

std::vector<double> mul(std::span<const double> a, std::span<const double> b) {
  return map(a, b, [](double x, double y) { return x * y; });
}

std::vector<double> scale_bias(std::span<const double> x, double scale, double bias) {
  return map(x, [=](double v) { return v * scale + bias; });
}

std::vector<double> relu(std::span<const double> x) {
  return map(x, [](double v) { return v > 0 ? v : 0.0; });
}

std::vector<double> gelu(std::span<const double> x) {
  const double sqrt_2_over_pi = std::sqrt(2.0 / std::acos(-1.0));
  return map(x, [=](double v) { return 0.5 * v * (1 + std::tanh(sqrt_2_over_pi * (v + 0.044715 * v * v * v))); });
}

std::vector<double> silu(std::span<const double> x) {
  return map(x, [](double v) { return v / (1 + std::exp(-v)); });
}

double sum(std::span<const double> x) {
  double total = 0;
  for (double v : x) total += v;
  return total;
}

double max(std::span<const double> x) {
  double largest = -std::numeric_limits<double>::infinity();
  for (double v : x) largest = std::max(largest, v);
  return largest;
}

std::vector<double> softmax(std::span<const double> x, std::int64_t rows, std::int64_t cols) {
  std::vector<double> out(x.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::span<const double> row = x.subspan(static_cast<std::size_t>(r * cols), static_cast<std::size_t>(cols));
    const double row_max = max(row);
    double total = 0;
    for (double v : row) total += std::exp(v - row_max);
    for (std::int64_t c = 0; c < cols; ++c) {
      out[static_cast<std::size_t>(r * cols + c)] = std::exp(row[static_cast<std::size_t>(c)] - row_max) / total;
    }
  }
  return out;
}

std::vector<double> layernorm(std::span<const double> x, std::span<const double> gamma, std::span<const double> beta,
                              std::int64_t rows, std::int64_t cols, double epsilon) {
  std::vector<double> out(x.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::span<const double> row = x.subspan(static_cast<std::size_t>(r * cols), static_cast<std::size_t>(cols));
    const double mean = sum(row) / static_cast<double>(cols);
    double squares = 0;
    for (double v : row) squares += (v - mean) * (v - mean);
    const double inverse_stddev = 1 / std::sqrt(squares / static_cast<double>(cols) + epsilon);
    for (std::int64_t c = 0; c < cols; ++c) {
      const auto i = static_cast<std::size_t>(c);
      out[static_cast<std::size_t>(r * cols + c)] = (row[i] - mean) * inverse_stddev * gamma[i] + beta[i];
    }
  }
  return out;
}

std::vector<double> matmul(std::span<const double> a, std::span<const double> b, std::int64_t m, std::int64_t n,
                           std::int64_t k) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  // i-k-j order: the inner loop walks rows of b and c contiguously.
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t p = 0; p < k; ++p) {
      const double a_value = a[static_cast<std::size_t>(i * k + p)];
      const double* b_row = b.data() + p * n;
      double* c_row = c.data() + i * n;
      for (std::int64_t j = 0; j < n; ++j) c_row[j] += a_value * b_row[j];
    }
  }
  return c;
}

std::vector<double> transpose(std::span<const double> x, std::int64_t rows, std::int64_t cols) {
  std::vector<double> out(x.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      out[static_cast<std::size_t>(c * rows + r)] = x[static_cast<std::size_t>(r * cols + c)];
    }
  }
  return out;
}

}  // namespace ops::reference
