// The real Driver, over libcuda.so.1. Internal: the public entry point is kiln::load_cuda_driver().
#pragma once

#include <memory>

#include "kiln/driver.hpp"

namespace kiln {

// Loads the driver from `library` (a soname or a path) every time it is called; no caching.
// load_cuda_driver() is this with "libcuda.so.1", once per process. Tests point it elsewhere
// (a missing file, the toolkit's stub) to see the errors a user would see.
[[nodiscard]] Result<std::shared_ptr<Driver>> load_cuda_driver_from(const char* library);

}  // namespace kiln
