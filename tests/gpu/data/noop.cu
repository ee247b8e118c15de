// An empty kernel: what a launch costs when the kernel does nothing (launch overhead test).
extern "C" __global__ void noop() {}
