// Device lists: "h100, A100,sm_89" -> the distinct architectures to compile for.
#pragma once

#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "kiln/catalog.hpp"
#include "kiln/error.hpp"

namespace kiln {

struct DeviceListContext {
  // Architectures the installed toolkit can target (from NVRTC); plain variants.
  std::vector<ComputeCapability> supported;
  // The build machine's GPUs, for "native"; an error (no GPU) comes back as an Error.
  std::function<Result<std::vector<ComputeCapability>>()> native;
};

// Comma-separated, case- and space-insensitive; duplicates collapse; "all" and "native";
// product names and raw sm_XY / sm_XYa / sm_XYf. Result sorted and unique.
// Unknown words and devices the toolkit cannot target are Usage errors naming the word
// (and, for a typo, the closest known names).
[[nodiscard]] Result<std::vector<Arch>> parse_device_list(std::string_view text, const DeviceListContext& context);

// The name of the environment variable that `--devices` falls back to.
inline constexpr const char* kDeviceListVariable = "KILN_AOT_DEVLIST";

}  // namespace kiln
