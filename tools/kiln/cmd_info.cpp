// kiln devices, kiln inspect, kiln select: read-only views over the catalog and a bundle.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "kiln/bundle.hpp"
#include "kiln/catalog.hpp"
#include "kiln/compiler.hpp"
#include "kiln/select.hpp"

namespace kiln::cli {
namespace {

using nlohmann::ordered_json;

std::string cc_text(ComputeCapability cc) { return std::to_string(cc.major) + "." + std::to_string(cc.minor); }

std::string join(const std::vector<std::string_view>& words) {
  std::string text;
  for (auto word : words) text += (text.empty() ? "" : ",") + std::string(word);
  return text;
}

std::string human_size(std::uint64_t bytes) {
  char text[32];
  if (bytes >= (1u << 20)) {
    std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  } else if (bytes >= 1024) {
    std::snprintf(text, sizeof text, "%.1f KiB", static_cast<double>(bytes) / 1024);
  } else {
    std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
  }
  return text;
}

// A device given by name (l4) or by architecture (sm_89, 8.9).
Result<std::pair<std::string, ComputeCapability>> resolve_device(const std::string& text) {
  if (const Device* device = find_device(text)) return std::pair{std::string(device->name), device->cc};
  if (auto arch = parse_arch(text)) return std::pair{arch->sm_name(), arch->cc};
  std::string hint = "name a device ('kiln devices' lists them) or an architecture such as sm_89";
  if (auto near = closest_device_names(text); !near.empty()) hint = "did you mean " + near.front() + "? " + hint;
  return usage_error("unknown device '" + text + "'", hint);
}

}  // namespace

Result<void> run_devices(bool json) {
  // The toolkit's reach comes from NVRTC when it is there; the catalog stands without it.
  auto nvrtc = nvrtc_info();
  auto supported = [&](ComputeCapability cc) {
    if (!nvrtc) return cc >= kOldestSupported;
    for (auto s : nvrtc->supported) {
      if (s == cc) return true;
    }
    return false;
  };
  if (json) {
    ordered_json out;
    out["toolkit"] = nvrtc ? ordered_json{{"nvrtc", std::to_string(nvrtc->major) + "." + std::to_string(nvrtc->minor)}}
                           : ordered_json{{"nvrtc", nullptr}};
    ordered_json archs = ordered_json::array();
    if (nvrtc) {
      for (auto cc : nvrtc->supported) archs.push_back(Arch{cc, ArchVariant::Plain}.sm_name());
    }
    out["toolkit"]["architectures"] = archs;
    out["devices"] = ordered_json::array();
    for (const Device& device : catalog()) {
      ordered_json aliases = ordered_json::array();
      for (auto alias : device.aliases) aliases.push_back(alias);
      out["devices"].push_back({{"name", device.name},
                                {"aliases", aliases},
                                {"product", device.product},
                                {"generation", device.generation},
                                {"segment", segment_name(device.segment)},
                                {"compute_capability", cc_text(device.cc)},
                                {"arch", Arch{device.cc, ArchVariant::Plain}.sm_name()},
                                {"supported", supported(device.cc)}});
    }
    std::cout << out.dump(2) << "\n";
    return {};
  }
  std::printf("%-16s %-7s %-4s %-16s %-12s %-9s %s\n", "NAME", "ARCH", "CC", "GENERATION", "SEGMENT", "CUDA 13", "ALIASES");
  for (const Device& device : catalog()) {
    std::printf("%-16s %-7s %-4s %-16s %-12s %-9s %s\n", std::string(device.name).c_str(),
                Arch{device.cc, ArchVariant::Plain}.sm_name().c_str(), cc_text(device.cc).c_str(),
                std::string(device.generation).c_str(), segment_name(device.segment), supported(device.cc) ? "yes" : "no",
                join(device.aliases).c_str());
  }
  if (nvrtc) {
    std::string archs;
    for (auto cc : nvrtc->supported) archs += " " + Arch{cc, ArchVariant::Plain}.sm_name();
    std::printf("\nNVRTC %d.%d targets:%s (also sm_XYa from sm_90, sm_XYf from sm_100)\n", nvrtc->major, nvrtc->minor,
                archs.c_str());
  } else {
    std::printf("\nNVRTC not found (%s): the CUDA 13 column assumes sm_75 and newer\n", nvrtc.error().message.c_str());
  }
  return {};
}

Result<void> run_inspect(const std::filesystem::path& file, bool json, bool list_kernels) {
  auto bundle = Bundle::open_file(file);
  if (!bundle) return bundle.error();
  std::uint64_t raw_total = 0;
  std::uint64_t stored_total = 0;
  for (const ImageInfo& image : bundle->images()) {
    raw_total += image.raw_size;
    stored_total += image.stored_size;
  }
  if (json) {
    ordered_json out;
    out["file"] = file.string();
    out["format_version"] = bundle->format_version();
    out["file_size"] = bundle->file_size();
    ordered_json metadata = ordered_json::object();
    for (const auto& [key, value] : bundle->metadata().entries) metadata[key] = value;
    out["metadata"] = metadata;
    out["images"] = ordered_json::array();
    for (const ImageInfo& image : bundle->images()) {
      ordered_json readable = ordered_json::array();
      for (const auto& kernel : image.kernels) readable.push_back(demangle(kernel));
      out["images"].push_back({{"target", image.target.name()},
                               {"kind", kind_name(image.target.kind)},
                               {"raw_size", image.raw_size},
                               {"stored_size", image.stored_size},
                               {"codec", codec_name(image.codec)},
                               {"kernels", image.mangled_kernels()},
                               {"readable_kernels", readable}});
    }
    out["totals"] = {{"images", bundle->images().size()}, {"raw_size", raw_total}, {"stored_size", stored_total}};
    std::cout << out.dump(2) << "\n";
    return {};
  }
  std::printf("%s: kiln bundle v%u, %s\n", file.string().c_str(), bundle->format_version(),
              human_size(bundle->file_size()).c_str());
  for (const auto& [key, value] : bundle->metadata().entries) std::printf("  %s: %s\n", key.c_str(), value.c_str());
  std::printf("\n%-12s %-7s %12s %12s %6s %8s\n", "TARGET", "KIND", "RAW", "STORED", "CODEC", "KERNELS");
  for (const ImageInfo& image : bundle->images()) {
    std::printf("%-12s %-7s %12llu %12llu %6s %8zu\n", image.target.name().c_str(), kind_name(image.target.kind),
                static_cast<unsigned long long>(image.raw_size), static_cast<unsigned long long>(image.stored_size),
                codec_name(image.codec), image.kernels.size());
    if (list_kernels) {
      for (const auto& kernel : image.kernels) std::printf("    %s  [%s]\n", demangle(kernel).c_str(), std::string(kernel).c_str());
    }
  }
  std::printf("%-12s %-7s %12llu %12llu   (%.2fx smaller)\n", "total", "", static_cast<unsigned long long>(raw_total),
              static_cast<unsigned long long>(stored_total),
              stored_total ? static_cast<double>(raw_total) / static_cast<double>(stored_total) : 0.0);
  return {};
}

Result<void> run_select(const std::filesystem::path& file, const std::string& device_text, bool json) {
  auto device = resolve_device(device_text);
  if (!device) return device.error();
  auto bundle = Bundle::open_file(file);
  if (!bundle) return bundle.error();
  const auto& [label, cc] = *device;
  const std::string arch = Arch{cc, ArchVariant::Plain}.sm_name();
  const auto targets = bundle->targets();
  auto selection = select_image(targets, cc, label);
  if (json) {
    ordered_json out{{"device", label}, {"arch", arch}};
    if (selection) {
      out["path"] = path_name(selection->path);
      out["choice"] = {{"target", selection->target.name()}, {"kind", kind_name(selection->target.kind)}};
      out["reason"] = selection->reason;
    } else {
      out["path"] = nullptr;
      out["choice"] = nullptr;
      out["reason"] = selection.error().message;
    }
    std::cout << out.dump(2) << "\n";
  } else if (selection) {
    std::printf("%s (%s): %s: %s %s\n  %s\n", label.c_str(), arch.c_str(), path_name(selection->path),
                selection->target.name().c_str(), kind_name(selection->target.kind), selection->reason.c_str());
  }
  if (!selection) return selection.error();
  return {};
}

}  // namespace kiln::cli
