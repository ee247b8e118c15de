// Included by tests/data/compiler_user_header.cu through -I.
#pragma once
#include "detail/factor.cuh"

namespace kiln_test {
__device__ inline float scaled(float value) { return value * kFactor; }
}  // namespace kiln_test
