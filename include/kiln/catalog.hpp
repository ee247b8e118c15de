// The device catalog: product names -> compute capability -> architecture, and
// NVIDIA's compatibility rules in one one-directional function, can_run().
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/error.hpp"

namespace kiln {

// A compute capability, e.g. {9, 0} for an H100.
struct ComputeCapability {
  int major = 0;
  int minor = 0;
  friend auto operator<=>(const ComputeCapability&, const ComputeCapability&) = default;
};

// Plain sm_90, architecture-specific sm_90a, family-specific sm_100f.
enum class ArchVariant { Plain, Specific, Family };

// An architecture, as a cubin or PTX target names it (without the sm_/compute_ prefix).
struct Arch {
  ComputeCapability cc;
  ArchVariant variant = ArchVariant::Plain;
  friend auto operator<=>(const Arch&, const Arch&) = default;

  [[nodiscard]] std::string sm_name() const;       // "sm_90a"
  [[nodiscard]] std::string compute_name() const;  // "compute_90a"
};

enum class ImageKind { Cubin, Ptx, Source };
[[nodiscard]] const char* kind_name(ImageKind kind) noexcept;  // "cubin", "ptx", "source"
[[nodiscard]] std::optional<ImageKind> parse_kind(std::string_view name) noexcept;

// What one image in a bundle was built for. Source images have no architecture.
struct ImageTarget {
  ImageKind kind = ImageKind::Cubin;
  Arch arch;
  friend bool operator==(const ImageTarget&, const ImageTarget&) = default;

  // "sm_90" for cubins, "compute_80" for PTX, "source" for source.
  [[nodiscard]] std::string name() const;
};

// Parses "sm_90", "sm_90a", "sm_100f", "compute_80" (also "90", "9.0"): the prefix, if any,
// is returned through `kind` (Cubin for sm_, Ptx for compute_).
[[nodiscard]] std::optional<Arch> parse_arch(std::string_view text, ImageKind* kind = nullptr);
[[nodiscard]] std::optional<ImageTarget> parse_target(std::string_view text);

// Can an image built for `target` run on a device of capability `device`?
// Cubin sm_XY: same major, minor >= Y. sm_XYa: exactly X.Y. sm_XYf: same family (major), minor >= Y.
// PTX compute_XY: any device >= X.Y; compute_XYa / compute_XYf keep the restrictions of a / f.
// Source: any device (compiled at run time for the device's own architecture).
[[nodiscard]] bool can_run(const ImageTarget& target, ComputeCapability device) noexcept;
// Tegra (Jetson) parts: their cubins run only on themselves, and desktop cubins not on them.
[[nodiscard]] bool is_tegra(ComputeCapability cc) noexcept;

enum class Segment { DataCentre, Workstation, Consumer, Embedded };
[[nodiscard]] const char* segment_name(Segment segment) noexcept;

struct Device {
  std::string_view name;                    // canonical, lower case: "h100"
  std::vector<std::string_view> aliases;    // other accepted spellings: "h100-sxm", "h100-pcie"
  std::string_view product;                 // "NVIDIA H100"
  std::string_view generation;              // "Hopper"
  Segment segment;
  ComputeCapability cc;
};

// Every catalog device, including ones the CUDA 13 toolkit can no longer target (v100),
// so that naming one gives "too old" rather than "unknown".
[[nodiscard]] std::span<const Device> catalog();

// Case-insensitive lookup by name or alias; spaces, '_' and '-' are ignored ("RTX 4090" == "rtx4090").
[[nodiscard]] const Device* find_device(std::string_view name);

// The catalog names closest to a misspelt word, best first (for "did you mean").
[[nodiscard]] std::vector<std::string> closest_device_names(std::string_view word, std::size_t count = 3);

// The oldest architecture CUDA 13 compiles for.
inline constexpr ComputeCapability kOldestSupported{7, 5};

}  // namespace kiln
