# kiln_add_kernels(): filled in by the CMake-integration work
