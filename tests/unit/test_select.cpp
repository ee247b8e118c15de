#include <gtest/gtest.h>

#include "kiln/select.hpp"

namespace kiln {
namespace {

std::vector<ImageTarget> targets(std::initializer_list<const char*> names) {
  std::vector<ImageTarget> out;
  for (const char* name : names) out.push_back(*parse_target(name));
  return out;
}

TEST(Select, OrderOfPreference) {
  const auto images = targets({"sm_80", "sm_90", "compute_80", "source"});
  auto h200 = select_image(images, {9, 0}, "h200");
  ASSERT_TRUE(h200);
  EXPECT_EQ(h200->path, Path::AotExact);
  EXPECT_EQ(h200->target.name(), "sm_90");

  auto l4 = select_image(images, {8, 9}, "l4");
  ASSERT_TRUE(l4);
  EXPECT_EQ(l4->path, Path::AotCompatible);
  EXPECT_EQ(l4->target.name(), "sm_80");

  auto b200 = select_image(images, {10, 0}, "b200");
  ASSERT_TRUE(b200);
  EXPECT_EQ(b200->path, Path::JitPtx);
  EXPECT_EQ(b200->target.name(), "compute_80");
  EXPECT_FALSE(b200->reason.empty());
}

TEST(Select, NearestCompatibleCubinWins) {
  // sm_87 is nearer to 8.9 but is Jetson Orin's (Tegra), which runs on nothing else.
  const auto images = targets({"sm_80", "sm_86", "sm_87"});
  auto result = select_image(images, {8, 9}, "l4");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->target.name(), "sm_86");
  auto a10 = select_image(targets({"sm_80", "sm_86"}), {8, 6}, "a10");
  ASSERT_TRUE(a10);
  EXPECT_EQ(a10->target.name(), "sm_86");
  EXPECT_EQ(select_image(targets({"sm_75", "sm_80"}), {8, 9}, "l4")->target.name(), "sm_80");
}

TEST(Select, ArchitectureSpecificPreferredWhenExact) {
  const auto images = targets({"sm_90", "sm_90a"});
  auto result = select_image(images, {9, 0}, "h100");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->target.name(), "sm_90a");
}

TEST(Select, SourceWhenNothingElseFits) {
  const auto images = targets({"sm_90", "compute_90", "source"});
  auto result = select_image(images, {8, 0}, "a100");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->path, Path::JitSource);
  EXPECT_EQ(result->image_index, 2u);
}

TEST(Select, NothingFitsNamesDeviceHoldingsAndRebuildList) {
  const auto images = targets({"sm_80", "sm_90"});
  auto result = select_image(images, {8, 9}, "l4");
  ASSERT_TRUE(result);  // sm_80 runs on 8.9
  auto b200 = select_image(images, {10, 0}, "b200");
  ASSERT_FALSE(b200);
  EXPECT_EQ(b200.error().kind, ErrorKind::NoCompatibleImage);
  EXPECT_NE(b200.error().message.find("b200 (sm_100)"), std::string::npos) << b200.error().message;
  EXPECT_NE(b200.error().message.find("sm_80 cubin, sm_90 cubin"), std::string::npos) << b200.error().message;
  EXPECT_NE(b200.error().hint.find("--devices b200"), std::string::npos);
  const auto per_source = targets({"sm_90", "sm_90", "sm_90"});
  auto l4 = select_image(per_source, {8, 9}, "l4");
  ASSERT_FALSE(l4);
  EXPECT_NE(l4.error().message.find("it holds sm_90 cubin (x3)"), std::string::npos) << l4.error().message;
}

TEST(Select, NothingFitsAGpuOlderThanTheToolkitSaysNoRebuildHelps) {
  // A V100 (7.0): CUDA 13 targets 7.5 and newer, so "--devices v100" or "--ptx compute_70" would
  // only be refused in turn.
  auto v100 = select_image(targets({"sm_80", "compute_80"}), {7, 0}, "v100");
  ASSERT_FALSE(v100);
  EXPECT_NE(v100.error().hint.find("no rebuild with this toolkit helps"), std::string::npos) << v100.error().hint;
  EXPECT_NE(v100.error().hint.find("7.5"), std::string::npos) << v100.error().hint;
  EXPECT_EQ(v100.error().hint.find("--devices v100"), std::string::npos) << v100.error().hint;
  EXPECT_EQ(v100.error().hint.find("compute_70"), std::string::npos) << v100.error().hint;
}

TEST(Select, ForceAndDisableJit) {
  const auto images = targets({"sm_90", "compute_80"});
  auto forced = select_image(images, {9, 0}, "h100", {.force_jit = true});
  ASSERT_TRUE(forced);
  EXPECT_EQ(forced->path, Path::JitPtx);
  auto disabled = select_image(images, {10, 0}, "b200", {.disable_jit = true});
  ASSERT_FALSE(disabled);
  EXPECT_NE(disabled.error().hint.find("KILN_DISABLE_JIT"), std::string::npos);
  auto both = select_image(images, {9, 0}, "h100", {.force_jit = true, .disable_jit = true});
  EXPECT_FALSE(both);
}

TEST(Select, PathNames) {
  EXPECT_STREQ(path_name(Path::AotExact), "aot-exact");
  EXPECT_STREQ(path_name(Path::AotCompatible), "aot-compatible");
  EXPECT_STREQ(path_name(Path::JitPtx), "jit-ptx");
  EXPECT_STREQ(path_name(Path::JitSource), "jit-source");
  EXPECT_STREQ(path_name(Path::CacheHit), "cache-hit");
}

}  // namespace
}  // namespace kiln
