// Opens the bundles that kiln_add_kernels() embedded in this executable and checks what they
// hold: `app` a cubin for sm_80 and sm_90 and PTX for compute_80, each with both kernels;
// `app_fast` (SPLIT_KERNELS COMPRESS lz4) an LZ4-compressed sm_90 cubin per kernel. Needs no
// GPU (nothing is loaded on a device).
#include <kiln/bundle.hpp>
#include <kiln/bundles/app.hpp>
#include <kiln/bundles/app_fast.hpp>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <string_view>

namespace {

bool has_kernel(const kiln::ImageInfo& image, std::string_view part) {
  return std::any_of(image.kernels.begin(), image.kernels.end(),
                     [&](std::string_view name) { return name.find(part) != std::string_view::npos; });
}

}  // namespace

int main() {
  const kiln::BundleView view = kiln::bundles::app();
  std::printf("embedded bundle: %zu bytes at %p\n", view.size(), static_cast<const void*>(view.data()));
  if (view.size() == 0) {
    std::fprintf(stderr, "FAIL: the embedded bundle is empty\n");
    return 1;
  }
  auto bundle = kiln::Bundle::open(view, "app");
  if (!bundle) {
    std::fprintf(stderr, "FAIL: %s\n", bundle.error().describe().c_str());
    return 1;
  }
  int failures = 0;
  std::set<std::string> targets;
  for (const kiln::ImageInfo& image : bundle->images()) {
    const std::string target = image.target.name();
    targets.insert(target);
    std::printf("image %-10s %zu kernels:", target.c_str(), image.kernels.size());
    for (std::string_view kernel : image.kernels) std::printf(" %.*s", static_cast<int>(kernel.size()), kernel.data());
    std::printf("\n");
    if (target == "source") continue;
    for (const char* kernel : {"consumer_axpy", "consumer_scale"}) {
      if (!has_kernel(image, kernel)) {
        std::fprintf(stderr, "FAIL: image %s lacks kernel %s\n", target.c_str(), kernel);
        ++failures;
      }
    }
  }
  for (const char* expected : {"sm_80", "sm_90", "compute_80"}) {
    if (targets.count(expected) == 0) {
      std::fprintf(stderr, "FAIL: no %s image\n", expected);
      ++failures;
    }
  }
  auto fast = kiln::Bundle::open(kiln::bundles::app_fast(), "app_fast");
  if (!fast) {
    std::fprintf(stderr, "FAIL: %s\n", fast.error().describe().c_str());
    return 1;
  }
  for (const kiln::ImageInfo& image : fast->images()) {
    if (image.target.name() != "sm_90" || image.kernels.size() != 1 || image.codec != kiln::Codec::Lz4) {
      std::fprintf(stderr, "FAIL: app_fast holds a %s image of %zu kernels stored as %s, not sm_90, 1, lz4\n",
                   image.target.name().c_str(), image.kernels.size(), kiln::codec_name(image.codec));
      ++failures;
    }
  }
  if (fast->images().size() != 2) {
    std::fprintf(stderr, "FAIL: app_fast has %zu images, not one per kernel\n", fast->images().size());
    ++failures;
  }
  if (failures == 0) std::printf("OK: %zu + %zu images\n", bundle->images().size(), fast->images().size());
  return failures == 0 ? 0 : 1;
}
