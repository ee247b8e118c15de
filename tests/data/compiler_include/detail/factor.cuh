// Included by scale.cuh relative to its own directory.
#pragma once
namespace kiln_test {
constexpr float kFactor = 3.0f;
}  // namespace kiln_test
