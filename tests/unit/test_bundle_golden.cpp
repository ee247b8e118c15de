// Golden bundles: the format's memory. tests/golden/bundle-v<N>-*.kiln were written from the fixed
// inputs below; the reader must keep reading every one of them, and the writer must reproduce the
// current ones (kGoldens) byte for byte, in the version it writes. The rule
// (kiln/bundle_format.hpp): change the layout, bump kFormatVersion, add goldens of the new
// version (KILN_UPDATE_GOLDEN=1 writes them), keep the old.
#include <gtest/gtest.h>
#include <lz4.h>
#include <zstd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "kiln/bundle.hpp"
#include "kiln/bundle_format.hpp"

namespace kiln {
namespace {

// The libzstd that wrote the zstd golden: another version may compress the same input to other
// (equally valid) bytes, so only that version is held to byte equality.
constexpr int kGoldenZstdVersion = 10504;
// The same for the liblz4 that wrote the lz4 golden (LZ4HC's choices may change between versions).
constexpr int kGoldenLz4Version = 10904;

const std::filesystem::path kGoldenDir = std::filesystem::path(KILN_SOURCE_DIR) / "tests" / "golden";

Bytes text(std::string_view chars) { return Bytes(chars.begin(), chars.end()); }

// Fixed inputs that use every feature: a dictionary chain, a duplicate, each kind and variant.
std::vector<Image> golden_images() {
  Bytes sm80 = text("\x7f" "ELF golden cubin for sm_80: ");
  for (int i = 0; i < 40; ++i) sm80.insert(sm80.end(), {'M', 'O', 'V', static_cast<std::uint8_t>(i), ' ', 'R', '1', ';'});
  Bytes sm86 = sm80;
  sm86[26] = '6';
  sm86[100] = 'X';
  const std::vector<std::string> kernels = {"_Z3addPfS_S_i", "_Z6reducePKfPfi"};
  return {
      Image{{ImageKind::Cubin, Arch{{8, 0}}}, kernels, sm80},
      Image{{ImageKind::Cubin, Arch{{8, 6}}}, kernels, sm86},
      Image{{ImageKind::Cubin, Arch{{8, 9}}}, kernels, sm86},
      Image{{ImageKind::Cubin, Arch{{9, 0}, ArchVariant::Specific}}, {"_Z4wgmmav"}, text("\x7f" "ELF sm_90a")},
      Image{{ImageKind::Ptx, Arch{{10, 0}, ArchVariant::Family}}, kernels, text(".version 9.0\n.target sm_100f\n")},
      Image{{ImageKind::Source, Arch{}}, kernels, text("__global__ void add(float*, float*, float*, int) {}\n")},
  };
}

BundleMetadata golden_metadata() {
  // producer is pinned so that a new kiln version does not change the golden bytes.
  return BundleMetadata{{{"producer", "kiln golden"}, {"toolkit", "CUDA 13.0"}, {"project", "golden"}}};
}

struct Golden {
  std::uint32_t version;  // what the writer writes
  const char* variant;
  WriteOptions options;
};
const Golden kGoldens[] = {
    {4, "stored", WriteOptions{.codec = Codec::None}},
    {4, "zstd", WriteOptions{.codec = Codec::Zstd, .level = 19, .dictionaries = true}},
    {4, "lz4", WriteOptions{.codec = Codec::Lz4}},
};

std::filesystem::path golden_path(std::uint32_t version, const char* variant) {
  return kGoldenDir / ("bundle-v" + std::to_string(version) + "-" + variant + ".kiln");
}

Bytes read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void expect_golden_content(const Bundle& bundle) {
  const std::vector<Image> images = golden_images();
  ASSERT_EQ(bundle.images().size(), images.size());
  for (std::size_t i = 0; i < images.size(); ++i) {
    EXPECT_EQ(bundle.images()[i].target, images[i].target) << "image " << i;
    EXPECT_EQ(bundle.images()[i].mangled_kernels(), images[i].kernels) << "image " << i;
    auto bytes = bundle.extract(i);
    ASSERT_TRUE(bytes.ok()) << bytes.error().describe();
    EXPECT_EQ(*bytes, images[i].bytes) << "image " << i;
  }
  EXPECT_EQ(bundle.images()[2].duplicate_of, 1u);
  EXPECT_EQ(bundle.metadata().entries, golden_metadata().entries);
}

TEST(BundleGolden, WriterReproducesTheCurrentVersionsGoldens) {
  for (const Golden& golden : kGoldens) {
    SCOPED_TRACE(golden.variant);
    const std::filesystem::path path = golden_path(golden.version, golden.variant);
    auto written = write_bundle(golden_images(), golden_metadata(), golden.options);
    ASSERT_TRUE(written.ok()) << written.error().describe();
    auto reopened = Bundle::open(*written);
    ASSERT_TRUE(reopened.ok()) << reopened.error().describe();
    EXPECT_EQ(reopened->format_version(), golden.version);
    if (std::getenv("KILN_UPDATE_GOLDEN")) {
      std::ofstream out(path, std::ios::binary);
      out.write(reinterpret_cast<const char*>(written->data()), static_cast<std::streamsize>(written->size()));
      ASSERT_TRUE(out.good()) << "cannot write " << path;
      continue;
    }
    ASSERT_TRUE(std::filesystem::exists(path))
        << path << " is missing: a new format version needs its goldens (run this test with KILN_UPDATE_GOLDEN=1)";
    if (golden.options.codec == Codec::Zstd && ZSTD_VERSION_NUMBER != kGoldenZstdVersion) {
      std::printf("  skipped the byte comparison of %s: libzstd %d, not %d, may compress differently\n",
                  path.filename().c_str(), ZSTD_VERSION_NUMBER, kGoldenZstdVersion);
      continue;
    }
    if (golden.options.codec == Codec::Lz4 && LZ4_VERSION_NUMBER != kGoldenLz4Version) {
      std::printf("  skipped the byte comparison of %s: liblz4 %d, not %d, may compress differently\n",
                  path.filename().c_str(), LZ4_VERSION_NUMBER, kGoldenLz4Version);
      continue;
    }
    EXPECT_TRUE(*written == read_file(path))
        << "the writer no longer reproduces " << path
        << ". If the layout changed on purpose: bump kFormatVersion in kiln/bundle_format.hpp and write the "
           "new version's goldens with KILN_UPDATE_GOLDEN=1, keeping the old ones.";
  }
}

TEST(BundleGolden, ReaderReadsEveryGoldenEverWritten) {
  std::size_t read = 0;
  for (const auto& file : std::filesystem::directory_iterator(kGoldenDir)) {
    const std::string name = file.path().filename().string();
    if (!name.starts_with("bundle-v") || file.path().extension() != ".kiln") continue;
    SCOPED_TRACE(name);
    const Bytes bytes = read_file(file.path());
    auto bundle = Bundle::open(bytes, name);
    ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
    EXPECT_LE(bundle->format_version(), format::kFormatVersion);
    expect_golden_content(*bundle);
    // Carried (version 4) or worked out from the lists (older): the same index.
    const std::vector<std::string_view> kernels = {"_Z3addPfS_S_i", "_Z4wgmmav", "_Z6reducePKfPfi"};
    EXPECT_EQ(bundle->kernel_index().names, kernels);
    const std::vector<std::uint32_t> candidates = {0, 1, 2, 4, 5, 3};  // one set per source: add and reduce share
    EXPECT_EQ(bundle->kernel_index().candidates, candidates);
    EXPECT_EQ(bundle->kernel_index().set_of, (std::vector<std::uint32_t>{0, 1, 0}));
    ++read;
  }
  EXPECT_GE(read, std::size(kGoldens));
}

TEST(BundleGolden, ZstdGoldenUsesADictionaryAndTheStoredOneDoesNot) {
  auto zstd = Bundle::open_file(golden_path(2, "zstd"));
  auto stored = Bundle::open_file(golden_path(2, "stored"));
  ASSERT_TRUE(zstd.ok() && stored.ok());
  EXPECT_EQ(zstd->images()[1].dictionary, 0u);
  for (const ImageInfo& info : stored->images()) EXPECT_EQ(info.codec, Codec::None);
}

TEST(BundleGolden, Version4GoldensCarryTheKernelIndex) {
  for (const Golden& golden : kGoldens) {
    auto bundle = Bundle::open_file(golden_path(golden.version, golden.variant));
    ASSERT_TRUE(bundle.ok()) << bundle.error().describe();
    EXPECT_EQ(bundle->format_version(), format::kFirstVersionWithKernelIndex);
    EXPECT_EQ(format::decode<format::Header>(read_file(golden_path(golden.version, golden.variant)).data()).kernel_count, 3u);
  }
}

TEST(BundleGolden, Lz4GoldenIsVersion3WithLz4CubinsAndNoDictionary) {
  auto lz4 = Bundle::open_file(golden_path(3, "lz4"));
  ASSERT_TRUE(lz4.ok()) << lz4.error().describe();
  EXPECT_EQ(lz4->format_version(), format::kFirstVersionWithLz4);
  EXPECT_EQ(lz4->images()[0].codec, Codec::Lz4);
  EXPECT_EQ(lz4->images()[1].codec, Codec::Lz4);
  for (const ImageInfo& info : lz4->images()) EXPECT_FALSE(info.dictionary.has_value());
}

}  // namespace
}  // namespace kiln
