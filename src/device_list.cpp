#include "kiln/device_list.hpp"

#include <algorithm>
#include <cctype>

namespace kiln {
namespace {

std::string trim_lower(std::string_view word) {
  std::string out;
  for (char c : word) {
    if (!std::isspace(static_cast<unsigned char>(c))) out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

std::string supported_text(const std::vector<ComputeCapability>& supported) {
  std::string text;
  for (ComputeCapability cc : supported) {
    if (!text.empty()) text += ", ";
    text += Arch{cc, ArchVariant::Plain}.sm_name();
  }
  return text;
}

bool is_supported(const std::vector<ComputeCapability>& supported, ComputeCapability cc) {
  return std::find(supported.begin(), supported.end(), cc) != supported.end();
}

Result<Arch> checked(const Arch& arch, const std::string& word, const DeviceListContext& context) {
  if (!is_supported(context.supported, arch.cc)) {
    const std::string what = arch.sm_name();
    if (arch.cc < kOldestSupported) {
      return usage_error("'" + word + "' is " + what + ", which CUDA 13 can no longer target (it compiles for sm_75 and newer)",
                         "drop it from the device list, or build it with CUDA 12 or older");
    }
    return usage_error("'" + word + "' is " + what + ", which the installed toolkit cannot target",
                       "supported: " + supported_text(context.supported));
  }
  // Architecture-specific targets exist from sm_90a, family-specific ones from sm_100f.
  if (arch.variant == ArchVariant::Specific && arch.cc.major < 9) {
    return usage_error("'" + word + "': architecture-specific targets start at sm_90a");
  }
  if (arch.variant == ArchVariant::Family && arch.cc.major < 10) {
    return usage_error("'" + word + "': family-specific targets start at sm_100f");
  }
  return arch;
}

}  // namespace

Result<std::vector<Arch>> parse_device_list(std::string_view text, const DeviceListContext& context) {
  std::vector<Arch> archs;
  bool any_word = false;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string word = trim_lower(text.substr(start, comma - start));
    start = comma + 1;
    if (word.empty()) continue;
    any_word = true;

    if (word == "all") {
      for (ComputeCapability cc : context.supported) archs.push_back({cc, ArchVariant::Plain});
      continue;
    }
    if (word == "native") {
      if (!context.native) return usage_error("'native' needs a GPU on this machine, and none can be queried");
      auto native = context.native();
      if (!native) {
        Error error = native.error();
        error.kind = ErrorKind::Usage;
        error.message = "'native' needs a GPU on this machine: " + error.message;
        return error;
      }
      if (native->empty()) return usage_error("'native' needs a GPU on this machine, and it has none", "name the devices instead, e.g. --devices h100,a100");
      for (ComputeCapability cc : *native) {
        auto arch = checked({cc, ArchVariant::Plain}, "native", context);
        if (!arch) return arch.error();
        archs.push_back(*arch);
      }
      continue;
    }
    if (const Device* device = find_device(word)) {
      auto arch = checked({device->cc, ArchVariant::Plain}, word, context);
      if (!arch) return arch.error();
      archs.push_back(*arch);
      continue;
    }
    ImageKind kind = ImageKind::Cubin;
    if (auto arch = parse_arch(word, &kind); arch && kind == ImageKind::Cubin && word.starts_with("sm_")) {
      auto valid = checked(*arch, word, context);
      if (!valid) return valid.error();
      archs.push_back(*valid);
      continue;
    }
    std::string hint;
    const auto near = closest_device_names(word);
    if (!near.empty()) {
      hint = "did you mean ";
      for (std::size_t i = 0; i < near.size(); ++i) hint += (i ? ", " : "") + near[i];
      hint += "? ";
    }
    hint += "'kiln devices' lists every known name; sm_XY, sm_XYa and sm_XYf are accepted too";
    return usage_error("unknown device '" + word + "' in the device list", hint);
  }
  if (!any_word) return usage_error("the device list is empty", "name devices, e.g. --devices h100,a100, or set KILN_AOT_DEVLIST");
  std::sort(archs.begin(), archs.end());
  archs.erase(std::unique(archs.begin(), archs.end()), archs.end());
  return archs;
}

}  // namespace kiln
