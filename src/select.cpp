#include "kiln/select.hpp"

#include <algorithm>
#include <optional>
#include <vector>

namespace kiln {

const char* path_name(Path path) noexcept {
  switch (path) {
    case Path::AotExact: return "aot-exact";
    case Path::AotCompatible: return "aot-compatible";
    case Path::JitPtx: return "jit-ptx";
    case Path::JitSource: return "jit-source";
    case Path::CacheHit: return "cache-hit";
  }
  return "unknown";
}

namespace {

std::string cc_text(ComputeCapability cc) { return std::to_string(cc.major) + "." + std::to_string(cc.minor); }

// Among images that can run, rank by how closely they were built for the device:
// the newest architecture not above it, and at equal architecture a > f > plain.
int variant_rank(ArchVariant variant) {
  switch (variant) {
    case ArchVariant::Specific: return 2;
    case ArchVariant::Family: return 1;
    case ArchVariant::Plain: return 0;
  }
  return 0;
}

bool closer(const Arch& candidate, const Arch& best) {
  if (candidate.cc != best.cc) return candidate.cc > best.cc;
  return variant_rank(candidate.variant) > variant_rank(best.variant);
}

std::optional<std::size_t> best_of(std::span<const ImageTarget> images, ComputeCapability device, ImageKind kind,
                                   bool exact) {
  std::optional<std::size_t> best;
  for (std::size_t i = 0; i < images.size(); ++i) {
    const ImageTarget& target = images[i];
    if (target.kind != kind || !can_run(target, device)) continue;
    if (exact != (target.arch.cc == device)) continue;
    if (!best || closer(target.arch, images[*best].arch)) best = i;
  }
  return best;
}

// "sm_80 cubin (x6), compute_80 ptx (x6)": a bundle of several sources holds each target once per source.
std::string holdings(std::span<const ImageTarget> images) {
  if (images.empty()) return "nothing";
  std::vector<std::pair<std::string, int>> counted;
  for (const ImageTarget& target : images) {
    const std::string name = target.name() + " " + kind_name(target.kind);
    auto found = std::find_if(counted.begin(), counted.end(), [&](const auto& item) { return item.first == name; });
    if (found == counted.end()) {
      counted.emplace_back(name, 1);
    } else {
      ++found->second;
    }
  }
  std::string text;
  for (const auto& [name, count] : counted) {
    if (!text.empty()) text += ", ";
    text += name + (count > 1 ? " (x" + std::to_string(count) + ")" : "");
  }
  return text;
}

}  // namespace

Result<Selection> select_image(std::span<const ImageTarget> images, ComputeCapability device,
                               std::string_view device_label, const SelectOptions& options) {
  const std::string device_arch = Arch{device, ArchVariant::Plain}.sm_name();
  const std::string who = std::string(device_label) + " (" + device_arch + ")";
  auto chosen = [&](Path path, std::size_t index, std::string reason) {
    return Selection{path, index, images[index], std::move(reason)};
  };

  if (!options.force_jit) {
    if (auto index = best_of(images, device, ImageKind::Cubin, true)) {
      return chosen(Path::AotExact, *index, "the bundle has a cubin built for " + images[*index].name() + ", exactly " + who);
    }
    if (auto index = best_of(images, device, ImageKind::Cubin, false)) {
      return chosen(Path::AotCompatible, *index,
                    "no " + device_arch + " cubin; the " + images[*index].name() + " cubin runs on compute capability " +
                        cc_text(device) + " (same major version, older minor)");
    }
  }
  if (!options.disable_jit) {
    std::optional<std::size_t> ptx = best_of(images, device, ImageKind::Ptx, true);
    if (!ptx) ptx = best_of(images, device, ImageKind::Ptx, false);
    if (ptx) {
      return chosen(Path::JitPtx, *ptx,
                    std::string(options.force_jit ? "KILN_FORCE_JIT is set" : "no cubin runs on " + who) + "; " +
                        images[*ptx].name() + " PTX is compiled for " + device_arch + " at run time");
    }
    for (std::size_t i = 0; i < images.size(); ++i) {
      if (images[i].kind == ImageKind::Source) {
        return chosen(Path::JitSource, i,
                      "no cubin or PTX fits " + who + "; the embedded source is compiled with NVRTC for " + device_arch);
      }
    }
  }

  // A rebuild helps only where this toolkit can target the device at all.
  const std::string remedy =
      device < kOldestSupported
          ? "no rebuild with this toolkit helps: CUDA 13 targets compute capability " + cc_text(kOldestSupported) +
                " and newer, so this GPU needs kernels built by an older toolkit"
          : "rebuild with this device in the list, e.g. --devices " + std::string(device_label) +
                " (KILN_AOT_DEVLIST), or keep PTX with --ptx " + Arch{device, ArchVariant::Plain}.compute_name() +
                " or older";
  Error error = make_error(Component::Runtime, "nothing in the bundle can run on " + who + "; it holds " + holdings(images),
                           {},
                           remedy + (options.disable_jit ? "; KILN_DISABLE_JIT=1 is set, which rules out JIT" : "") +
                               (options.force_jit ? "; KILN_FORCE_JIT=1 is set, which rules out cubins" : ""));
  error.kind = ErrorKind::NoCompatibleImage;
  return error;
}

}  // namespace kiln
