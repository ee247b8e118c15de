// Fuzz target: any text given to kiln::parse_device_list, with a fixed set of supported
// architectures and a `native` that fails as on a machine without a GPU. The result is an
// error of kind Usage or a sorted, distinct, supported list that parses back to itself.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kiln/device_list.hpp"

namespace {

void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz_device_list: invariant broken: %s\n", what);
    std::abort();
  }
}

const kiln::DeviceListContext& context() {
  static const kiln::DeviceListContext context{
      .supported = {{7, 5}, {8, 0}, {8, 6}, {8, 7}, {8, 8}, {8, 9}, {9, 0}, {10, 0}, {10, 3}, {11, 0}, {12, 0}, {12, 1}},
      .native = []() -> kiln::Result<std::vector<kiln::ComputeCapability>> {
        return kiln::make_error(kiln::Component::Driver, "no CUDA driver in the fuzzer");
      },
  };
  return context;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto archs = kiln::parse_device_list(text, context());
  if (!archs) {
    require(archs.error().kind == kiln::ErrorKind::Usage, "a bad device list is a usage error");
    require(!archs.error().message.empty(), "a usage error says what is wrong");
    return 0;
  }
  require(!archs->empty(), "a parsed list names at least one architecture");
  require(std::is_sorted(archs->begin(), archs->end()), "the list is sorted");
  require(std::adjacent_find(archs->begin(), archs->end()) == archs->end(), "the list has no duplicates");
  const auto& supported = context().supported;
  std::string canonical;
  for (const kiln::Arch& arch : *archs) {
    require(std::find(supported.begin(), supported.end(), arch.cc) != supported.end(), "every architecture is supported");
    canonical += (canonical.empty() ? "" : ",") + arch.sm_name();
  }
  auto again = kiln::parse_device_list(canonical, context());
  require(again.ok() && *again == *archs, "the canonical spelling parses back to the same list");
  return 0;
}
