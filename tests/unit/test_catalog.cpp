#include <gtest/gtest.h>

#include "kiln/catalog.hpp"

namespace kiln {
namespace {

ImageTarget cubin(const char* name) { return *parse_target(name); }

TEST(Catalog, FindsProductsCaseAndSpaceInsensitively) {
  ASSERT_NE(find_device("H100"), nullptr);
  EXPECT_EQ(find_device("H100")->cc, (ComputeCapability{9, 0}));
  EXPECT_EQ(find_device("RTX 4090"), find_device("rtx4090"));
  EXPECT_EQ(find_device("jetson_orin")->cc, (ComputeCapability{8, 7}));
  EXPECT_EQ(find_device("nonsense"), nullptr);
  EXPECT_EQ(find_device(""), nullptr);
}

TEST(Catalog, CoversTuringToBlackwell) {
  const std::pair<const char*, ComputeCapability> expected[] = {
      {"t4", {7, 5}},       {"a100", {8, 0}},    {"a30", {8, 0}},     {"a10", {8, 6}},     {"a40", {8, 6}},
      {"rtx3090", {8, 6}},  {"jetson-orin", {8, 7}}, {"l4", {8, 9}},  {"l40s", {8, 9}},    {"rtx4090", {8, 9}},
      {"h100", {9, 0}},     {"h200", {9, 0}},    {"gh200", {9, 0}},   {"b200", {10, 0}},   {"gb200", {10, 0}},
      {"b300", {10, 3}},    {"thor", {11, 0}},   {"rtx5090", {12, 0}}, {"rtx-pro-6000", {12, 0}}, {"gb10", {12, 1}},
      {"v100", {7, 0}},
  };
  for (const auto& [name, cc] : expected) {
    const Device* device = find_device(name);
    ASSERT_NE(device, nullptr) << name;
    EXPECT_EQ(device->cc, cc) << name;
  }
}

TEST(Catalog, NamesAndAliasesAreUnique) {
  std::vector<std::string> seen;
  for (const Device& device : catalog()) {
    EXPECT_EQ(find_device(device.name), &device) << device.name;
    for (auto alias : device.aliases) EXPECT_EQ(find_device(alias), &device) << alias;
  }
}

TEST(Arch, ParsesAndPrints) {
  ImageKind kind{};
  auto arch = parse_arch("sm_90a", &kind);
  ASSERT_TRUE(arch);
  EXPECT_EQ(arch->sm_name(), "sm_90a");
  EXPECT_EQ(kind, ImageKind::Cubin);
  arch = parse_arch("compute_100f", &kind);
  ASSERT_TRUE(arch);
  EXPECT_EQ(arch->compute_name(), "compute_100f");
  EXPECT_EQ(kind, ImageKind::Ptx);
  EXPECT_EQ(parse_arch("9.0")->sm_name(), "sm_90");
  EXPECT_EQ(parse_arch("sm_121")->cc, (ComputeCapability{12, 1}));
  for (const char* bad : {"", "sm_", "sm_9", "sm_x0", "compute_", "sm_90b", "sm_90aa", "sm_-10", "sm_99999"}) {
    EXPECT_FALSE(parse_arch(bad)) << bad;
  }
  EXPECT_EQ(parse_target("source")->kind, ImageKind::Source);
  EXPECT_EQ(parse_target("compute_80")->name(), "compute_80");
}

TEST(Compatibility, CubinRules) {
  EXPECT_TRUE(can_run(cubin("sm_80"), {8, 0}));
  EXPECT_TRUE(can_run(cubin("sm_80"), {8, 6}));
  EXPECT_TRUE(can_run(cubin("sm_80"), {8, 9}));
  EXPECT_FALSE(can_run(cubin("sm_80"), {9, 0}));   // other major
  EXPECT_FALSE(can_run(cubin("sm_86"), {8, 0}));   // older minor
  EXPECT_TRUE(can_run(cubin("sm_90a"), {9, 0}));
  EXPECT_FALSE(can_run(cubin("sm_100a"), {10, 3}));  // a: exactly X.Y
  EXPECT_TRUE(can_run(cubin("sm_100f"), {10, 3}));   // f: within the family
  EXPECT_FALSE(can_run(cubin("sm_103f"), {10, 0}));
  EXPECT_FALSE(can_run(cubin("sm_100f"), {11, 0}));
  EXPECT_TRUE(can_run(cubin("sm_120f"), {12, 1}));
}

TEST(Compatibility, PtxRules) {
  EXPECT_TRUE(can_run(cubin("compute_80"), {8, 0}));
  EXPECT_TRUE(can_run(cubin("compute_80"), {9, 0}));
  EXPECT_TRUE(can_run(cubin("compute_80"), {12, 1}));
  EXPECT_FALSE(can_run(cubin("compute_86"), {8, 0}));
  EXPECT_FALSE(can_run(cubin("compute_90"), {8, 9}));
  EXPECT_TRUE(can_run(cubin("compute_90a"), {9, 0}));
  EXPECT_FALSE(can_run(cubin("compute_90a"), {10, 0}));
  EXPECT_TRUE(can_run(cubin("compute_100f"), {10, 3}));
  EXPECT_FALSE(can_run(cubin("compute_100f"), {12, 0}));
  EXPECT_TRUE(can_run({ImageKind::Source, {}}, {7, 5}));
}

// Every catalog device against every image target the toolkit can build, checked against
// the rules written out independently of can_run's implementation.
TEST(Compatibility, EveryDeviceAgainstEveryTarget) {
  const int archs[][2] = {{7, 5}, {8, 0}, {8, 6}, {8, 7}, {8, 8}, {8, 9}, {9, 0}, {10, 0}, {10, 3}, {11, 0}, {12, 0}, {12, 1}};
  int checked = 0;
  for (const Device& device : catalog()) {
    const ComputeCapability d = device.cc;
    for (const auto& a : archs) {
      const ComputeCapability t{a[0], a[1]};
      for (ArchVariant variant : {ArchVariant::Plain, ArchVariant::Specific, ArchVariant::Family}) {
        const Arch arch{t, variant};
        const bool same_major_newer = d.major == t.major && d.minor >= t.minor;
        const bool exact = d == t;
        // Tegra (Xavier 7.2, Orin 8.7, Thor 11.0) has no binary compatibility with anything else.
        auto tegra = [](ComputeCapability cc) {
          return cc == ComputeCapability{7, 2} || cc == ComputeCapability{8, 7} || cc == ComputeCapability{11, 0};
        };
        const bool cubin_expected =
            variant == ArchVariant::Specific || tegra(d) || tegra(t) ? exact : same_major_newer;
        const bool newer = d.major > t.major || (d.major == t.major && d.minor >= t.minor);
        const bool ptx_expected = variant == ArchVariant::Plain      ? newer
                                  : variant == ArchVariant::Specific ? exact
                                                                     : same_major_newer;
        EXPECT_EQ(can_run({ImageKind::Cubin, arch}, d), cubin_expected) << device.name << " " << arch.sm_name();
        EXPECT_EQ(can_run({ImageKind::Ptx, arch}, d), ptx_expected) << device.name << " " << arch.compute_name();
        checked += 2;
      }
    }
  }
  EXPECT_GT(checked, 1000);
}

TEST(Compatibility, TegraCubinsRunOnlyOnTheirOwnGpu) {
  const ComputeCapability orin{8, 7}, l4{8, 9}, a10{8, 6}, thor{11, 0};
  auto cubin = [](const char* arch) { return *parse_target(arch); };
  EXPECT_FALSE(can_run(cubin("sm_80"), orin)) << "a desktop cubin on a Jetson";
  EXPECT_FALSE(can_run(cubin("sm_87"), l4)) << "a Jetson cubin on a desktop GPU of a later minor";
  EXPECT_FALSE(can_run(cubin("sm_87"), ComputeCapability{8, 8}));
  EXPECT_TRUE(can_run(cubin("sm_87"), orin));
  EXPECT_TRUE(can_run(cubin("sm_110"), thor));
  EXPECT_TRUE(can_run(cubin("sm_80"), a10)) << "desktop to desktop is unchanged";
  EXPECT_TRUE(can_run(cubin("compute_80"), orin)) << "PTX is compiled for the Jetson itself";
  EXPECT_TRUE(is_tegra(orin));
  EXPECT_FALSE(is_tegra(l4));
}

TEST(Catalog, SuggestsCloseNames) {
  auto names = closest_device_names("h10");
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "h100");
  names = closest_device_names("rtx409");
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "rtx4090");
  EXPECT_TRUE(closest_device_names("completely-unrelated-word").empty());
}

}  // namespace
}  // namespace kiln
