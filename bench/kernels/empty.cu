// Kernels that do nothing, for bench/launch.cpp: with no work on the GPU, what is timed is the
// launch path alone. extern "C" keeps the names plain for cuModuleGetFunction and kiln alike.

// The fixed cost of a launch.
extern "C" __global__ void empty_no_arguments() {}

// The cost with a typical argument list (two pointers, a count, a scalar), which kiln checks
// against the kernel's parameter sizes.
extern "C" __global__ void empty_four_arguments(const float*, float*, long long, float) {}
