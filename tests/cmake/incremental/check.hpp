// Opens an embedded bundle and checks that every image holds `kernel`. Needs no GPU.
#pragma once

#include <kiln/bundle.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

inline int check_bundle(kiln::BundleView view, const char* name, const std::string& kernel) {
  auto bundle = kiln::Bundle::open(view, name);
  if (!bundle) {
    std::fprintf(stderr, "FAIL: %s: %s\n", name, bundle.error().describe().c_str());
    return 1;
  }
  if (bundle->images().empty()) {
    std::fprintf(stderr, "FAIL: %s has no images\n", name);
    return 1;
  }
  for (const kiln::ImageInfo& image : bundle->images()) {
    const auto& kernels = image.kernels;
    if (std::find(kernels.begin(), kernels.end(), kernel) == kernels.end()) {
      std::fprintf(stderr, "FAIL: %s image %s lacks %s\n", name, image.target.name().c_str(), kernel.c_str());
      return 1;
    }
    std::printf("%s: %s holds %s\n", name, image.target.name().c_str(), kernel.c_str());
  }
  return 0;
}
