# install rules: filled in by the CMake-integration work
