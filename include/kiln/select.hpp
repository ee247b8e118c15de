// Which image a device gets: one pure function used by both `kiln select` and the runtime.
#pragma once

#include <span>
#include <string>

#include "kiln/catalog.hpp"
#include "kiln/error.hpp"

namespace kiln {

enum class Path { AotExact, AotCompatible, JitPtx, JitSource, CacheHit };
[[nodiscard]] const char* path_name(Path path) noexcept;  // "aot-exact", ..., "cache-hit"

struct SelectOptions {
  bool force_jit = false;    // KILN_FORCE_JIT: ignore cubins
  bool disable_jit = false;  // KILN_DISABLE_JIT: never pick PTX or source
};

struct Selection {
  Path path = Path::AotExact;
  std::size_t image_index = 0;  // into the span given to select_image
  ImageTarget target;
  std::string reason;           // one sentence: why this image
};

// In order: exact cubin, compatible cubin (nearest architecture), PTX JIT (newest that fits),
// source JIT (NVRTC), else an Error of kind NoCompatibleImage naming the device, what the
// bundle holds and the device list to rebuild with. `device_label` is used in messages ("l4").
[[nodiscard]] Result<Selection> select_image(std::span<const ImageTarget> images, ComputeCapability device,
                                             std::string_view device_label, const SelectOptions& options = {});

}  // namespace kiln
