#pragma once
template <typename T>
__device__ T scale_value(T value, T factor) { return value * factor; }
