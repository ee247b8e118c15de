#include <gtest/gtest.h>

#include "kiln/device_list.hpp"

namespace kiln {
namespace {

DeviceListContext cuda13() {
  DeviceListContext context;
  for (int n : {75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121}) context.supported.push_back({n / 10, n % 10});
  context.native = []() -> Result<std::vector<ComputeCapability>> {
    return make_error(Component::Driver, "no CUDA driver on this machine");
  };
  return context;
}

std::vector<std::string> names(const std::vector<Arch>& archs) {
  std::vector<std::string> out;
  for (const Arch& arch : archs) out.push_back(arch.sm_name());
  return out;
}

TEST(DeviceList, ProductsCollapseToArchitectures) {
  auto archs = parse_device_list("h100,h200", cuda13());
  ASSERT_TRUE(archs) << archs.error().describe();
  EXPECT_EQ(names(*archs), std::vector<std::string>{"sm_90"});
  archs = parse_device_list(" H100 , A100,sm_80,, l4 ", cuda13());
  ASSERT_TRUE(archs);
  EXPECT_EQ(names(*archs), (std::vector<std::string>{"sm_80", "sm_89", "sm_90"}));
}

TEST(DeviceList, RawArchitecturesAndVariants) {
  auto archs = parse_device_list("sm_90a,SM_100F,sm_120", cuda13());
  ASSERT_TRUE(archs) << archs.error().describe();
  EXPECT_EQ(names(*archs), (std::vector<std::string>{"sm_90a", "sm_100f", "sm_120"}));
  EXPECT_FALSE(parse_device_list("sm_80a", cuda13()));
  EXPECT_FALSE(parse_device_list("sm_90f", cuda13()));
}

TEST(DeviceList, AllIsEverySupportedArchitecture) {
  auto archs = parse_device_list("all", cuda13());
  ASSERT_TRUE(archs);
  EXPECT_EQ(archs->size(), 12u);
}

TEST(DeviceList, UnknownWordIsAUsageErrorWithSuggestions) {
  auto archs = parse_device_list("h100,h10O", cuda13());
  ASSERT_FALSE(archs);
  EXPECT_EQ(archs.error().kind, ErrorKind::Usage);
  EXPECT_NE(archs.error().message.find("'h10o'"), std::string::npos) << archs.error().message;
  EXPECT_NE(archs.error().hint.find("h100"), std::string::npos) << archs.error().hint;
}

TEST(DeviceList, TooOldDeviceNamesTheToolkitLimit) {
  auto archs = parse_device_list("v100", cuda13());
  ASSERT_FALSE(archs);
  EXPECT_EQ(archs.error().kind, ErrorKind::Usage);
  EXPECT_NE(archs.error().message.find("sm_70"), std::string::npos);
  EXPECT_NE(archs.error().message.find("CUDA 13"), std::string::npos);
  EXPECT_FALSE(parse_device_list("sm_70", cuda13()));
}

TEST(DeviceList, NativeWithoutGpuIsAUsageError) {
  auto archs = parse_device_list("native", cuda13());
  ASSERT_FALSE(archs);
  EXPECT_EQ(archs.error().kind, ErrorKind::Usage);
  EXPECT_NE(archs.error().message.find("native"), std::string::npos);
  DeviceListContext context = cuda13();
  context.native = []() -> Result<std::vector<ComputeCapability>> { return std::vector<ComputeCapability>{{9, 0}, {8, 6}}; };
  auto native = parse_device_list("native", context);
  ASSERT_TRUE(native);
  EXPECT_EQ(names(*native), (std::vector<std::string>{"sm_86", "sm_90"}));
}

TEST(DeviceList, EmptyListIsAUsageError) {
  EXPECT_FALSE(parse_device_list("", cuda13()));
  EXPECT_FALSE(parse_device_list(" , ,", cuda13()));
}

}  // namespace
}  // namespace kiln
