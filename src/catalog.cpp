#include "kiln/catalog.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <iterator>

namespace kiln {
namespace {

std::string normalize(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == ' ' || c == '-' || c == '_' || c == '\t') continue;
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

std::string arch_digits(const Arch& arch) {
  std::string text = std::to_string(arch.cc.major * 10 + arch.cc.minor);
  if (arch.variant == ArchVariant::Specific) text += 'a';
  if (arch.variant == ArchVariant::Family) text += 'f';
  return text;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

using S = Segment;
const std::vector<Device>& devices() {
  static const std::vector<Device> table = {
      // Too old for CUDA 13, listed so that naming them gives a clear "cannot target".
      {"p100", {"tesla-p100"}, "NVIDIA Tesla P100", "Pascal", S::DataCentre, {6, 0}},
      {"gtx1080", {"gtx1080ti"}, "NVIDIA GeForce GTX 1080", "Pascal", S::Consumer, {6, 1}},
      {"v100", {"tesla-v100", "v100s"}, "NVIDIA Tesla V100", "Volta", S::DataCentre, {7, 0}},
      {"titan-v", {}, "NVIDIA TITAN V", "Volta", S::Consumer, {7, 0}},
      {"jetson-xavier", {"xavier", "agx-xavier"}, "NVIDIA Jetson AGX Xavier", "Volta", S::Embedded, {7, 2}},
      // Turing
      {"t4", {"tesla-t4"}, "NVIDIA T4", "Turing", S::DataCentre, {7, 5}},
      {"quadro-rtx6000", {"quadro-rtx8000"}, "NVIDIA Quadro RTX 6000/8000", "Turing", S::Workstation, {7, 5}},
      {"titan-rtx", {}, "NVIDIA TITAN RTX", "Turing", S::Consumer, {7, 5}},
      {"rtx2080ti", {"rtx2080", "rtx2070", "rtx2060"}, "NVIDIA GeForce RTX 2080 Ti", "Turing", S::Consumer, {7, 5}},
      {"gtx1660", {"gtx1660ti", "gtx1650"}, "NVIDIA GeForce GTX 1660", "Turing", S::Consumer, {7, 5}},
      // Ampere
      {"a100", {"a100-sxm", "a100-pcie", "a800"}, "NVIDIA A100", "Ampere", S::DataCentre, {8, 0}},
      {"a30", {}, "NVIDIA A30", "Ampere", S::DataCentre, {8, 0}},
      {"a10", {"a10g"}, "NVIDIA A10", "Ampere", S::DataCentre, {8, 6}},
      {"a40", {}, "NVIDIA A40", "Ampere", S::DataCentre, {8, 6}},
      {"a16", {}, "NVIDIA A16", "Ampere", S::DataCentre, {8, 6}},
      {"a2", {}, "NVIDIA A2", "Ampere", S::DataCentre, {8, 6}},
      {"rtx-a6000", {"a6000", "rtx-a5000", "rtx-a4000"}, "NVIDIA RTX A6000", "Ampere", S::Workstation, {8, 6}},
      {"rtx3090", {"rtx3090ti", "rtx3080", "rtx3080ti", "rtx3070", "rtx3060"}, "NVIDIA GeForce RTX 3090", "Ampere", S::Consumer, {8, 6}},
      {"jetson-orin", {"orin", "agx-orin", "orin-nano", "orin-nx"}, "NVIDIA Jetson AGX Orin", "Ampere", S::Embedded, {8, 7}},
      // Ada Lovelace
      {"l4", {}, "NVIDIA L4", "Ada Lovelace", S::DataCentre, {8, 9}},
      {"l40", {}, "NVIDIA L40", "Ada Lovelace", S::DataCentre, {8, 9}},
      {"l40s", {}, "NVIDIA L40S", "Ada Lovelace", S::DataCentre, {8, 9}},
      {"rtx6000-ada", {"rtx-6000-ada", "rtx4000-ada", "rtx5000-ada"}, "NVIDIA RTX 6000 Ada Generation", "Ada Lovelace", S::Workstation, {8, 9}},
      {"rtx4090", {"rtx4080", "rtx4070", "rtx4070ti", "rtx4060"}, "NVIDIA GeForce RTX 4090", "Ada Lovelace", S::Consumer, {8, 9}},
      // Hopper
      {"h100", {"h100-sxm", "h100-pcie", "h100-nvl", "h800"}, "NVIDIA H100", "Hopper", S::DataCentre, {9, 0}},
      {"h200", {"h200-nvl"}, "NVIDIA H200", "Hopper", S::DataCentre, {9, 0}},
      {"gh200", {"grace-hopper"}, "NVIDIA GH200 Grace Hopper", "Hopper", S::DataCentre, {9, 0}},
      {"h20", {}, "NVIDIA H20", "Hopper", S::DataCentre, {9, 0}},
      // Blackwell
      {"b200", {"b100"}, "NVIDIA B200", "Blackwell", S::DataCentre, {10, 0}},
      {"gb200", {"grace-blackwell"}, "NVIDIA GB200 Grace Blackwell", "Blackwell", S::DataCentre, {10, 0}},
      {"b300", {"blackwell-ultra"}, "NVIDIA B300", "Blackwell Ultra", S::DataCentre, {10, 3}},
      {"gb300", {}, "NVIDIA GB300 Grace Blackwell Ultra", "Blackwell Ultra", S::DataCentre, {10, 3}},
      {"thor", {"jetson-thor", "agx-thor"}, "NVIDIA Jetson Thor", "Blackwell", S::Embedded, {11, 0}},
      {"rtx-pro-6000", {"rtx-pro-6000-blackwell", "rtx-pro-5000", "rtx-pro-4000"}, "NVIDIA RTX PRO 6000 Blackwell", "Blackwell", S::Workstation, {12, 0}},
      {"rtx5090", {"rtx5080", "rtx5070", "rtx5070ti", "rtx5060"}, "NVIDIA GeForce RTX 5090", "Blackwell", S::Consumer, {12, 0}},
      {"gb10", {"dgx-spark"}, "NVIDIA GB10 (DGX Spark)", "Blackwell", S::Workstation, {12, 1}},
  };
  return table;
}

}  // namespace

std::string Arch::sm_name() const { return "sm_" + arch_digits(*this); }
std::string Arch::compute_name() const { return "compute_" + arch_digits(*this); }

const char* kind_name(ImageKind kind) noexcept {
  switch (kind) {
    case ImageKind::Cubin: return "cubin";
    case ImageKind::Ptx: return "ptx";
    case ImageKind::Source: return "source";
  }
  return "unknown";
}

std::optional<ImageKind> parse_kind(std::string_view name) noexcept {
  if (name == "cubin") return ImageKind::Cubin;
  if (name == "ptx") return ImageKind::Ptx;
  if (name == "source") return ImageKind::Source;
  return std::nullopt;
}

std::string ImageTarget::name() const {
  switch (kind) {
    case ImageKind::Cubin: return arch.sm_name();
    case ImageKind::Ptx: return arch.compute_name();
    case ImageKind::Source: return "source";
  }
  return "unknown";
}

std::optional<Arch> parse_arch(std::string_view text, ImageKind* kind) {
  std::string word;
  for (char c : text) {
    if (c != ' ' && c != '\t') word.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  std::string_view rest = word;
  ImageKind parsed_kind = ImageKind::Cubin;
  if (rest.starts_with("sm_")) {
    rest.remove_prefix(3);
  } else if (rest.starts_with("compute_")) {
    rest.remove_prefix(8);
    parsed_kind = ImageKind::Ptx;
  }
  Arch arch;
  if (!rest.empty() && (rest.back() == 'a' || rest.back() == 'f')) {
    arch.variant = rest.back() == 'a' ? ArchVariant::Specific : ArchVariant::Family;
    rest.remove_suffix(1);
  }
  if (rest.empty() || rest.size() > 4) return std::nullopt;
  int major = 0;
  int minor = 0;
  if (auto dot = rest.find('.'); dot != std::string_view::npos) {
    auto [p1, e1] = std::from_chars(rest.data(), rest.data() + dot, major);
    auto [p2, e2] = std::from_chars(rest.data() + dot + 1, rest.data() + rest.size(), minor);
    if (e1 != std::errc{} || e2 != std::errc{} || p1 != rest.data() + dot || p2 != rest.data() + rest.size()) {
      return std::nullopt;
    }
  } else {
    int number = 0;
    auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), number);
    if (ec != std::errc{} || ptr != rest.data() + rest.size() || number < 10) return std::nullopt;
    major = number / 10;
    minor = number % 10;
  }
  if (major < 1 || major > 99 || minor < 0 || minor > 9) return std::nullopt;
  arch.cc = {major, minor};
  if (kind) *kind = parsed_kind;
  return arch;
}

std::optional<ImageTarget> parse_target(std::string_view text) {
  if (normalize(text) == "source") return ImageTarget{ImageKind::Source, {}};
  ImageKind kind = ImageKind::Cubin;
  auto arch = parse_arch(text, &kind);
  if (!arch) return std::nullopt;
  return ImageTarget{kind, *arch};
}

bool is_tegra(ComputeCapability cc) noexcept {
  // TK1, TX1, TX2, Xavier, Orin, Thor (10.1 before CUDA 13 renumbered it 11.0).
  constexpr ComputeCapability kTegra[] = {{3, 2}, {5, 3}, {6, 2}, {7, 2}, {8, 7}, {10, 1}, {11, 0}};
  return std::find(std::begin(kTegra), std::end(kTegra), cc) != std::end(kTegra);
}

bool can_run(const ImageTarget& target, ComputeCapability device) noexcept {
  if (target.kind == ImageKind::Source) return true;
  const ComputeCapability built = target.arch.cc;
  // "Binary compatibility is supported only for the desktop. It is not supported for Tegra. Also,
  // the binary compatibility between desktop and Tegra is not supported." (CUDA C++ Programming
  // Guide): an sm_80 cubin does not load on an Orin (8.7), nor an sm_87 one on an L4 (8.9).
  // PTX is compiled for the device, so it is not bound by this.
  const bool cubin_needs_exact = target.kind == ImageKind::Cubin && (is_tegra(built) || is_tegra(device));
  switch (target.arch.variant) {
    case ArchVariant::Specific:
      return device == built;
    case ArchVariant::Family:
      if (cubin_needs_exact) return device == built;
      return device.major == built.major && device.minor >= built.minor;
    case ArchVariant::Plain:
      if (target.kind == ImageKind::Ptx) return device >= built;
      if (cubin_needs_exact) return device == built;
      return device.major == built.major && device.minor >= built.minor;
  }
  return false;
}

const char* segment_name(Segment segment) noexcept {
  switch (segment) {
    case Segment::DataCentre: return "data-centre";
    case Segment::Workstation: return "workstation";
    case Segment::Consumer: return "consumer";
    case Segment::Embedded: return "embedded";
  }
  return "unknown";
}

std::span<const Device> catalog() { return devices(); }

const Device* find_device(std::string_view name) {
  const std::string wanted = normalize(name);
  if (wanted.empty()) return nullptr;
  for (const Device& device : devices()) {
    if (normalize(device.name) == wanted) return &device;
    for (std::string_view alias : device.aliases) {
      if (normalize(alias) == wanted) return &device;
    }
  }
  return nullptr;
}

std::vector<std::string> closest_device_names(std::string_view word, std::size_t count) {
  const std::string wanted = normalize(word);
  // No device name is near a word this long; skip the quadratic edit distances.
  if (wanted.size() > 64) return {};
  // Ranked by edit distance, then by the longest shared prefix ("h10" is nearer h100 than a10).
  std::vector<std::pair<std::size_t, std::string>> scored;
  auto consider = [&](std::string_view name) {
    const std::string candidate = normalize(name);
    const auto mismatch = std::mismatch(wanted.begin(), wanted.end(), candidate.begin(), candidate.end());
    const auto shared_prefix = static_cast<std::size_t>(mismatch.first - wanted.begin());
    scored.emplace_back(edit_distance(wanted, candidate) * 64 + (63 - std::min<std::size_t>(shared_prefix, 63)),
                        std::string(name));
  };
  for (const Device& device : devices()) {
    consider(device.name);
    for (std::string_view alias : device.aliases) consider(alias);
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  // Only near misses are suggestions: at most a third of the word's length wrong.
  const std::size_t limit = std::max<std::size_t>(2, wanted.size() / 3);
  std::vector<std::string> names;
  for (const auto& [distance, name] : scored) {
    if (distance / 64 > limit || names.size() == count) break;
    names.push_back(name);
  }
  return names;
}

}  // namespace kiln
